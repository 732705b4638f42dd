"""Subscriptions with a real WebSocket client (gql) against real `okr serve` processes
sharing one database: across replicas, replay from a cursor, a killed listener
connection, scopes, and a subscriber that stops reading."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
import websockets
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError, TransportServerError
from sqlalchemy import text

from schema.ids import cursor, encode
from service.auth import issue_token
from service.db import Database
from service.domain import enums as domain_enums
from service.usecases import commands, objectives, organizations
from tests.factories import JWT_SECRET, Org, Tree
from tests.sockets import PROGRESS, check_in_on, collect, next_event, transport


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws"])
async def test_a_check_in_on_one_replica_reaches_a_subscriber_on_another(
    replicas, tree: Tree, org: Org, subprotocol: str
):
    first, second = await replicas(), await replicas()
    events: asyncio.Queue = asyncio.Queue()
    async with Client(transport=transport(first, org.admin_token, subprotocol)) as session:
        task = asyncio.create_task(collect(session, {}, 1, events))
        await asyncio.sleep(0.5)  # let the subscription register
        await check_in_on(second, org.admin_token, tree.gid("KeyResult", tree.kr_x), 40, "hello")
        event = await next_event(events)
        task.cancel()
    assert event["checkIn"] == {"value": 40.0, "note": "hello"}
    assert event["actor"] == {"name": "Ada Admin"}
    changes = [(c["node"]["id"], c["previousProgress"], c["progress"]) for c in event["changes"]]
    assert changes == [
        (tree.gid("KeyResult", tree.kr_x), 0.0, pytest.approx(0.4)),
        (tree.gid("Objective", tree.obj_x), 0.0, pytest.approx(0.4)),
        (tree.gid("Objective", tree.root), 0.0, pytest.approx(0.4)),
    ]


async def test_reconnecting_with_the_last_cursor_replays_exactly_what_was_missed(
    replicas, tree: Tree, org: Org
):
    server = await replicas()
    kr = tree.gid("KeyResult", tree.kr_x)
    events: asyncio.Queue = asyncio.Queue()
    async with Client(transport=transport(server, org.admin_token)) as session:
        task = asyncio.create_task(collect(session, {}, 1, events))
        await asyncio.sleep(0.5)
        await check_in_on(server, org.admin_token, kr, 10)
        cursor = (await next_event(events))["cursor"]
        task.cancel()
    for value in (20, 30, 40):  # while nobody listens
        await check_in_on(server, org.admin_token, kr, value)
    async with Client(transport=transport(server, org.admin_token)) as session:
        task = asyncio.create_task(collect(session, {"after": cursor}, 4, events))
        replayed = [await next_event(events) for _ in range(3)]
        assert [e["checkIn"]["value"] for e in replayed] == [20, 30, 40]
        await check_in_on(server, org.admin_token, kr, 50)  # then live, none twice
        live = await next_event(events)
        assert live["checkIn"]["value"] == 50
        await asyncio.sleep(0.5)
        assert events.empty()
        task.cancel()


async def test_events_survive_a_killed_listener_connection(
    replicas, tree: Tree, org: Org, db: Database
):
    server = await replicas()
    kr = tree.gid("KeyResult", tree.kr_x)
    events: asyncio.Queue = asyncio.Queue()
    async with Client(transport=transport(server, org.admin_token)) as session:
        task = asyncio.create_task(collect(session, {}, 3, events))
        await asyncio.sleep(0.5)
        async with db.engine.begin() as conn:
            killed = (
                await conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'okr-listener' AND datname = current_database()"
                    )
                )
            ).scalar()
        assert killed == 1
        for value in (11, 22, 33):  # committed while the listener is gone
            await check_in_on(server, org.admin_token, kr, value)
        got = [await next_event(events, 20) for _ in range(3)]
        task.cancel()
    assert [e["checkIn"]["value"] for e in got] == [11, 22, 33]


async def test_a_team_scoped_subscriber_sees_nothing_of_another_team(
    replicas, tree: Tree, org: Org
):
    server = await replicas()
    events: asyncio.Queue = asyncio.Queue()
    async with Client(transport=transport(server, org.admin_token)) as session:
        task = asyncio.create_task(
            collect(session, {"teamId": tree.gid("Team", tree.team_x)}, 1, events)
        )
        await asyncio.sleep(0.5)
        await check_in_on(server, org.admin_token, tree.gid("KeyResult", tree.kr_y), 70)
        await check_in_on(server, org.admin_token, tree.gid("KeyResult", tree.kr_x), 5)
        event = await next_event(events)
        task.cancel()
    assert event["checkIn"]["value"] == 5
    assert events.empty()


async def test_a_subscriber_that_stops_reading_is_closed_with_its_cursor(
    replicas, tree: Tree, org: Org
):
    server = await replicas(OKR_SUBSCRIBER_QUEUE_SIZE="3")
    kr = tree.gid("KeyResult", tree.kr_x)
    note = os.urandom(2000).hex()  # incompressible
    # A raw client, without compression, that reads one event and then stops; the
    # socket buffers fill and the server's queue for it overflows.
    async with websockets.connect(  # no keepalive: this client stops reading on purpose
        server.ws,
        subprotocols=["graphql-transport-ws"],
        compression=None,
        max_size=2**22,
        ping_interval=None,
    ) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "connection_init",
                    "payload": {"Authorization": f"Bearer {org.admin_token}"},
                }
            )
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": BULKY, "variables": {}}}
            )
        )
        await asyncio.sleep(0.5)
        await check_in_on(server, org.admin_token, kr, 1, note)
        first = json.loads(await ws.recv())
        cursor = first["payload"]["data"]["progressChanged"]["cursor"]
        sent = 120
        for i in range(sent):  # the subscriber does not read meanwhile
            await check_in_on(server, org.admin_token, kr, i + 2, note)
        closing = None
        received = [cursor]
        while closing is None:  # now read what was buffered, up to the error
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "error":
                closing = message["payload"][0]
            elif message["type"] == "next":
                if "errors" in message["payload"]:
                    closing = message["payload"]["errors"][0]
                else:
                    received.append(message["payload"]["data"]["progressChanged"]["cursor"])
    assert closing.get("extensions", {}).get("code") == "SUBSCRIBER_BEHIND", closing
    resume = closing["extensions"]["cursor"]
    assert resume == received[-1]
    assert len(received) < sent + 1  # it really was cut off
    events: asyncio.Queue = asyncio.Queue()
    async with Client(transport=transport(server, org.admin_token)) as session:
        task = asyncio.create_task(collect(session, {"after": resume}, 1, events))
        rest = [await next_event(events) for _ in range(sent + 1 - len(received))]
        task.cancel()
    values = [e["checkIn"]["value"] for e in rest]
    assert values[-1] == sent + 1  # everything up to the last check-in, nothing lost
    assert values == sorted(set(values))  # in order, none twice
    assert len(received) + len(values) == sent + 1


async def test_unauthenticated_connections_are_refused(replicas, tree: Tree):
    server = await replicas()
    with pytest.raises(
        (TransportServerError, TransportQueryError, websockets.ConnectionClosed, Exception)
    ):
        async with Client(transport=transport(server, "not-a-token")) as session:
            await session.execute(GraphQLRequest("{ viewer { role } }"))
    async with websockets.connect(server.ws, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 4403


async def test_a_bad_cursor_is_a_clear_error(replicas, tree: Tree, org: Org):
    server = await replicas()
    async with Client(transport=transport(server, org.admin_token)) as session:
        for after, words in (
            ("garbage", "not a valid cursor"),
            (cursor(10**6), "ahead of the feed"),
        ):
            with pytest.raises(TransportQueryError) as error:
                async for _ in session.subscribe(
                    GraphQLRequest(PROGRESS, variable_values={"after": after})
                ):
                    pass
            assert words in str(error.value)


# Each event about 100 kB, so that a reader that stops fills the socket buffers soon.
BULKY = (
    "subscription { progressChanged { cursor "
    + " ".join(f"n{i}: checkIn {{ note }}" for i in range(25))
    + " } }"
)


async def test_shutdown_closes_subscriptions_cleanly(replicas, tree: Tree, org: Org):
    server = await replicas()
    events: asyncio.Queue = asyncio.Queue()
    async with Client(transport=transport(server, org.admin_token)) as session:
        task = asyncio.create_task(collect(session, {}, 1, events))
        await asyncio.sleep(0.5)
        server.proc.terminate()
        assert await asyncio.wait_for(server.proc.wait(), 20) == 0
        with pytest.raises(Exception):  # noqa: B017 - the stream ends with the server
            await asyncio.wait_for(task, 20)


async def test_identical_subscribers_share_a_stream_and_a_slow_one_hurts_nobody(
    replicas, tree: Tree, org: Org
):
    server = await replicas(OKR_SUBSCRIBER_QUEUE_SIZE="3")
    kr = tree.gid("KeyResult", tree.kr_x)
    note = os.urandom(2000).hex()
    # The slow reader reads nothing: closing it would wait out the close handshake behind
    # the frames it never read (10 s by default).
    async with websockets.connect(
        server.ws,
        subprotocols=["graphql-transport-ws"],
        compression=None,
        max_size=2**22,
        close_timeout=0.5,
    ) as slow:
        await slow.send(
            json.dumps(
                {
                    "type": "connection_init",
                    "payload": {"Authorization": f"Bearer {org.admin_token}"},
                }
            )
        )
        await slow.recv()
        await slow.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": BULKY}}))
        fast: asyncio.Queue = asyncio.Queue()
        async with Client(transport=transport(server, org.admin_token)) as session:

            async def read_fast():
                async for result in session.subscribe(GraphQLRequest(BULKY)):
                    await fast.put(result["progressChanged"]["cursor"])

            task = asyncio.create_task(read_fast())
            await asyncio.sleep(0.5)
            # ten times the slow reader's queue: it overflows long before the end
            for i in range(30):
                await check_in_on(server, org.admin_token, kr, i, note)
            cursors = [await next_event(fast, 30) for _ in range(30)]
            task.cancel()
    assert len(set(cursors)) == 30  # the reader that kept up got every event


async def test_subscriptions_respect_visibility_and_tenants(
    replicas, tree: Tree, org: Org, db: Database, client
):
    server = await replicas()
    p = org.admin
    hidden = await db.transaction(
        lambda s: objectives.update_objective(
            s,
            p,
            commands.UpdateObjective(tree.obj_x.id, None, visibility=domain_enums.Visibility.TEAM),
        )
    )
    outsider = await db.transaction(
        lambda s: organizations.create_user(
            s, p, commands.CreateUser("Outsider", "outsider@acme.example", domain_enums.Role.MEMBER)
        )
    )
    token = org.token(outsider.id)
    events: asyncio.Queue = asyncio.Queue()
    async with Client(transport=transport(server, token)) as session:
        task = asyncio.create_task(collect(session, {}, 1, events))
        await asyncio.sleep(0.5)
        await check_in_on(server, org.admin_token, tree.gid("KeyResult", tree.kr_x), 10)
        await check_in_on(server, org.admin_token, tree.gid("KeyResult", tree.kr_y), 20)
        rolled_up = await next_event(events)
        event = await next_event(events)
        task.cancel()
    # The hidden team's check-in reaches the outsider only as what it moved above it:
    # neither the check-in, nor who made it, nor the hidden objective and key result.
    assert rolled_up["checkIn"] is None and rolled_up["actor"] is None
    shown = {c["node"]["id"] for c in rolled_up["changes"]}
    assert shown and not shown & {
        tree.gid("KeyResult", tree.kr_x),
        encode("Objective", tree.obj_x.id),
    }
    assert event["checkIn"]["value"] == 20
    assert events.empty()
    assert hidden.visibility == "TEAM"
    other_org, other_admin = await db.transaction(
        lambda s: organizations.create_organization(s, "Rival", "boss@rival.example")
    )
    async with Client(transport=transport(server, org.admin_token)) as session:
        for variables in (
            {"objectiveId": encode("Objective", 10**6)},
            {"teamId": encode("Team", 10**6)},
        ):
            with pytest.raises(TransportQueryError) as error:
                async for _ in session.subscribe(
                    GraphQLRequest(PROGRESS, variable_values=variables)
                ):
                    pass
            assert "not found" in str(error.value)
    rival_token = issue_token(JWT_SECRET, other_admin.id, other_org.id)
    async with Client(transport=transport(server, rival_token)) as session:
        task = asyncio.create_task(collect(session, {}, 1, events))
        await asyncio.sleep(0.5)
        await check_in_on(server, org.admin_token, tree.gid("KeyResult", tree.kr_y), 30)
        await asyncio.sleep(1.5)
        task.cancel()
    assert events.empty()  # nothing of another organization


async def test_subscriptions_per_connection_are_limited(replicas, tree: Tree, org: Org):
    server = await replicas(OKR_MAX_SUBSCRIPTIONS_PER_CONNECTION="2")
    async with websockets.connect(server.ws, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "connection_init",
                    "payload": {"Authorization": f"Bearer {org.admin_token}"},
                }
            )
        )
        await ws.recv()
        for n in range(3):
            await ws.send(
                json.dumps({"id": str(n), "type": "subscribe", "payload": {"query": PROGRESS}})
            )
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert message["id"] == "2" and message["type"] == "error"
    assert message["payload"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
