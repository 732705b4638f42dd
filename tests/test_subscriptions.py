"""Subscriptions with a real WebSocket client (gql) against real `okr serve` processes
sharing one database: across replicas, replay from a cursor, a killed listener
connection, scopes, and a subscriber that stops reading."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest
import websockets
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError, TransportServerError
from gql.transport.websockets import WebsocketsTransport
from sqlalchemy import text

from schema.ids import cursor, encode
from service.auth import issue_token
from service.db import Database
from service.domain import enums as domain_enums
from service.usecases import commands, cycles, key_results, objectives, organizations
from tests.conftest import JWT_SECRET, Org
from tests.helpers import free_port, start_okr, stop_okr

PROGRESS = """
subscription($after: String, $teamId: ID, $objectiveId: ID) {
  progressChanged(after: $after, teamId: $teamId, objectiveId: $objectiveId) {
    cursor occurredAt actor { name } checkIn { value note }
    changes { node { id __typename } previousProgress progress status }
  }
}
"""


LOG = open(os.environ.get("OKR_TEST_SERVER_LOG", os.devnull), "ab")


class Replica:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.http = f"http://127.0.0.1:{port}/graphql"
        self.ws = f"ws://127.0.0.1:{port}/graphql"


@pytest.fixture
async def replicas(bin_okr, database_url, tmp_path) -> AsyncIterator[Any]:
    started: list[Replica] = []

    async def start(**settings: str) -> Replica:
        port = free_port()
        env = {
            **os.environ,
            "OKR_DATABASE_URL": database_url,
            "OKR_JWT_SECRET": JWT_SECRET,
            "OKR_DATA_DIR": str(tmp_path),
            "OKR_EVENT_POLL_SECONDS": "2",
            "OKR_LISTENER_HEALTH_SECONDS": "0.5",
            **settings,
        }
        replica = Replica(await start_okr(bin_okr, port, env, LOG), port)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        await stop_okr(replica.proc)


class Tree:
    def __init__(self, org: Org, db: Database) -> None:
        self.org, self.db = org, db

    async def build(self) -> Tree:
        p = self.org.admin
        tx = self.db.transaction
        cycle = await tx(
            lambda s: cycles.create_cycle(
                s, p, commands.CreateCycle("Q", date(2026, 1, 1), date(2027, 12, 31))
            )
        )
        await tx(
            lambda s: cycles.set_cycle_status(
                s, p, commands.SetCycleStatus(cycle.id, domain_enums.CycleStatus.ACTIVE)
            )
        )
        self.team_x = await tx(
            lambda s: organizations.create_team(s, p, commands.CreateTeam("X", None))
        )
        self.team_y = await tx(
            lambda s: organizations.create_team(s, p, commands.CreateTeam("Y", None))
        )
        self.root = await tx(
            lambda s: objectives.create_objective(
                s, p, commands.CreateObjective(cycle_id=cycle.id, title="Root")
            )
        )
        self.obj_x = await tx(
            lambda s: objectives.create_objective(
                s,
                p,
                commands.CreateObjective(
                    cycle_id=cycle.id, title="X's", team_id=self.team_x.id, parent_id=self.root.id
                ),
            )
        )
        self.obj_y = await tx(
            lambda s: objectives.create_objective(
                s,
                p,
                commands.CreateObjective(cycle_id=cycle.id, title="Y's", team_id=self.team_y.id),
            )
        )
        self.kr_x = await tx(
            lambda s: key_results.create_key_result(
                s,
                p,
                commands.CreateKeyResult(
                    objective_id=self.obj_x.id,
                    title="kx",
                    type=domain_enums.KeyResultType.INCREASE,
                    start_value=0,
                    target_value=100,
                ),
            )
        )
        self.kr_y = await tx(
            lambda s: key_results.create_key_result(
                s,
                p,
                commands.CreateKeyResult(
                    objective_id=self.obj_y.id,
                    title="ky",
                    type=domain_enums.KeyResultType.INCREASE,
                    start_value=0,
                    target_value=100,
                ),
            )
        )
        return self

    def gid(self, type_name: str, row: Any) -> str:
        return encode(type_name, row.id)


async def check_in(
    replica: Replica, token: str, kr_gid: str, value: float, note: str | None = None
) -> None:
    q = "mutation($i: CheckInInput!) { checkIn(input: $i) { userErrors { message } } }"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(
            replica.http,
            headers={"Authorization": f"Bearer {token}"},
            json={
                "query": q,
                "variables": {"i": {"keyResultId": kr_gid, "value": value, "note": note}},
            },
        )
    assert r.json()["data"]["checkIn"]["userErrors"] == [], r.text


def transport(replica: Replica, token: str, subprotocol: str | None = None) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=replica.ws,
        init_payload={"Authorization": f"Bearer {token}"},
        subprotocols=[subprotocol] if subprotocol else None,
    )


async def collect(session, variables: dict, n: int, queue: asyncio.Queue) -> None:
    request = GraphQLRequest(PROGRESS, variable_values=variables)
    async for result in session.subscribe(request):
        await queue.put(result["progressChanged"])


async def next_event(queue: asyncio.Queue, wait: float = 15) -> dict:
    return await asyncio.wait_for(queue.get(), wait)


@pytest.fixture
async def tree(org: Org, db: Database) -> Tree:
    return await Tree(org, db).build()


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws"])
async def test_a_check_in_on_one_replica_reaches_a_subscriber_on_another(
    replicas, tree: Tree, org: Org, subprotocol: str
):
    first, second = await replicas(), await replicas()
    events: asyncio.Queue = asyncio.Queue()
    async with Client(transport=transport(first, org.admin_token, subprotocol)) as session:
        task = asyncio.create_task(collect(session, {}, 1, events))
        await asyncio.sleep(0.5)  # let the subscription register
        await check_in(second, org.admin_token, tree.gid("KeyResult", tree.kr_x), 40, "hello")
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
        await check_in(server, org.admin_token, kr, 10)
        cursor = (await next_event(events))["cursor"]
        task.cancel()
    for value in (20, 30, 40):  # while nobody listens
        await check_in(server, org.admin_token, kr, value)
    async with Client(transport=transport(server, org.admin_token)) as session:
        task = asyncio.create_task(collect(session, {"after": cursor}, 4, events))
        replayed = [await next_event(events) for _ in range(3)]
        assert [e["checkIn"]["value"] for e in replayed] == [20, 30, 40]
        await check_in(server, org.admin_token, kr, 50)  # then live, none twice
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
            await check_in(server, org.admin_token, kr, value)
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
        await check_in(server, org.admin_token, tree.gid("KeyResult", tree.kr_y), 70)
        await check_in(server, org.admin_token, tree.gid("KeyResult", tree.kr_x), 5)
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
        await check_in(server, org.admin_token, kr, 1, note)
        first = json.loads(await ws.recv())
        cursor = first["payload"]["data"]["progressChanged"]["cursor"]
        sent = 120
        for i in range(sent):  # the subscriber does not read meanwhile
            await check_in(server, org.admin_token, kr, i + 2, note)
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
    async with websockets.connect(
        server.ws, subprotocols=["graphql-transport-ws"], compression=None, max_size=2**22
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
            for i in range(60):
                await check_in(server, org.admin_token, kr, i, note)
            cursors = [await next_event(fast, 30) for _ in range(60)]
            task.cancel()
    assert len(set(cursors)) == 60  # the reader that kept up got every event


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
        await check_in(server, org.admin_token, tree.gid("KeyResult", tree.kr_x), 10)
        await check_in(server, org.admin_token, tree.gid("KeyResult", tree.kr_y), 20)
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
        await check_in(server, org.admin_token, tree.gid("KeyResult", tree.kr_y), 30)
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
