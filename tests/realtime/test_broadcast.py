"""Broadcast fan-out (schema/broadcast.py): one execution and one encoding per event for
every socket of a visibility class, only the operation id's envelope differing, under
both subprotocols; the owner of a hidden objective is a class of their own; a socket
that cannot keep up ends with SUBSCRIBER_BEHIND and its cursor while the others get
every frame."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import orjson
import websockets

from schema import ids
from schema.broadcast import TRANSPORT_WS, Member, Outlet
from service.domain import enums as domain_enums
from service.domain.principal import Principal
from service.usecases import commands, key_results, objectives, organizations
from tests.factories import Org, Tree
from tests.sockets import check_in_on

FEED = "subscription { progressChanged { cursor checkIn { value } changes { node { id } } } }"


async def open_socket(replica: Any, token: str, protocol: str, op: str) -> Any:
    ws = await websockets.connect(replica.ws, subprotocols=[protocol])
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    kind = "subscribe" if protocol == "graphql-transport-ws" else "start"
    await ws.send(json.dumps({"id": op, "type": kind, "payload": {"query": FEED}}))
    return ws


async def frames(ws: Any, n: int) -> list[dict]:
    out = []
    while len(out) < n:
        message = json.loads(await asyncio.wait_for(ws.recv(), 15))
        if message["type"] in ("ka", "ping", "pong"):
            continue
        out.append(message)
    return out


async def subscribers_on(replica: Any) -> int:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{replica.port}/metrics")).text
    return int(
        float(next(ln for ln in text.splitlines() if ln.startswith("okr_subscribers "))[16:])
    )


async def test_one_class_gets_one_payload_with_its_own_envelopes(
    replicas, tree: Tree, org: Org, db
):
    p = org.admin
    ann, bob, cat = [
        await db.transaction(
            lambda s, n=n: organizations.create_user(
                s, p, commands.CreateUser(n, f"{n}@acme.example", domain_enums.Role.MEMBER)
            )
        )
        for n in ("ann", "bob", "cat")
    ]
    for user in (ann, bob, cat):
        await db.transaction(
            lambda s, u=user.id: organizations.add_team_member(
                s, p, commands.TeamMember(tree.team_x.id, u)
            )
        )
    # Cat owns a PRIVATE objective of team X: her class is her own.
    hidden = await db.transaction(
        lambda s: objectives.create_objective(
            s,
            p,
            commands.CreateObjective(
                cycle_id=tree.obj_x.cycle_id,
                title="Cat's secret",
                team_id=tree.team_x.id,
                owner_id=cat.id,
                visibility=domain_enums.Visibility.PRIVATE,
            ),
        )
    )
    hidden_kr = await db.transaction(
        lambda s: key_results.create_key_result(
            s,
            p,
            commands.CreateKeyResult(
                objective_id=hidden.id,
                title="secret kr",
                type=domain_enums.KeyResultType.INCREASE,
                start_value=0,
                target_value=10,
            ),
        )
    )
    server = await replicas()
    a = await open_socket(server, org.token(ann.id), "graphql-transport-ws", "a-1")
    b = await open_socket(server, org.token(bob.id), "graphql-ws", "b-7")
    c = await open_socket(server, org.token(cat.id), "graphql-transport-ws", "c-3")
    try:
        for _ in range(50):
            if await subscribers_on(server) == 3:  # members, not broadcasts
                break
            await asyncio.sleep(0.1)
        assert await subscribers_on(server) == 3
        await check_in_on(server, org.admin_token, tree.gid("KeyResult", tree.kr_x), 7)
        await check_in_on(server, org.admin_token, ids.encode("KeyResult", hidden_kr.id), 3)
        (fa,) = await frames(a, 1)
        (fb,) = await frames(b, 1)
        fc = await frames(c, 2)
        assert fa["id"] == "a-1" and fa["type"] == "next"
        assert fb["id"] == "b-7" and fb["type"] == "data"
        assert fa["payload"] == fb["payload"]  # the same payload, envelopes apart
        assert fa["payload"]["data"]["progressChanged"]["checkIn"]["value"] == 7
        assert [f["payload"]["data"]["progressChanged"]["checkIn"]["value"] for f in fc] == [7, 3]
        # Ann and Bob never see Cat's private check-in: the next thing they get is the
        # next public one.
        await check_in_on(server, org.admin_token, tree.gid("KeyResult", tree.kr_x), 8)
        (fa,) = await frames(a, 1)
        (fb,) = await frames(b, 1)
        assert fa["payload"]["data"]["progressChanged"]["checkIn"]["value"] == 8
        assert fb["payload"] == fa["payload"]
        (fc,) = await frames(c, 1)
        assert fc["payload"] == fa["payload"]
        # Completing one operation leaves the others running.
        await a.send(json.dumps({"id": "a-1", "type": "complete"}))
        await b.send(json.dumps({"id": "b-7", "type": "stop"}))
        (done,) = await frames(b, 1)
        assert done == {"type": "complete", "id": "b-7"}
        await check_in_on(server, org.admin_token, tree.gid("KeyResult", tree.kr_x), 9)
        (fc,) = await frames(c, 1)
        assert fc["payload"]["data"]["progressChanged"]["checkIn"]["value"] == 9
        for _ in range(50):
            if await subscribers_on(server) == 1:
                break
            await asyncio.sleep(0.1)
        assert await subscribers_on(server) == 1
    finally:
        for ws in (a, b, c):
            await ws.close()


class Paused:
    """A socket whose transport paused writing until `resume()`: its send suspends."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.writable = asyncio.Event()

    async def send_text(self, frame: str) -> None:
        await self.writable.wait()
        self.sent.append(frame)


