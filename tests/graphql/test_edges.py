"""Issue 19, items 5, 6 and 7 (the edges a client meets first): one rate limit for
HTTP, WebSocket operations and exports; the persisted-query store and the metrics'
operation labels out of other tenants' reach; tokens and documents that used to crash
or run the wrong thing; a cut-off mutation that says what it wrote; and answers in the
media type the client asked for.

Driven as the findings were made: real `okr serve` processes and a raw WebSocket client
on both subprotocols, and HTTP through the app's ASGI interface."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from service.app import create_app
from service.db import Database
from service.domain import enums as domain_enums
from service.observability import metrics
from service.settings import Settings
from service.usecases import commands, organizations
from tests import factories as h
from tests.factories import JWT_SECRET, Org, free_port
from tests.sockets import LEGACY, TRANSPORT, closed, connect, first_error, receive, start

VIEWER = "{ viewer { role } }"
APOLLO_ACCEPT = "application/graphql-response+json,application/json;q=0.9"


@pytest.fixture
def make_client(tmp_path: Path, database_url: str, db: Database) -> Callable[..., Any]:
    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(jwt_secret=JWT_SECRET, data_dir=tmp_path, **overrides)
        app = create_app(settings, database_url)
        app.state.db = db
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://okr.test") as c:
            yield c

    return make


def auth(token: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **more}


# --- item 5: one allowance for HTTP, WebSocket operations and exports ------------------------


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_item5_websocket_operations_take_from_the_http_allowance(
    replicas, org: Org, protocol: str
):
    server = await replicas(OKR_RATE_LIMIT_PER_MINUTE="6")
    ws = await connect(server, org.admin_token, protocol)
    # An operation that is answered at once on both subprotocols (legacy graphql-ws
    # runs subscriptions only): a subscription the schema refuses when it runs.
    document = "subscription { nope }"
    codes = []
    for n in range(8):
        await start(ws, protocol, str(n), document)
        answer = await receive(ws, op=str(n))
        assert answer["type"] == "error", answer
        codes.append(first_error(answer)["extensions"]["code"])
        if codes[-1] == "RATE_LIMITED":
            assert first_error(answer)["extensions"]["retryAfter"] >= 1
    assert codes == ["GRAPHQL_VALIDATION_FAILED"] * 6 + ["RATE_LIMITED"] * 2, codes
    # The socket stays open: a refused operation is not a dropped connection...
    await start(ws, protocol, "late", document)
    assert first_error(await receive(ws, op="late"))["extensions"]["code"] == "RATE_LIMITED"
    # ...and HTTP and exports share the same, spent, allowance.
    async with httpx.AsyncClient() as http:
        r = await http.post(server.http, json={"query": VIEWER}, headers=auth(org.admin_token))
        assert r.status_code == 429, r.text
        export = await http.get(
            f"http://127.0.0.1:{server.port}/export/cycles/Q3ljbGU6MQ.csv",
            headers=auth(org.admin_token),
        )
        assert export.status_code == 429
        assert export.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    await ws.close()


async def test_item5_exports_are_rate_limited(make_client, org: Org):
    cycle = await h.active_cycle(org)
    async with make_client(rate_limit_per_minute=3) as c:
        for _ in range(3):
            r = await c.get(f"/export/cycles/{cycle}.csv", headers=auth(org.admin_token))
            assert r.status_code == 200, r.text
        r = await c.get(f"/export/cycles/{cycle}.csv", headers=auth(org.admin_token))
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        r = await c.post("/graphql", json={"query": VIEWER}, headers=auth(org.admin_token))
        assert r.status_code == 429


# --- item 6 -----------------------------------------------------------------------------------


async def test_item6_one_caller_cannot_use_up_the_operation_labels(
    make_client, org: Org, db: Database, monkeypatch
):
    monkeypatch.setattr(metrics, "operation_names", metrics.OperationNames())
    created, admin = await db.transaction(
        lambda s: organizations.create_organization(s, "Mallory Co", "m@mallory.example", "Mal")
    )
    mallory = Org(org.client, db, created.id, admin.id)
    async with make_client() as c:
        for i in range(metrics.MAX_NAMES_PER_ORGANIZATION + 20):
            r = await c.post(
                "/graphql",
                json={"query": f"query Junk{i} {{ viewer {{ role }} }}"},
                headers=auth(mallory.admin_token),
            )
            assert r.status_code == 200
        # Names of documents that do not validate, or of unauthenticated callers, never.
        await c.post(
            "/graphql", json={"query": "query Bogus { nope }"}, headers=auth(org.admin_token)
        )
        await c.post("/graphql", json={"query": "query Sneaky { viewer { role } }"})
        r = await c.post(
            "/graphql",
            json={"query": "query Dashboard { viewer { role } }"},
            headers=auth(org.admin_token),
        )
        assert r.status_code == 200
        scraped = (await c.get("/metrics")).text
    names = {
        line.split('operation_name="')[1].split('"')[0]
        for line in scraped.splitlines()
        if line.startswith("okr_graphql_request_duration_seconds_count")
    }
    assert "Dashboard" in names
    junk = {n for n in names if n.startswith("Junk")}
    assert len(junk) == metrics.MAX_NAMES_PER_ORGANIZATION
    assert "Bogus" not in names and "Sneaky" not in names


async def test_item6_a_token_with_a_lone_surrogate_closes_the_socket_with_a_reason(
    bin_okr: str, database_url: str, tmp_path: Path
):
    port = free_port()
    env = {
        **os.environ,
        "OKR_DATABASE_URL": database_url,
        "OKR_JWT_SECRET": JWT_SECRET,
        "OKR_DATA_DIR": str(tmp_path),
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = await h.start_okr(bin_okr, port, env, out)
        try:
            for protocol in (TRANSPORT, LEGACY):
                for token in ("\ud800", "abc\udfffdef", "é-token"):
                    init = json.dumps(
                        {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
                    )
                    async with websockets.connect(
                        f"ws://127.0.0.1:{port}/graphql", subprotocols=[protocol]
                    ) as ws:
                        await ws.send(init)
                        code, reason, _took = await closed(ws, 10)
                    assert code == 4403, (protocol, token)
                    assert reason == "invalid token: a token is printable ASCII"
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        finally:
            await h.stop_okr(proc)
    assert "Traceback" not in log.read_text(errors="replace")


async def test_item6_identity_provider_tokens_with_a_non_string_org_are_401(
    org: Org, db: Database, database_url: str, tmp_path: Path
):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "idp.pem").write_bytes(pem)
    settings = Settings(
        jwt_secret=JWT_SECRET, data_dir=tmp_path, jwt_public_key=str(tmp_path / "idp.pem")
    )
    app = create_app(settings, database_url)
    app.state.db = db
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://okr.test"
    ) as c:
        for org_claim in (12345, ["acme-logistics"], {"slug": "acme-logistics"}, True, 1.5):
            token = jwt.encode(
                {"sub": "admin@acme.example", "org": org_claim, "exp": int(time.time()) + 60},
                key,
                algorithm="ES256",
            )
            r = await c.post("/graphql", json={"query": VIEWER}, headers=auth(token))
            assert r.status_code == 401, (org_claim, r.text)
            assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        good = jwt.encode(
            {"sub": "admin@acme.example", "org": "acme-logistics", "exp": int(time.time()) + 60},
            key,
            algorithm="ES256",
        )
        r = await c.post("/graphql", json={"query": VIEWER}, headers=auth(good))
        assert r.json()["data"]["viewer"]["role"] == "ADMIN"


async def test_item6_several_operations_need_an_operation_name(client, org: Org):
    document = (
        'query A { viewer { role } } mutation B { createTeam(input: {name: "T"}) { team { id } } }'
    )
    r = await client.post("/graphql", json={"query": document}, headers=auth(org.admin_token))
    error = r.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert "operationName" in error["message"]
    assert r.json().get("data") is None
    assert (await org.call("{ teams { totalCount } }"))["teams"]["totalCount"] == 0
    named = await client.post(
        "/graphql",
        json={"query": document, "operationName": "A"},
        headers=auth(org.admin_token),
    )
    assert named.json()["data"] == {"viewer": {"role": "ADMIN"}}


async def test_item6_duplicate_keys_and_utf16_bodies_are_refused(client, org: Org):
    mutation = 'mutation { createTeam(input: {name: "Twice"}) { team { id } } }'
    body = '{"query": "{ viewer { role } }", "query": ' + json.dumps(mutation) + "}"
    headers = auth(org.admin_token, **{"Content-Type": "application/json"})
    r = await client.post("/graphql", content=body.encode(), headers=headers)
    assert r.status_code == 400
    error = r.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    assert "'query' more than once" in error["message"]
    for encoding in ("utf-16", "utf-16-le", "utf-32"):
        utf16 = json.dumps({"query": mutation}).encode(encoding)
        r = await client.post("/graphql", content=utf16, headers=headers)
        assert r.status_code == 400, encoding
        assert r.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    assert (await org.call("{ teams { totalCount } }"))["teams"]["totalCount"] == 0
    # Plain UTF-8 JSON, non-ASCII included, still runs.
    ok = await client.post(
        "/graphql",
        content=json.dumps(
            {"query": mutation.replace("Twice", "Équipe")}, ensure_ascii=False
        ).encode(),
        headers=headers,
    )
    assert ok.json()["data"]["createTeam"]["team"]["id"]


def _deep(levels: int) -> str:
    """viewer, user, teams, then `parent` down to `levels` fields with `id` last."""
    inner = "id"
    for _ in range(levels - 4):
        inner = f"parent {{ {inner} }}"
    return f"{{ viewer {{ user {{ teams {{ {inner} }} }} }} }}"


async def test_item6_the_depth_limit_counts_every_level(client, org: Org):
    at_limit = await client.post(
        "/graphql", json={"query": _deep(12)}, headers=auth(org.admin_token)
    )
    assert "errors" not in at_limit.json(), at_limit.text
    for levels in (13, 14):
        over = await client.post(
            "/graphql", json={"query": _deep(levels)}, headers=auth(org.admin_token)
        )
        error = over.json()["errors"][0]
        assert error["extensions"]["code"] == "QUERY_TOO_DEEP", over.text
        assert "exceeds maximum operation depth of 12" in error["message"]
    # Fragments count too, and subscriptions are bounded alike.
    spread = (
        "query Q { viewer { user { teams { ...T } } } } fragment T on Team "
        "{ " + _deep(13).split("teams { ")[1].rsplit(" } } } }", 1)[0] + " }"
    )
    over = await client.post("/graphql", json={"query": spread}, headers=auth(org.admin_token))
    assert over.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_DEEP", over.text


async def test_item6_a_check_in_cut_off_by_the_deadline_says_what_it_wrote(
    make_client, org: Org, db: Database
):
    cycle = await h.active_cycle(org)
    objective = await h.objective(org, cycle, "O")
    kr = await h.key_result(org, objective)
    mutation = (
        "mutation($i: CheckInInput!) { checkIn(input: $i) { checkIn { id value } "
        "keyResult { id progress objective { id title } } userErrors { code } } }"
    )
    variables = {"i": {"keyResultId": kr, "value": 40, "idempotencyKey": "run-1"}}
    async with make_client(execution_deadline_seconds=0.000001) as c:
        r = await c.post(
            "/graphql",
            json={"query": mutation, "variables": variables},
            headers=auth(org.admin_token),
        )
    body = r.json()
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "DEADLINE_EXCEEDED"
    assert "applied" in error["message"]
    written = error["extensions"]["written"]["checkIn"]
    async with db.connect() as conn:
        rows = (await conn.execute(text("SELECT id FROM check_in"))).scalars().all()
    assert len(rows) == 1
    from schema.ids import encode

    assert encode("CheckIn", rows[0]) in written
    assert kr in written
    # The retry the README advises: the same idempotencyKey writes nothing twice.
    again = await h.check_in(org, kr, 40, idempotencyKey="run-1")
    assert again["checkIn"]["id"] == encode("CheckIn", rows[0])
    async with db.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM check_in"))).scalar_one() == 1


# --- item 7: the media type asked for ---------------------------------------------------------


async def test_item7_401_429_and_503_answer_in_the_media_type_asked_for(
    make_client, org: Org, tmp_path: Path
):
    member = await org.db.transaction(
        lambda s: organizations.create_user(
            s,
            org.admin,
            commands.CreateUser("Max", "max@acme.example", domain_enums.Role.MEMBER),
        )
    )
    apollo = {"Accept": APOLLO_ACCEPT}
    async with make_client(rate_limit_per_minute=1) as c:
        unauthenticated = await c.post(
            "/graphql", json={"query": VIEWER}, headers=auth("not-a-token", **apollo)
        )
        assert unauthenticated.status_code == 401
        assert unauthenticated.headers["content-type"].startswith(
            "application/graphql-response+json"
        )
        assert unauthenticated.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        token = org.token(member.id)
        assert (
            await c.post("/graphql", json={"query": VIEWER}, headers=auth(token, **apollo))
        ).status_code == 200
        limited = await c.post("/graphql", json={"query": VIEWER}, headers=auth(token, **apollo))
        assert limited.status_code == 429
        assert limited.headers["content-type"].startswith("application/graphql-response+json")
        assert limited.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        # Plain JSON clients keep application/json.
        plain = await c.post("/graphql", json={"query": VIEWER}, headers=auth(token))
        assert plain.status_code == 429
        assert plain.headers["content-type"].startswith("application/json")
    # The database out: 503.
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    settings = Settings(jwt_secret=JWT_SECRET, data_dir=tmp_path, db_connect_timeout_seconds=2)
    app = create_app(settings, nowhere)
    app.state.db = Database(nowhere, pool_size=1, connect_timeout=2)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://okr.test"
        ) as c:
            down = await c.post(
                "/graphql", json={"query": VIEWER}, headers=auth(org.admin_token, **apollo)
            )
            assert down.status_code == 503
            assert down.headers["content-type"].startswith("application/graphql-response+json")
            assert down.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
            plain = await c.post("/graphql", json={"query": VIEWER}, headers=auth(org.admin_token))
            assert plain.status_code == 503
            assert plain.headers["content-type"].startswith("application/json")
    finally:
        await app.state.db.dispose()
