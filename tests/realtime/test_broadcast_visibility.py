"""Shared subscription streams deliver to each subscriber exactly what the one visibility
rule lets that subscriber see at the moment of each event (issue 19, item 1).

Found from outside: subscriptions with the same document and "visibility class" shared
one execution that ran as its first subscriber, and the class was decided once, from a
five-second cache of who owns hidden objectives. Member A subscribed, then became the
owner of a PRIVATE objective; member B, of the same role and teams, subscribed to the
same document, received that objective's events live: title, check-in notes.

Each test drives a real server with raw WebSocket clients of both subprotocols, the two
members subscribed to the same documents (the whole change feed and the progress feed),
and makes the change while they are subscribed. After every secret write a PUBLIC
check-in is made as a marker: once B has the marker on both feeds, anything secret
would have come before it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from schema import ids
from tests.factories import Org, active_cycle, check_in, key_result, objective, ok, team, user
from tests.sockets import Socket

PROTOCOLS = ["graphql-transport-ws", "graphql-ws"]

CHANGES = """subscription { changes {
    sequence kind subject { id ... on Objective { title description } }
    checkIn { note keyResult { title objective { title } } } } }"""
PROGRESS = """subscription { progressChanged {
    cursor checkIn { note } changes { node { id ... on Objective { title } } } } }"""


class World:
    def __init__(self, org: Org) -> None:
        self.org = org

    async def build(self) -> World:
        org = self.org
        self.cycle = await active_cycle(org)
        self.team = await team(org, "Dispatch")
        self.a = await user(org, "Ann Member")
        self.b = await user(org, "Bob Member")
        for member in (self.a, self.b):
            await ok(org, "addTeamMember", {"teamId": self.team, "userId": member}, "team { id }")
        self.public = await objective(org, self.cycle, "Public dispatch", teamId=self.team)
        self.public_kr = await key_result(org, self.public, "Public KR")
        self.marks = 0
        return self

    def token(self, gid: str) -> str:
        return self.org.token(ids.decode_as(gid, "User"))

    async def give(self, objective_id: str, owner: str | None = None) -> None:
        """Make `owner` (the admin when None) the objective's owner."""
        owner = owner or ids.encode("User", self.org.admin_id)
        await ok(
            self.org,
            "updateObjective",
            {"objectiveId": objective_id, "ownerId": owner},
            "objective { id }",
        )

    async def mark(self) -> str:
        """A PUBLIC check-in whose note both members must see."""
        self.marks += 1
        note = f"marker {self.marks}"
        await check_in(self.org, self.public_kr, self.marks, note=note)
        return note


@pytest.fixture
async def world(org: Org) -> World:
    return await World(org).build()


async def subscribed(server_: Any, token: str, protocol: str) -> Socket:
    socket = await Socket.open(server_, token, protocol)
    await socket.subscribe("changes", CHANGES)
    await socket.subscribe("progress", PROGRESS)
    return socket


async def until(socket: Socket, note: str) -> list[dict]:
    """Everything both operations receive up to `note` on each of them."""
    got: list[dict] = []
    for op in ("changes", "progress"):
        while True:
            result = await socket.next(op)
            assert "data" in result and not result.get("errors"), result
            got.append(result["data"])
            if note in json.dumps(result["data"]):
                break
    return got


