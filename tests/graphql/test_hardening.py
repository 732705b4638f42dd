"""Limits, identity-provider tokens, and bad input of every kind: a clear error, never
an internal one, and nothing written."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.app import create_app
from service.db import Database
from service.settings import Settings
from tests import factories as h
from tests.factories import JWT_SECRET, Org


async def events_total(org: Org) -> int:
    return (await org.call("{ events { totalCount } }"))["events"]["totalCount"]


async def test_query_cost_is_reported_and_limited(org: Org, client):
    cycle = await h.active_cycle(org)
    await h.objective(org, cycle, "O")
    r = await client.post(
        "/graphql",
        headers={"Authorization": f"Bearer {org.admin_token}"},
        json={
            "query": "{ objectives(first: 10) { edges { node { title "
            "owner { name } keyResults { title } } } } }"
        },
    )
    cost = r.json()["extensions"]["cost"]
    assert cost == {"requestedQueryCost": 1 + 10 * (1 + 1 + 10), "maximumAvailable": 25000}
    costly = (
        "{ objectives(first: 100) { edges { node { children(first: 100) { edges { node { "
        "keyResults { checkIns(first: 100) { edges { node { id } } } } } } } } } } }"
    )
    r = await client.post(
        "/graphql", headers={"Authorization": f"Bearer {org.admin_token}"}, json={"query": costly}
    )
    body = r.json()
    assert body.get("data") is None
    assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert int(r.headers["x-sql-statements"]) == 1  # authentication only: nothing ran
    r = await client.post(
        "/graphql",
        headers={"Authorization": f"Bearer {org.admin_token}"},
        json={
            "query": "query($n: Int) { objectives(first: $n) { totalCount } }",
            "variables": {"n": 101},
        },
    )
    assert "first must be between 0 and 100" in r.json()["errors"][0]["message"]
    assert int(r.headers["x-sql-statements"]) == 1
    tokens = "{ " + "viewer { role } " * 700 + "}"
    r = await client.post(
        "/graphql", headers={"Authorization": f"Bearer {org.admin_token}"}, json={"query": tokens}
    )
    assert "token" in r.json()["errors"][0]["message"].lower()


async def test_body_size_and_field_suggestions(org: Org, client):
    big = {"query": "{ viewer { role } }", "variables": {"x": "y" * 1_200_000}}
    r = await client.post(
        "/graphql", headers={"Authorization": f"Bearer {org.admin_token}"}, json=big
    )
    assert r.status_code == 413
    body = await org.call("{ viewer { rol } }", expect_errors=True)
    assert "Did you mean" not in body["errors"][0]["message"]


async def test_production_switches_off_graphiql_and_introspection(
    database_url, db, org: Org, tmp_path
):
    settings = Settings(
        env="production", database_url=database_url, jwt_secret=JWT_SECRET, data_dir=tmp_path
    )
    app = create_app(settings, database_url)
    app.state.db = db
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://okr.test"
    ) as c:
        assert (await c.get("/graphql", headers={"Accept": "text/html"})).status_code == 404
        r = await c.post(
            "/graphql",
            headers={"Authorization": f"Bearer {org.admin_token}"},
            json={"query": "{ __schema { types { name } } }"},
        )
        assert r.json()["errors"]
        assert "__schema" not in json.dumps(r.json().get("data") or {})


# --- identity-provider tokens ---------------------------------------------------------


def _rsa() -> tuple[rsa.RSAPrivateKey, dict]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return key, {**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}


async def _idp_client(settings: Settings, database_url: str, db: Database):
    app = create_app(settings, database_url)
    app.state.db = db
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://okr.test")


async def _viewer(c: httpx.AsyncClient, token: str) -> httpx.Response:
    return await c.post(
        "/graphql",
        headers={"Authorization": f"Bearer {token}"},
        json={"query": "{ viewer { role user { email } } }"},
    )


@pytest.fixture
def jwks_server(tmp_path: Path):
    """A JWKS document served over HTTP, as an identity provider does."""
    import http.server
    import threading

    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_rs256_tokens_through_jwks(
    org: Org, db, database_url, tmp_path: Path, jwks_server: str
):
    key, jwk = _rsa()
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    settings = Settings(
        jwt_secret=JWT_SECRET,
        data_dir=tmp_path,
        jwks_url=f"{jwks_server}/jwks.json",
        jwt_issuer="https://idp.acme.example",
        jwt_audience="okr",
        jwt_default_org="acme-logistics",
    )
    now = int(time.time())
    claims = {
        "sub": "idp|42",
        "email": "Admin@Acme.example",
        "iss": "https://idp.acme.example",
        "aud": "okr",
        "exp": now + 600,
        "iat": now,
    }

    def sign(**changes) -> str:
        return jwt.encode({**claims, **changes}, key, algorithm="RS256", headers={"kid": "k1"})

    async with await _idp_client(settings, database_url, db) as c:
        r = await _viewer(c, sign())
        assert r.json()["data"]["viewer"] == {
            "role": "ADMIN",
            "user": {"email": "admin@acme.example"},
        }
        for bad in (
            sign(iss="https://evil.example"),
            sign(aud="other"),
            sign(exp=now - 10),
            sign(email="nobody@acme.example"),
            jwt.encode(
                claims, rsa.generate_private_key(65537, 2048), "RS256", headers={"kid": "k1"}
            ),
        ):
            r = await _viewer(c, bad)
            assert r.status_code == 401, r.text
        # Our own HS256 tokens keep working beside them.
        assert (await _viewer(c, org.admin_token)).status_code == 200
    settings.jwt_create_users = True
    async with await _idp_client(settings, database_url, db) as c:
        r = await _viewer(c, sign(email="newcomer@acme.example", name="New Comer"))
        assert r.json()["data"]["viewer"] == {
            "role": "MEMBER",
            "user": {"email": "newcomer@acme.example"},
        }


async def test_es256_tokens_with_a_public_key(org: Org, db, database_url, tmp_path: Path):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "idp.pem").write_bytes(pem)
    settings = Settings(
        jwt_secret=JWT_SECRET, data_dir=tmp_path, jwt_public_key=str(tmp_path / "idp.pem")
    )
    token = jwt.encode(
        {"sub": "admin@acme.example", "org": "acme-logistics", "exp": int(time.time()) + 60},
        key,
        algorithm="ES256",
    )
    async with await _idp_client(settings, database_url, db) as c:
        assert (await _viewer(c, token)).json()["data"]["viewer"]["role"] == "ADMIN"
        other = jwt.encode(
            {"sub": "admin@acme.example", "org": "no-such-org", "exp": int(time.time()) + 60},
            key,
            algorithm="ES256",
        )
        assert (await _viewer(c, other)).status_code == 401


# --- bad input ---------------------------------------------------------------------------

BAD = [
    # (mutation, input maker, what must be said)
    ("checkIn", lambda ids: {"keyResultId": ids["kr"], "value": float("nan")}, "Float"),
    ("checkIn", lambda ids: {"keyResultId": ids["kr"], "value": float("inf")}, "Float"),
    ("checkIn", lambda ids: {"keyResultId": ids["kr"], "value": -float("inf")}, "Float"),
    ("checkIn", lambda ids: {"keyResultId": ids["kr"], "value": "12"}, "Float"),
    ("checkIn", lambda ids: {"keyResultId": ids["kr"], "value": 1e308 * 10}, "Float"),
    (
        "checkIn",
        lambda ids: {"keyResultId": ids["kr"], "value": 1, "confidence": -0.1},
        "confidence",
    ),
    ("checkIn", lambda ids: {"keyResultId": ids["kr"], "value": 1, "note": "x" * 100_000}, "note"),
    (
        "checkIn",
        lambda ids: {"keyResultId": ids["kr"], "value": 1, "idempotencyKey": "k" * 500},
        "idempotencyKey",
    ),
    ("checkIn", lambda ids: {"keyResultId": "!!!", "value": 1}, "keyResultId"),
    ("checkIn", lambda ids: {"keyResultId": ids["objective"], "value": 1}, "keyResultId"),
    ("checkIn", lambda ids: {"keyResultId": 12, "value": 1}, "keyResultId"),
    ("createObjective", lambda ids: {"cycleId": ids["cycle"], "title": "t" * 100_000}, "title"),
    (
        "createObjective",
        lambda ids: {"cycleId": ids["cycle"], "title": "t", "description": "d" * 20_000},
        "description",
    ),
    (
        "createObjective",
        lambda ids: {"cycleId": ids["cycle"], "title": "t", "weight": -0.5},
        "weight",
    ),
    (
        "createObjective",
        lambda ids: {"cycleId": ids["cycle"], "title": "t", "visibility": "SECRET"},
        "Visibility",
    ),
    ("createObjective", lambda ids: {"cycleId": ids["cycle"], "title": "\x00"}, "title"),
    (
        "createKeyResult",
        lambda ids: {"objectiveId": ids["objective"], "title": "t", "type": "SIDEWAYS"},
        "KeyResultType",
    ),
    (
        "createKeyResult",
        lambda ids: {
            "objectiveId": ids["objective"],
            "title": "t",
            "type": "INCREASE",
            "startValue": 0,
            "targetValue": 0,
        },
        "targetValue",
    ),
    (
        "createKeyResult",
        lambda ids: {
            "objectiveId": ids["objective"],
            "title": "t",
            "type": "MILESTONE",
            "targetValue": 5,
        },
        "MILESTONE",
    ),
    (
        "createKeyResult",
        lambda ids: {
            "objectiveId": ids["objective"],
            "title": "t",
            "type": "INCREASE",
            "startValue": 0,
            "targetValue": 1,
            "unit": "u" * 100,
        },
        "unit",
    ),
    (
        "createCycle",
        lambda ids: {"name": "Q", "startsOn": "2026-02-30", "endsOn": "2026-03-01"},
        "Date",
    ),
    (
        "createCycle",
        lambda ids: {"name": "Q", "startsOn": "2026-03-01", "endsOn": "2026-02-01"},
        "endsOn",
    ),
    ("createUser", lambda ids: {"name": "x", "email": "x@y.z", "role": "SERVICE"}, "role"),
    ("createUser", lambda ids: {"name": "x", "email": "x@y.z", "role": "OWNER"}, "Role"),
    ("updateObjective", lambda ids: {"objectiveId": ids["objective"], "title": None}, "title"),
    ("updateObjective", lambda ids: {"objectiveId": ids["objective"], "weight": None}, "weight"),
    (
        "updateObjective",
        lambda ids: {"objectiveId": ids["objective"], "expectedVersion": 2**40},
        "Int",
    ),
    ("scoreKeyResult", lambda ids: {"keyResultId": ids["kr"], "score": 2}, "REVIEW"),
    ("addComment", lambda ids: {"subjectId": ids["objective"], "body": " " * 10}, "body"),
]


@pytest.mark.parametrize(
    ("name", "make", "says"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)]
)
async def test_bad_input_is_refused_clearly_and_writes_nothing(org: Org, client, name, make, says):
    cycle = await h.active_cycle(org)
    obj = await h.objective(org, cycle, "O")
    ids = {"cycle": cycle, "objective": obj, "kr": await h.key_result(org, obj)}
    before = await events_total(org)
    type_name = {"checkIn": "CheckInInput"}.get(name, name[0].upper() + name[1:] + "Input")
    query = (
        f"mutation($input: {type_name}!) {{ {name}(input: $input) {{ "
        "userErrors { code field message } } }"
    )
    content = json.dumps({"query": query, "variables": {"input": make(ids)}})  # NaN, Infinity
    r = await client.post(
        "/graphql",
        content=content,
        headers={"Authorization": f"Bearer {org.admin_token}", "Content-Type": "application/json"},
    )
    assert r.status_code in (200, 400), r.text
    body = r.json()
    said = json.dumps(body)
    assert "INTERNAL_SERVER_ERROR" not in said and "Internal server error" not in said
    if body.get("errors"):
        assert says in said, said
    else:
        errors = body["data"][name]["userErrors"]
        assert errors and errors[0]["code"] in ("INVALID", "NOT_FOUND"), said
        assert says in said, said
    assert await events_total(org) == before