class Quick:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, frame: str) -> None:
        self.sent.append(frame)


async def test_a_slow_socket_ends_behind_with_its_cursor_and_delays_nobody():
    class Group:
        """What a member needs of its broadcast: the last event, and a way out."""

        last_seq: int | None = 0

        def __init__(self) -> None:
            self.members: set[Member] = set()

        def leave(self, member: Member) -> None:
            self.members.discard(member)

    group: Any = Group()
    slow, quick = Paused(), Quick()
    slow_outlet, quick_outlet = Outlet(slow.send_text, 3), Outlet(quick.send_text, 3)
    members = []
    for outlet, op in ((slow_outlet, "s"), (quick_outlet, "q")):
        member = Member(group, outlet, op, TRANSPORT_WS, Principal(1, "ADMIN", 1))
        group.members.add(member)
        outlet.members.add(member)
        members.append(member)
    for seq in range(1, 11):  # what a view hands its members, one payload per event
        payload = orjson.dumps({"data": {"n": seq}}).decode()
        for member in list(group.members):
            member.deliver(payload, seq)
    for member in list(group.members):
        member.end(complete=True)
    await asyncio.wait_for(members[1].done.wait(), 5)
    # The quick socket got all ten in order, then complete, with no task of its own.
    assert [orjson.loads(f).get("payload", {}).get("data") for f in quick.sent[:10]] == [
        {"n": n} for n in range(1, 11)
    ]
    assert orjson.loads(quick.sent[10]) == {"id": "q", "type": "complete"}
    assert quick_outlet.task is None
    # The slow one: one frame in flight, three queued, then it fell behind at 4.
    assert members[0].done.is_set() and slow.sent == []
    slow.writable.set()
    await slow_outlet.flush()
    got = [orjson.loads(f) for f in slow.sent]
    assert [g["payload"]["data"] for g in got[:4]] == [{"n": n} for n in range(1, 5)]
    error = got[4]["payload"]["errors"][0]
    assert error["extensions"] == {"code": "SUBSCRIBER_BEHIND", "cursor": ids.cursor(4)}
    assert got[5] == {"id": "s", "type": "complete"}
    assert len(got) == 6
    assert not group.members  # every member left