async def settle() -> None:
    await asyncio.sleep(0.4)  # the subscriptions are followed before anything is written


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_member_who_becomes_an_owner_takes_nothing_to_the_others(
    world: World,
    server: Any,
    protocol: str,
):
    org = world.org
    a = await subscribed(server, world.token(world.a), protocol)
    b = await subscribed(server, world.token(world.b), protocol)
    try:
        await settle()
        # A creates a PRIVATE objective (owned by its creator) while both are subscribed.
        secret = await objective(
            org,
            world.cycle,
            "Secret title",
            description="secret description",
            visibility="PRIVATE",
            teamId=world.team,
            token=world.token(world.a),
        )
        kr = (
            await ok(
                org,
                "createKeyResult",
                {
                    "objectiveId": secret,
                    "title": "Secret KR",
                    "type": "INCREASE",
                    "startValue": 0,
                    "targetValue": 10,
                },
                "keyResult { id }",
                token=world.token(world.a),
            )
        )["keyResult"]["id"]
        await check_in(org, kr, 4, note="secret note", token=world.token(world.a))
        marker = await world.mark()
        seen_by_b = json.dumps(await until(b, marker))
        assert "ecret" not in seen_by_b and secret not in seen_by_b
        seen_by_a = json.dumps(await until(a, marker))
        assert "Secret title" in seen_by_a and "secret note" in seen_by_a
        # A third member of the same class, subscribed after A owns the objective.
        c_id = await user(org, "Cat Member")
        await ok(org, "addTeamMember", {"teamId": world.team, "userId": c_id}, "team { id }")
        c = await subscribed(server, world.token(c_id), protocol)
        try:
            await settle()
            await check_in(org, kr, 5, note="secret again", token=world.token(world.a))
            marker = await world.mark()
            for other in (b, c):
                assert "ecret" not in json.dumps(await until(other, marker))
            assert "secret again" in json.dumps(await until(a, marker))
        finally:
            await c.close()
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_member_made_owner_while_subscribed_sees_it_and_nobody_else_does(
    world: World,
    server: Any,
    protocol: str,
):
    org = world.org
    secret = await objective(
        org, world.cycle, "Secret handover", visibility="PRIVATE", teamId=world.team
    )
    kr = await key_result(org, secret, "Secret KR")
    a = await subscribed(server, world.token(world.a), protocol)
    b = await subscribed(server, world.token(world.b), protocol)
    try:
        await settle()
        await check_in(org, kr, 1, note="secret before")
        marker = await world.mark()
        for socket in (a, b):  # neither owns it yet
            assert "ecret" not in json.dumps(await until(socket, marker))
        await world.give(secret, world.a)
        await check_in(org, kr, 2, note="secret after")
        marker = await world.mark()
        assert "ecret" not in json.dumps(await until(b, marker))
        assert "secret after" in json.dumps(await until(a, marker))
        # Given back to the admin: A no longer sees it either.
        await world.give(secret)
        await check_in(org, kr, 3, note="secret returned")
        marker = await world.mark()
        for socket in (a, b):
            assert "secret returned" not in json.dumps(await until(socket, marker))
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_visibility_change_while_subscribed_reaches_each_as_the_rule_says(
    world: World,
    server: Any,
    protocol: str,
):
    org = world.org
    owned = await objective(org, world.cycle, "Ann's plan", teamId=world.team, ownerId=world.a)
    kr = await key_result(org, owned, "Ann's KR")
    a = await subscribed(server, world.token(world.a), protocol)
    b = await subscribed(server, world.token(world.b), protocol)
    try:
        await settle()
        await check_in(org, kr, 1, note="open note")
        marker = await world.mark()
        for socket in (a, b):
            assert "open note" in json.dumps(await until(socket, marker))
        await ok(
            org,
            "updateObjective",
            {"objectiveId": owned, "visibility": "PRIVATE"},
            "objective { id }",
        )
        await check_in(org, kr, 2, note="secret closed note")
        marker = await world.mark()
        assert "secret closed note" not in json.dumps(await until(b, marker))
        assert "secret closed note" in json.dumps(await until(a, marker))
        await ok(
            org,
            "updateObjective",
            {"objectiveId": owned, "visibility": "PUBLIC"},
            "objective { id }",
        )
        await check_in(org, kr, 3, note="reopened note")
        marker = await world.mark()
        for socket in (a, b):
            assert "reopened note" in json.dumps(await until(socket, marker))
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_membership_added_while_subscribed_ends_the_socket_to_reconnect(
    world: World,
    server: Any,
    protocol: str,
):
    """Teams decide what a member sees: a socket whose user joined a team would go on
    with the old principal (and its broadcasts with the old class), so it is closed
    with a reason, as for a removed membership; reconnecting computes it afresh."""
    org = world.org
    other = await team(org, "Warehouse")
    hidden = await objective(org, world.cycle, "Warehouse only", visibility="TEAM", teamId=other)
    kr = await key_result(org, hidden, "Warehouse KR")
    b = await subscribed(server, world.token(world.b), protocol)
    try:
        await settle()
        await ok(org, "addTeamMember", {"teamId": other, "userId": world.b}, "team { id }")
        await asyncio.wait_for(b.ws.wait_closed(), 10)
        assert b.ws.close_code == 4403
        assert "credentials changed" in (b.ws.close_reason or "")
    finally:
        await b.close()
    b = await subscribed(server, world.token(world.b), protocol)
    try:
        await settle()
        await check_in(org, kr, 1, note="warehouse note")
        marker = await world.mark()
        assert "warehouse note" in json.dumps(await until(b, marker))
    finally:
        await b.close()


async def test_an_ownership_change_is_delivered_by_the_rule_on_every_replica(
    world: World, replicas: Any
):
    """Two replicas, each with both members subscribed: an ownership change made while
    they are subscribed reaches A on each replica and B on neither; given back, neither.
    No replica keeps a visibility decision that another's write changed."""
    org = world.org
    secret = await objective(
        org, world.cycle, "Secret handover", visibility="PRIVATE", teamId=world.team
    )
    kr = await key_result(org, secret, "Secret KR")
    first, second = await replicas(), await replicas()
    sockets = {
        (who, n): await subscribed(replica, world.token(member), "graphql-transport-ws")
        for n, replica in enumerate((first, second))
        for who, member in (("a", world.a), ("b", world.b))
    }
    try:
        await settle()
        await world.give(secret, world.a)
        await check_in(org, kr, 2, note="secret after")
        marker = await world.mark()
        for (who, n), socket in sockets.items():
            seen = json.dumps(await until(socket, marker))
            assert ("secret after" in seen) == (who == "a"), (who, n)
            if who == "b":
                assert "ecret" not in seen, n
        await world.give(secret)
        await check_in(org, kr, 3, note="secret returned")
        marker = await world.mark()
        for (who, n), socket in sockets.items():
            assert "secret returned" not in json.dumps(await until(socket, marker)), (who, n)
    finally:
        for socket in sockets.values():
            await socket.close()
