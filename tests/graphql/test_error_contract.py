"""Every error has extensions.code, and a client's mistake is logged once at INFO,
without a traceback; a server's error stays at ERROR with its stack."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.factories import Org


async def codes(org: Org, query: str, variables: dict | None = None, **headers: str) -> list:
    r = await org.client.post(
        "/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {org.admin_token}", **headers},
    )
    body = r.json()
    assert body["errors"], body
    return [(e.get("extensions") or {}).get("code", e["message"]) for e in body["errors"]]


async def test_each_kind_of_mistake_has_its_code(org: Org) -> None:
    assert await codes(org, "{ viewer {") == ["GRAPHQL_PARSE_FAILED"]
    assert await codes(org, "{ nope }") == ["GRAPHQL_VALIDATION_FAILED"]
    nested = 'query Deep { node(id: "x") ' + "{ ... on Objective { parent " * 13 + "{ id }"
    nested += " } }" * 13 + " }"
    assert "QUERY_TOO_DEEP" in await codes(org, nested)
    aliases = "{ " + " ".join(f"a{i}: viewer {{ role }}" for i in range(31)) + " }"
    assert await codes(org, aliases) == ["TOO_MANY_ALIASES"]
    tokens = "{ viewer { " + "role " * 2100 + "} }"
    assert await codes(org, tokens) == ["TOO_MANY_TOKENS"]
    page = "children(first: 100) { edges { node { id %s } } }"
    costly = "{ objectives(first: 100) { edges { node { " + page % (page % "") + " } } } }"
    assert await codes(org, costly) == ["QUERY_TOO_COSTLY"]
    assert await codes(
        org, "query($n: Int) { teams(first: $n) { edges { node { id } } } }", {"n": "x"}
    ) == ["BAD_USER_INPUT"]
    assert await codes(org, "{ teams(first: 1000) { edges { node { id } } } }") == [
        "BAD_USER_INPUT"
    ]


async def test_no_credentials_is_unauthenticated(client: httpx.AsyncClient) -> None:
    r = await client.post("/graphql", json={"query": "{ viewer { role } }"})
    assert r.status_code == 401
    assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_clients_mistake_is_logged_at_info_without_traceback(
    org: Org, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await codes(org, "{ nope }")
    await codes(org, "{ viewer {")
    mine = [r for r in caplog.records if "nope" in r.getMessage() or "Syntax" in r.getMessage()]
    assert len(mine) == 2, [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in mine)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
