"""Credentials that end while in use (issue 10, items 3, 11 (auth), 13 and 16): revoked
keys, expired tokens, deactivated users and removed memberships stop working at once,
over HTTP and on open WebSockets of every replica; sockets that never initialise, and
messages larger than the body limit, are cut off; /metrics can require a token.

Driven as the findings were made: real `okr serve` replicas, a raw WebSocket client
speaking both subprotocols, and the `okr` command."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
import uvicorn
import websockets
from sqlalchemy import text

from schema.ids import decode_as, encode
from service.app import create_app
from service.db import Database
from service.domain import enums as domain_enums
from service.settings import Settings
from service.usecases import commands, objectives, organizations
from tests.factories import (
    JWT_SECRET,
    PAYLOAD_ERRORS,
    Org,
    Tree,
    env_for,
    free_port,
    mutate,
    okr,
    team,
    user,
)
from tests.sockets import (
    LEGACY,
    PROGRESS,
    TRANSPORT,
    Replica,
    check_in_on,
    closed,
    connect,
    first_error,
    graphql,
    receive,
    start,
)

CHECK_IN = (
    "mutation($i: CheckInInput!) { checkIn(input: $i) { checkIn { id } userErrors { message } } }"
)


# --- a raw WebSocket client, both subprotocols ------------------------------------------------


async def check_ins(db: Database) -> int:
    async with db.connect() as conn:
        return (await conn.execute(text("SELECT count(*) FROM check_in"))).scalar_one()


# --- item 3: revocation, expiry, deactivation, removed membership ----------------------------


async def test_item3_a_revoked_api_key_closes_its_sockets_on_every_replica_at_once(
    replicas, tree: Tree, org: Org, db: Database, bin_okr, database_url, tmp_path
):
    first, second = await replicas(), await replicas()
    _row, key = await db.transaction(lambda s: organizations.create_api_key(s, org.id, "logistics"))
    kr = tree.gid("KeyResult", tree.kr_x)
    on_first = await connect(first, key, TRANSPORT)
    on_second = await connect(second, key, LEGACY)
    await start(on_first, TRANSPORT, "1", PROGRESS)
    await start(on_second, LEGACY, "1", PROGRESS)
    await asyncio.sleep(0.5)
    await check_in_on(first, org.admin_token, kr, 10)
    assert (await receive(on_first))["type"] == "next"  # both really are subscribed
    assert (await receive(on_second))["type"] == "data"

    code, _out, err = await okr(
        bin_okr, env_for(database_url, tmp_path), "apikey", "revoke", "--org", "acme-logistics",
        "--name", "logistics",
    )  # fmt: skip
    assert code == 0, err
    for ws in (on_first, on_second):
        code, reason, took = await closed(ws, 10)
        assert (code, reason) == (4403, "the API key was revoked")
        assert took < 1.5, f"closed only after {took:.2f} s"

    # The key is refused everywhere afterwards, and nothing was written with it.
    before = await check_ins(db)
    response = await graphql(first, key, CHECK_IN, {"i": {"keyResultId": kr, "value": 99}})
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert await check_ins(db) == before


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_item3_every_operation_is_authenticated_again(
    replicas, tree: Tree, org: Org, db: Database, protocol: str
):
    """Even if a revocation's event never reached this replica, the next operation on an
    open socket (a write, a new subscription) is refused and runs nothing."""
    server = await replicas()
    row, key = await db.transaction(lambda s: organizations.create_api_key(s, org.id, "svc"))
    kr = tree.gid("KeyResult", tree.kr_x)
    ws = await connect(server, key, protocol)
    await start(ws, protocol, "0", PROGRESS)
    await asyncio.sleep(0.3)
    await check_in_on(server, org.admin_token, kr, 5)
    assert (await receive(ws))["payload"]["data"]["progressChanged"]["checkIn"]["value"] == 5
    writes = [("1", CHECK_IN, {"i": {"keyResultId": kr, "value": 6}})]
    if protocol == TRANSPORT:  # graphql-ws carries subscriptions only
        await start(ws, protocol, *writes[0])
        # the write's own answer; the event it causes on "0" may come before or after it
        assert (await receive(ws, op="1"))["payload"]["data"]["checkIn"]["userErrors"] == []
        assert (await receive(ws, op="1"))["type"] == "complete"

    async with db.engine.begin() as conn:  # revoked behind the hub's back: no event
        revoke = text("UPDATE api_key SET revoked_at = now() WHERE id = :id")
        await conn.execute(revoke, {"id": row.id})
    before = await check_ins(db)
    later = [("2", CHECK_IN, {"i": {"keyResultId": kr, "value": 77}}), ("3", PROGRESS, {})]
    for op, query, variables in later:
        await start(ws, protocol, op, query, variables)
        refused = await receive(ws, op=op)
        assert refused["type"] == "error" and refused["id"] == op, refused
        assert first_error(refused) == {
            "message": "unknown or revoked API key",
            "extensions": {"code": "UNAUTHENTICATED"},
        }
    assert await check_ins(db) == before
    await ws.close()


@pytest.mark.parametrize("as_text", [False, True], ids=["number", "digits"])
async def test_item3_an_expired_token_closes_its_socket_when_it_expires(
    replicas, tree: Tree, org: Org, as_text: bool
):
    """`exp` as a number, or as a string of digits (which the JWT library accepts too:
    found from outside, such a socket outlived its token)."""
    server = await replicas()
    now = datetime.now(UTC)
    exp = int((now + timedelta(seconds=3)).timestamp())
    token = jwt.encode(
        {
            "sub": str(org.admin_id),
            "org": str(org.id),
            "iat": now,
            "exp": str(exp) if as_text else exp,
        },
        JWT_SECRET,
        algorithm="HS256",
    )
    ws = await connect(server, token, TRANSPORT)
    await start(ws, TRANSPORT, "1", PROGRESS)
    code, reason, took = await closed(ws, 15)
    assert (code, reason) == (4403, "the token expired")
    assert 1.0 < took < 5.0


async def test_item3_deactivating_a_user_ends_their_tokens_over_http_and_websocket(
    replicas, tree: Tree, org: Org, db: Database
):
    first, second = await replicas(), await replicas()
    dana = await db.transaction(
        lambda s: organizations.create_user(
            s, org.admin, commands.CreateUser("Dana", "dana@acme.example", domain_enums.Role.MEMBER)
        )
    )
    token = org.token(dana.id)
    sockets = [await connect(first, token, TRANSPORT), await connect(second, token, LEGACY)]
    await start(sockets[0], TRANSPORT, "1", PROGRESS)
    await start(sockets[1], LEGACY, "1", PROGRESS)
    await asyncio.sleep(0.3)

    response = await graphql(
        second,
        org.admin_token,
        "mutation($i: DeactivateUserInput!) { deactivateUser(input: $i) "
        f"{{ user {{ id active }} {PAYLOAD_ERRORS} }} }}",
        {"i": {"userId": encode("User", dana.id)}},
    )
    payload = response.json()["data"]["deactivateUser"]
    assert payload == {"user": {"id": encode("User", dana.id), "active": False}, "userErrors": []}
    for ws in sockets:
        code, reason, took = await closed(ws, 10)
        assert (code, reason) == (4403, "the user was deactivated")
        assert took < 1.5, f"closed only after {took:.2f} s"
    response = await graphql(first, token, "{ viewer { role } }")
    assert response.status_code == 401
    assert response.json()["errors"][0] == {
        "message": "this user has been deactivated",
        "extensions": {"code": "UNAUTHENTICATED"},
    }
    async with websockets.connect(first.ws, subprotocols=[TRANSPORT]) as ws:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await ws.send(json.dumps(init))
        code, reason, _took = await closed(ws, 10)
    assert (code, reason) == (4403, "this user has been deactivated")


async def test_item3_removing_a_membership_closes_the_members_sockets(
    replicas, tree: Tree, org: Org, db: Database
):
    server = await replicas()
    p = org.admin
    await db.transaction(
        lambda s: objectives.update_objective(
            s,
            p,
            commands.UpdateObjective(tree.obj_x.id, None, visibility=domain_enums.Visibility.TEAM),
        )
    )
    eve = await db.transaction(
        lambda s: organizations.create_user(
            s, p, commands.CreateUser("Eve", "eve@acme.example", domain_enums.Role.MEMBER)
        )
    )
    await db.transaction(
        lambda s: organizations.add_team_member(s, p, commands.TeamMember(tree.team_x.id, eve.id))
    )
    token = org.token(eve.id)
    objective = tree.gid("Objective", tree.obj_x)
    see = "query($id: ID!) { node(id: $id) { id } }"
    assert (await graphql(server, token, see, {"id": objective})).json()["data"]["node"]
    ws = await connect(server, token, TRANSPORT)
    await start(ws, TRANSPORT, "1", PROGRESS)
    await asyncio.sleep(0.3)

    response = await graphql(
        server,
        org.admin_token,
        "mutation($i: RemoveTeamMemberInput!) { removeTeamMember(input: $i) "
        f"{{ team {{ members {{ id }} }} {PAYLOAD_ERRORS} }} }}",
        {"i": {"teamId": tree.gid("Team", tree.team_x), "userId": encode("User", eve.id)}},
    )
    assert response.json()["data"]["removeTeamMember"] == {
        "team": {"members": []},
        "userErrors": [],
    }
    code, reason, took = await closed(ws, 10)
    assert code == 4403 and reason.startswith("credentials changed"), reason
    assert took < 1.5
    # Reconnected, or over HTTP, the member no longer sees the team's objective.
    assert (await graphql(server, token, see, {"id": objective})).json()["data"]["node"] is None


async def test_item3_deactivate_user_and_remove_team_member_are_for_admins_and_checked(org: Org):
    member = await user(org, "Mia Member")
    viewer = await user(org, "Val Viewer", "VIEWER")
    squad = await team(org, "Squad")
    await mutate(org, "addTeamMember", {"teamId": squad, "userId": member}, "team { id }")
    member_token = org.token(decode_as(member, "User"))
    admin_gid = encode("User", org.admin_id)
    unknown_user, unknown_team = encode("User", 10**6), encode("Team", 10**6)

    async def deactivate(target: str, token: str | None = None) -> dict:
        return await mutate(org, "deactivateUser", {"userId": target}, "user { id active }", token)

    async def remove(team_id: str, user_id: str, token: str | None = None) -> dict:
        return await mutate(
            org,
            "removeTeamMember",
            {"teamId": team_id, "userId": user_id},
            "team { members { id } }",
            token,
        )

    def code_of(payload: dict) -> tuple[str, list | None]:
        (error,) = payload["userErrors"]
        return error["code"], error["field"]

    assert code_of(await deactivate(viewer, member_token))[0] == "FORBIDDEN"
    assert code_of(await remove(squad, member, member_token))[0] == "FORBIDDEN"
    assert code_of(await deactivate(unknown_user)) == ("NOT_FOUND", ["userId"])
    assert code_of(await remove(unknown_team, member)) == ("NOT_FOUND", ["teamId"])
    assert code_of(await remove(squad, unknown_user)) == ("NOT_FOUND", ["userId"])
    assert code_of(await remove(squad, viewer)) == ("NOT_FOUND", ["userId"])  # not a member
    self_refused = await deactivate(admin_gid)
    assert code_of(self_refused) == ("FORBIDDEN", ["userId"])
    assert "themselves" in self_refused["userErrors"][0]["message"]

    # Nothing changed by the refusals.
    users = "{ teams { edges { node { members { id active } } } } }"
    members = (await org.call(users))["teams"]["edges"][0]["node"]["members"]
    assert members == [{"id": member, "active": True}]
    assert (await org.call("{ viewer { user { active } } }"))["viewer"]["user"]["active"]

    assert (await remove(squad, member))["team"] == {"members": []}
    done = await deactivate(viewer)
    assert done == {"user": {"id": viewer, "active": False}, "userErrors": []}
    again = await deactivate(viewer)  # already deactivated: the same answer, nothing written
    assert again == done
    viewer_token = org.token(decode_as(viewer, "User"))
    r = await org.client.post(
        "/graphql",
        json={"query": "{ viewer { role } }"},
        headers={"Authorization": f"Bearer {viewer_token}"},
    )
    assert r.status_code == 401
    assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_item3_apikey_list_shows_name_created_last_used_and_revoked(
    org: Org, db: Database, client, bin_okr, database_url, tmp_path
):
    env = env_for(database_url, tmp_path)
    _row, used_key = await db.transaction(lambda s: organizations.create_api_key(s, org.id, "used"))
    await db.transaction(lambda s: organizations.create_api_key(s, org.id, "idle"))
    await db.transaction(lambda s: organizations.create_api_key(s, org.id, "gone"))
    assert (
        await okr(bin_okr, env, "apikey", "revoke", "--org", "acme-logistics", "--name", "gone")
    )[0] == 0

    async def use() -> None:
        r = await client.post(
            "/graphql",
            json={"query": "{ viewer { role } }"},
            headers={"Authorization": f"Bearer {used_key}"},
        )
        assert r.json()["data"]["viewer"]["role"] == "SERVICE"

    async def last_used() -> datetime:
        async with db.connect() as conn:
            return (
                await conn.execute(text("SELECT last_used_at FROM api_key WHERE name = 'used'"))
            ).scalar_one()

    await use()
    first = await last_used()
    assert first is not None
    await use()
    assert await last_used() == first  # not a write per request
    async with db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE api_key SET last_used_at = last_used_at - interval '2 minutes'")
        )
    await use()
    assert await last_used() > first - timedelta(seconds=1)  # written again after a minute

    code, out, err = await okr(bin_okr, env, "apikey", "list", "--org", "acme-logistics")
    assert code == 0, err
    header, *lines = out.strip().splitlines()
    assert header.split() == ["NAME", "CREATED", "LAST", "USED", "REVOKED"]
    rows = {line.split()[0]: line.split()[1:] for line in lines}
    assert set(rows) == {"used", "idle", "gone"}
    assert rows["used"][1] != "never" and rows["used"][2] == "-"
    assert rows["idle"][1:] == ["never", "-"]
    assert rows["gone"][1] == "never" and rows["gone"][2] != "-"
    code, _out, err = await okr(bin_okr, env, "apikey", "list", "--org", "nope")
    assert code == 1 and "not found" in err


async def test_item3_okr_token_refuses_a_deactivated_user(
    org: Org, db: Database, bin_okr, database_url, tmp_path
):
    gone = await db.transaction(
        lambda s: organizations.create_user(
            s, org.admin, commands.CreateUser("Gone", "gone@acme.example", domain_enums.Role.MEMBER)
        )
    )
    await db.transaction(
        lambda s: organizations.deactivate_user(s, org.admin, commands.DeactivateUser(gone.id))
    )
    code, out, err = await okr(
        bin_okr, env_for(database_url, tmp_path), "token", "--org", "acme-logistics",
        "--email", "gone@acme.example",
    )  # fmt: skip
    assert code == 1 and out == "" and "deactivated" in err


# --- item 11 (auth): bad credentials are clean refusals ---------------------------------------


@pytest.mark.parametrize(
    "sub", ["99999999999999999999", "-1", "1e5", "²", "٣", "0", "", " 1", "1.0", "9" * 5000]
)
async def test_item11_out_of_range_ids_in_token_claims_are_unauthenticated(
    org: Org, client, sub: str
):
    now = datetime.now(UTC)
    for claims in (
        {"sub": sub, "org": str(org.id)},
        {"sub": str(org.admin_id), "org": sub},
    ):
        token = jwt.encode(
            {**claims, "exp": now + timedelta(hours=1)}, JWT_SECRET, algorithm="HS256"
        )
        r = await client.post(
            "/graphql",
            json={"query": "{ viewer { role } }"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 401, (claims, r.text)
        assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_item11_a_non_string_authorization_in_connection_init_is_refused(replicas, org: Org):
    server = await replicas()  # one server for every shape: each is refused on its own socket
    for authorization in (12345, {"Bearer": "x"}, ["Bearer", "x"], True):
        init = json.dumps({"type": "connection_init", "payload": {"Authorization": authorization}})
        async with websockets.connect(server.ws, subprotocols=[TRANSPORT]) as ws:
            await ws.send(init)
            code, reason, _took = await closed(ws, 10)
        assert (code, reason) == (4403, "Authorization must be a string: 'Bearer <token>'")
        async with websockets.connect(server.ws, subprotocols=[LEGACY]) as ws:
            await ws.send(init)
            message = await receive(ws)
            code, reason, _took = await closed(ws, 10)
        assert message == {
            "type": "connection_error",
            "payload": {
                "message": "Authorization must be a string: 'Bearer <token>'",
                "extensions": {"code": "UNAUTHENTICATED"},
            },
        }, authorization
        assert code == 4403
    async with httpx.AsyncClient() as http:  # and the server is fine
        assert (await http.get(f"http://127.0.0.1:{server.port}/healthz")).status_code == 200


# --- item 13: a socket that never initialises is closed ---------------------------------------


@pytest.mark.parametrize("protocol", [LEGACY, TRANSPORT])
async def test_item13_a_socket_without_connection_init_is_closed_after_the_timeout(
    replicas, protocol: str
):
    server = await replicas(OKR_WS_INIT_TIMEOUT_SECONDS="1.5")
    async with websockets.connect(server.ws, subprotocols=[protocol]) as ws:
        code, reason, took = await closed(ws, 10)
    assert (code, reason) == (4408, "Connection initialisation timeout")
    assert 1.0 < took < 4.0


def test_item13_the_init_timeout_defaults_to_ten_seconds(tmp_path):
    assert Settings(data_dir=tmp_path).ws_init_timeout_seconds == 10.0


# --- item 16: message size and /metrics --------------------------------------------------------


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_item16_okr_serve_caps_websocket_messages_at_the_body_limit(
    replicas, org: Org, protocol: str
):
    server = await replicas(OKR_MAX_BODY_BYTES="20000")
    ws = await connect(server, org.admin_token, protocol)
    small = "subscription { nothing }" + " " * 15_000
    await start(ws, protocol, "1", small)  # under the limit: parsed and answered
    answer = await receive(ws, op="1")
    assert "Cannot query field 'nothing'" in first_error(answer)["message"], answer
    await start(ws, protocol, "2", small + " " * 5_000)
    code, _reason, _took = await closed(ws, 10)
    assert code == 1009


async def test_item16_the_app_itself_caps_websocket_messages_under_any_server(
    org: Org, database_url: str, tmp_path
):
    """uvicorn left at its 16 MB default: the handler refuses the message unparsed."""
    settings = Settings(
        jwt_secret=JWT_SECRET, data_dir=tmp_path, database_url=None, max_body_bytes=20_000
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, database_url), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        replica = Replica(None, port)  # type: ignore[arg-type]
        for protocol in (TRANSPORT, LEGACY):
            ws = await connect(replica, org.admin_token, protocol)
            big = "{ viewer { role } }" + " " * 5_000 + "#" + "é" * 8_000  # 21 kB in UTF-8
            await start(ws, protocol, "1", big)
            code, reason, _took = await closed(ws, 10)
            assert (code, reason) == (1009, "a message may be at most 20000 bytes")
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 20)


async def test_item16_metrics_can_require_a_token(database_url: str, db: Database, tmp_path):
    settings = Settings(
        jwt_secret=JWT_SECRET, data_dir=tmp_path, database_url=None, metrics_token="m3trics-0k"
    )
    app = create_app(settings, database_url)
    app.state.db = db
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://okr.test") as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "m3trics-0k"}):
            r = await http.get("/metrics", headers=headers)
            assert r.status_code == 401 and "okr_" not in r.text
            assert r.headers["www-authenticate"] == "Bearer"
        r = await http.get("/metrics", headers={"Authorization": "Bearer m3trics-0k"})
        assert r.status_code == 200 and "okr_http_requests_total" in r.text


async def test_item3_two_admins_deactivating_each_other_at_once_leave_one_admin(org: Org):
    other = await user(org, "Otto Admin", "ADMIN")
    tokens = {
        encode("User", org.admin_id): org.admin_token,
        other: org.token(decode_as(other, "User")),
    }
    deactivate = (
        "mutation($i: DeactivateUserInput!) { deactivateUser(input: $i) "
        f"{{ user {{ id }} {PAYLOAD_ERRORS} }} }}"
    )

    async def post(token: str, query: str, variables: dict | None = None) -> httpx.Response:
        return await org.client.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token}"},
        )

    for _ in range(4):  # the race, a few times over
        (a, token_a), (b, token_b) = tokens.items()
        answers = await asyncio.gather(
            post(token_a, deactivate, {"i": {"userId": b}}),
            post(token_b, deactivate, {"i": {"userId": a}}),
        )
        alive = [
            (await post(t, "{ viewer { role } }")).status_code == 200 for t in (token_a, token_b)
        ]
        assert alive.count(True) == 1, [r.text for r in answers]
        loser = answers[alive.index(False)]
        # Refused: by the use case (it was deactivated first), or already at the door.
        assert (
            loser.status_code == 401
            or loser.json()["data"]["deactivateUser"]["userErrors"][0]["code"] == "FORBIDDEN"
        ), loser.text
        async with org.db.engine.begin() as conn:  # both back for another round
            await conn.execute(text("UPDATE app_user SET active = true"))


async def test_item3_concurrent_deactivations_are_serialized_by_the_admin_lock(
    org: Org, db: Database
):
    """The same race one level down, made certain: the second deactivation starts while
    the first is still open, and must not leave the organization without an admin."""
    from service.domain.errors import Rejected
    from service.domain.principal import Principal

    other = await db.transaction(
        lambda s: organizations.create_user(
            s, org.admin, commands.CreateUser("Olga", "olga@acme.example", domain_enums.Role.ADMIN)
        )
    )
    olga = Principal(organization_id=org.id, role="ADMIN", user_id=other.id)
    async with db.sessions() as first, first.begin():
        await organizations.deactivate_user(first, org.admin, commands.DeactivateUser(other.id))
        second = asyncio.create_task(
            db.transaction(
                lambda s: organizations.deactivate_user(
                    s, olga, commands.DeactivateUser(org.admin_id)
                )
            )
        )
        await asyncio.sleep(0.5)  # it runs as far as it can before the first commits
    with pytest.raises(Rejected) as refused:
        await second
    assert refused.value.code == "FORBIDDEN"
    async with db.connect() as conn:
        active = await conn.execute(text("SELECT id FROM app_user WHERE active"))
        assert active.scalars().all() == [org.admin_id]


def test_item23_a_socket_watcher_is_handed_every_kind_that_can_end_it():
    """A socket's watcher is handed only the kinds in schema/ws.py's REVOKING: every
    other kind must be one `revocation` never acts on, whoever the event names."""
    from types import SimpleNamespace

    from schema.ws import REVOKING, revocation
    from service.domain.enums import EventKind
    from service.domain.principal import Principal

    p = Principal(organization_id=1, role="MEMBER", user_id=7, api_key_id=7)
    for kind in EventKind:
        row = SimpleNamespace(
            kind=str(kind),
            subject_id=7,
            payload={"user_id": 7, "after": {"role": "ADMIN"}},
        )
        if str(kind) not in REVOKING:
            assert revocation(row, p) is None, kind
        else:
            assert revocation(row, p) is not None, kind
