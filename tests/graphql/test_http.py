"""/graphql as browsers and Apollo's links call it: CORS preflights, automatic
persisted queries over POST and GET, GraphiQL only for a browser, batches refused as
JSON, GraphQL over HTTP's media type, and rate limits per API key and per user."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from schema.persisted import PersistedQueries, RequestError
from service.app import create_app
from service.auth import issue_token
from service.db import Database
from service.domain import enums as domain_enums
from service.ratelimit import RateLimiter
from service.settings import Settings
from service.usecases import commands, organizations
from tests.factories import JWT_SECRET, Org, free_port, start_okr, stop_okr

QUERY = "query Viewer { viewer { role organization { name } } }"
DIGEST = hashlib.sha256(QUERY.encode()).hexdigest()
# What Apollo Client 4's HttpLink sends with every request.
APOLLO_ACCEPT = "application/graphql-response+json,application/json;q=0.9"


def apq(digest: str = DIGEST) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


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


def auth(org: Org, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or org.admin_token}"}


PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


# -- CORS ------------------------------------------------------------------------------


async def test_cors_preflight_from_a_configured_origin(make_client, org: Org) -> None:
    async with make_client(cors_origins="http://localhost:5173, https://app.example.com") as c:
        r = await c.options("/graphql", headers={"Origin": "http://localhost:5173", **PREFLIGHT})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert r.headers["access-control-allow-credentials"] == "true"
        allowed = r.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert "POST" in r.headers["access-control-allow-methods"]

        refused = await c.options(
            "/graphql", headers={"Origin": "http://evil.example", **PREFLIGHT}
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers

        # The request itself: the origin is echoed and the request id can be read.
        r = await c.post(
            "/graphql",
            json={"query": QUERY},
            headers={"Origin": "https://app.example.com", **auth(org)},
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"]["viewer"]["role"] == "ADMIN"
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        evil = {"Origin": "http://evil.example", **auth(org)}
        other = await c.post("/graphql", json={"query": QUERY}, headers=evil)
        assert "access-control-allow-origin" not in other.headers


async def test_no_cors_by_default_and_localhost_in_demo(make_client) -> None:
    async with make_client() as c:
        r = await c.options("/graphql", headers={"Origin": "http://localhost:5173", **PREFLIGHT})
        assert "access-control-allow-origin" not in r.headers
    async with make_client(cors_localhost=True) as c:
        for origin in ("http://localhost:5173", "http://127.0.0.1:3000", "http://localhost"):
            r = await c.options("/graphql", headers={"Origin": origin, **PREFLIGHT})
            assert r.status_code == 200, origin
            assert r.headers["access-control-allow-origin"] == origin
        for origin in ("http://localhost.evil.example", "https://example.com"):
            r = await c.options("/graphql", headers={"Origin": origin, **PREFLIGHT})
            assert r.status_code == 400, origin
            assert "access-control-allow-origin" not in r.headers


def test_a_bad_cors_origin_is_refused() -> None:
    with pytest.raises(ValueError, match="OKR_CORS_ORIGINS"):
        Settings(cors_origins="localhost:5173")


# -- Automatic persisted queries ----------------------------------------------------------


async def test_apollo_persisted_query_round_trip_over_post(make_client, org: Org) -> None:
    headers = {**auth(org), "Accept": APOLLO_ACCEPT}
    async with make_client() as c:
        body = {"operationName": "Viewer", "variables": {}, "extensions": apq()}
        miss = await c.post("/graphql", json=body, headers=headers)
        assert miss.status_code == 200
        assert miss.headers["content-type"].startswith("application/graphql-response+json")
        assert miss.json() == {
            "errors": [
                {
                    "message": "PersistedQueryNotFound",
                    "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
                }
            ]
        }
        # Apollo's link retries with the query beside the hash.
        registered = await c.post("/graphql", json={**body, "query": QUERY}, headers=headers)
        assert registered.status_code == 200
        assert registered.json()["data"]["viewer"]["organization"]["name"] == "Acme Logistics"
        hit = await c.post("/graphql", json=body, headers=headers)
        assert hit.status_code == 200
        assert hit.json() == registered.json()


async def test_apollo_persisted_query_over_get(make_client, org: Org) -> None:
    # Apollo's link with useGETForHashedQueries: query parameters, JSON-encoded.
    params = {
        "operationName": "Viewer",
        "variables": "{}",
        "extensions": json.dumps(apq()),
    }
    headers = {**auth(org), "Accept": APOLLO_ACCEPT}
    async with make_client() as c:
        miss = await c.get("/graphql", params=params, headers=headers)
        assert miss.status_code == 200
        assert miss.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
        assert "<html" not in miss.text.lower()
        registered = await c.get("/graphql", params={**params, "query": QUERY}, headers=headers)
        assert registered.json()["data"]["viewer"]["role"] == "ADMIN"
        hit = await c.get("/graphql", params=params, headers=headers)
        assert hit.json()["data"]["viewer"]["role"] == "ADMIN"
        # A hash-only GET still authenticates its caller.
        anonymous = await c.get("/graphql", params=params, headers={"Accept": APOLLO_ACCEPT})
        assert anonymous.status_code == 401


async def test_a_hash_that_does_not_match_is_refused_and_not_stored(make_client, org: Org) -> None:
    other = hashlib.sha256(b"{ viewer { role } }").hexdigest()
    async with make_client() as c:
        r = await c.post(
            "/graphql", json={"query": QUERY, "extensions": apq(other)}, headers=auth(org)
        )
        assert r.status_code == 400
        error = r.json()["errors"][0]
        assert "does not match" in error["message"]
        assert error["extensions"]["code"] == "BAD_REQUEST"
        r = await c.post("/graphql", json={"extensions": apq(other)}, headers=auth(org))
        assert r.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
        for bad in ({"version": 2, "sha256Hash": DIGEST}, {"version": 1, "sha256Hash": "ab"}):
            r = await c.post(
                "/graphql",
                json={"query": QUERY, "extensions": {"persistedQuery": bad}},
                headers=auth(org),
            )
            assert r.status_code == 400
            assert r.headers["content-type"].startswith("application/json")
            assert r.json()["errors"][0]["extensions"]["code"] in (
                "BAD_REQUEST",
                "PERSISTED_QUERY_NOT_SUPPORTED",
            )


async def test_the_store_is_kept_per_organization(make_client, org: Org, db: Database) -> None:
    """Issue 19, item 6: organization B cannot learn whether anyone in A sent a text."""
    created, admin = await db.transaction(
        lambda s: organizations.create_organization(s, "Other Co", "root@other.example", "Olga")
    )
    other_token = issue_token(JWT_SECRET, admin.id, created.id)
    async with make_client() as c:
        await c.post("/graphql", json={"query": QUERY, "extensions": apq()}, headers=auth(org))
        hit = await c.post("/graphql", json={"extensions": apq()}, headers=auth(org))
        assert hit.json()["data"]["viewer"]["organization"]["name"] == "Acme Logistics"
        probe = await c.post("/graphql", json={"extensions": apq()}, headers=auth(org, other_token))
        assert probe.status_code == 200
        assert probe.json() == {
            "errors": [
                {
                    "message": "PersistedQueryNotFound",
                    "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
                }
            ]
        }
        # B registers the same text for itself, and runs it as itself.
        await c.post(
            "/graphql", json={"query": QUERY, "extensions": apq()}, headers=auth(org, other_token)
        )
        hit = await c.post("/graphql", json={"extensions": apq()}, headers=auth(org, other_token))
        assert hit.json()["data"]["viewer"]["organization"]["name"] == "Other Co"


def test_the_store_is_a_bounded_lru() -> None:
    store = PersistedQueries(max_entries=2, max_query_bytes=100)
    texts = ["{ a }", "{ b }", "{ c }"]
    digests = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    store.resolve(texts[0], apq(digests[0]), 1)
    store.resolve(texts[1], apq(digests[1]), 1)
    assert store.resolve(None, apq(digests[0]), 1) == texts[0]  # a is now the most recent
    store.resolve(texts[2], apq(digests[2]), 1)  # b goes
    assert len(store) == 2
    with pytest.raises(RequestError) as missing:
        store.resolve(None, apq(digests[1]), 1)
    assert missing.value.code == "PERSISTED_QUERY_NOT_FOUND"
    assert store.resolve(None, apq(digests[2]), 1) == texts[2]
    with pytest.raises(RequestError):  # another organization's
        store.resolve(None, apq(digests[2]), 2)
    big = "{ " + "a " * 100 + "}"
    assert store.resolve(big, apq(hashlib.sha256(big.encode()).hexdigest()), 1) == big
    assert len(store) == 2  # too large to keep, but it ran
    by_bytes = PersistedQueries(max_entries=100, max_query_bytes=100, max_total_bytes=12)
    for text, digest in zip(texts, digests, strict=True):
        by_bytes.resolve(text, apq(digest), 1)
    assert len(by_bytes) == 2 and by_bytes.bytes == 10  # five bytes each


# -- GraphiQL, JSON errors, batches, GraphQL over HTTP ---------------------------------------


async def test_graphiql_only_for_a_browser(make_client, org: Org) -> None:
    async with make_client() as c:
        page = await c.get(
            "/graphql", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        )
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        for accept in ("*/*", "application/json", APOLLO_ACCEPT):
            r = await c.get("/graphql", headers={"Accept": accept})
            assert r.status_code == 400, accept
            assert r.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    async with make_client(graphiql=False) as c:
        r = await c.get("/graphql", headers={"Accept": "text/html"})
        assert r.status_code == 404
        assert r.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        r = await c.put("/graphql", json={"query": QUERY})
        assert r.status_code == 405


async def test_request_errors_are_json(make_client, org: Org) -> None:
    async with make_client() as c:
        r = await c.post(
            "/graphql",
            content=b"{not json",
            headers={**auth(org), "Content-Type": "application/json"},
        )
        assert r.status_code == 400
        assert r.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
        r = await c.post("/graphql", json={"query": QUERY, "variables": [1]}, headers=auth(org))
        assert r.status_code == 400
        assert "variables" in r.json()["errors"][0]["message"]


async def test_batches_get_one_error_per_operation(make_client, org: Org) -> None:
    """Issue 19, item 7: what Apollo's BatchHttpLink sends, answered with an array as
    long as the batch, each operation its own BATCHING_NOT_SUPPORTED, nothing run."""
    batch = [
        {"operationName": "Viewer", "query": QUERY, "variables": {}},
        {"operationName": "Again", "query": QUERY.replace("Viewer", "Again"), "variables": {}},
    ]
    async with make_client() as c:
        r = await c.post("/graphql", json=batch, headers=auth(org))
        assert r.status_code == 200  # a batching link reads each operation's errors
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert isinstance(body, list) and len(body) == 2
        for answer in body:
            assert "data" not in answer
            (error,) = answer["errors"]
            assert error["extensions"]["code"] == "BATCHING_NOT_SUPPORTED"
            assert "one operation per request" in error["message"]
        apollo_headers = {**auth(org), "Accept": APOLLO_ACCEPT}
        apollo = await c.post("/graphql", json=batch, headers=apollo_headers)
        assert apollo.status_code == 400
        assert apollo.headers["content-type"].startswith("application/graphql-response+json")
        assert [a["errors"][0]["extensions"]["code"] for a in apollo.json()] == [
            "BATCHING_NOT_SUPPORTED"
        ] * 2
        empty = await c.post("/graphql", json=[], headers=auth(org))
        assert empty.status_code == 400
        assert empty.json()["errors"][0]["extensions"]["code"] == "BATCHING_NOT_SUPPORTED"


async def test_graphql_response_json_status_codes(make_client, org: Org) -> None:
    headers = {**auth(org), "Accept": "application/graphql-response+json"}
    async with make_client() as c:
        ok = await c.post("/graphql", json={"query": QUERY}, headers=headers)
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("application/graphql-response+json")
        parse = await c.post("/graphql", json={"query": "{ viewer {"}, headers=headers)
        assert parse.status_code == 400
        assert parse.headers["content-type"].startswith("application/graphql-response+json")
        invalid = await c.post("/graphql", json={"query": "{ nope }"}, headers=headers)
        assert invalid.status_code == 400
        # Plain JSON keeps the legacy 200 for the same mistake.
        legacy = await c.post("/graphql", json={"query": "{ nope }"}, headers=auth(org))
        assert legacy.status_code == 200
        assert legacy.headers["content-type"].startswith("application/json")


# -- Rate limits -----------------------------------------------------------------------


async def test_rate_limit_per_user_and_per_api_key(make_client, org: Org, db: Database) -> None:
    _row, key = await db.transaction(lambda s: organizations.create_api_key(s, org.id, "svc"))
    member = await db.transaction(
        lambda s: organizations.create_user(
            s,
            org.admin,
            commands.CreateUser("Max Member", "max@acme.example", domain_enums.Role.MEMBER),
        )
    )
    async with make_client(rate_limit_per_minute=2) as c:
        for _ in range(2):
            r = await c.post("/graphql", json={"query": QUERY}, headers=auth(org))
            assert r.status_code == 200, r.text
        limited = await c.post("/graphql", json={"query": QUERY}, headers=auth(org))
        assert limited.status_code == 429
        assert limited.headers["content-type"].startswith("application/json")
        assert int(limited.headers["retry-after"]) >= 1
        error = limited.json()["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        # Another token of the same user shares the user's bucket.
        again = issue_token(JWT_SECRET, org.admin_id, org.id)
        r = await c.get("/graphql", params={"query": QUERY}, headers=auth(org, again))
        assert r.status_code == 429
        # Other callers have their own buckets.
        r = await c.post("/graphql", json={"query": QUERY}, headers=auth(org, org.token(member.id)))
        assert r.status_code == 200
        for expected in (200, 200, 429):
            r = await c.post("/graphql", json={"query": QUERY}, headers=auth(org, key))
            assert r.status_code == expected
    async with make_client() as c:  # off by default
        for _ in range(5):
            r = await c.post("/graphql", json={"query": QUERY}, headers=auth(org))
            assert r.status_code == 200


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # one a second, 60 at once
    assert all(limiter.take("a") == 0 for _ in range(60))
    wait = limiter.take("a")
    assert wait == pytest.approx(1.0)
    assert limiter.retry_after(wait) == "1"
    now[0] += 0.5
    assert limiter.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take("a") == 0
    assert limiter.take("b") == 0
    bounded = RateLimiter(1, max_callers=2, clock=lambda: now[0])
    for caller in ("x", "y", "z"):
        bounded.take(caller)
    assert len(bounded._buckets) == 2


async def test_okr_serve_demo_allows_localhost_origins(
    bin_okr: str, database_url: str, tmp_path: Path
) -> None:
    """The real command: `okr serve --demo` answers a browser's preflight from a dev
    server on localhost, and no other origin."""
    port = free_port()
    env = {
        **os.environ,
        "OKR_DATABASE_URL": database_url,
        "OKR_JWT_SECRET": JWT_SECRET,
        "OKR_DATA_DIR": str(tmp_path),
    }
    with (tmp_path / "serve.log").open("wb") as log:
        proc = await start_okr(bin_okr, port, env, log, "--demo")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                ok = await http.options(
                    "/graphql", headers={"Origin": "http://localhost:5173", **PREFLIGHT}
                )
                assert ok.status_code == 200, (tmp_path / "serve.log").read_text()
                assert ok.headers["access-control-allow-origin"] == "http://localhost:5173"
                refused = await http.options(
                    "/graphql", headers={"Origin": "https://elsewhere.example", **PREFLIGHT}
                )
                assert "access-control-allow-origin" not in refused.headers
        finally:
            await stop_okr(proc)
