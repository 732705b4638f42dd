"""Issue 10, items 1, 2, 12 and 14, attacked as they were found: through the API, as a
member of another team, a VIEWER and a SERVICE key, over HTTP and a real WebSocket.

Item 1: node(Event) and the relations reachable from an event honour visibility.
Item 2: one NULL-safe rule for objectives and events (service/reads/visibility.py),
  shared by the feed and its totalCount, node(Event), history and both subscriptions,
  over every subject type the outbox writes and objectives without an owner.
Item 12: an unexpected exception inside a subscription reaches the client masked.
Item 14: a shared stream honours an `after` given by a variable's default.
"""

from __future__ import annotations

import asyncio
import json
from itertools import product
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from schema import ids
from schema.api import build_schema
from schema.broadcast import broadcast_key
from service import events, models
from service.db import Database
from service.domain.enums import EventKind, SubjectType
from service.domain.principal import Principal
from service.reads.visibility import (
    ADMIN_ONLY_SUBJECTS,
    OBJECTIVE,
    OBJECTIVE_SUBJECTS,
    ORG_WIDE_SUBJECTS,
    can_see_objective,
    visible_events,
    visible_objectives,
)
from service.settings import Settings
from service.usecases import organizations
from tests.factories import (
    Org,
    World,
    Worlds,
    WorldTemplate,
    active_cycle,
    check_in,
    key_result,
    objective,
    ok,
    team,
    user,
)
from tests.sockets import Server, Socket

EVENT_TABLE = models.Event.__table__


# --- the world under attack ----------------------------------------------------------------


CALLERS = ["member_x", "member_y", "viewer", "service", "admin"]
OUTSIDERS = ["member_y", "viewer", "service"]  # none of them may see the TEAM objective


@pytest.fixture
def built(worlds: Worlds) -> WorldTemplate:
    return worlds.get()  # built once per worker, copied for each test


@pytest.fixture
def database_template(built: WorldTemplate) -> str:
    return built.name


@pytest.fixture
def org(client: httpx.AsyncClient, db: Database, built: WorldTemplate) -> Org:
    return built.org(client, db)


@pytest.fixture
def world(org: Org, db: Database, built: WorldTemplate) -> World:
    return built.world(org, db)


async def feed(org: Org, token: str) -> tuple[list[dict], int]:
    q = """query($after: String) { events(first: 7, after: $after) { totalCount
        edges { cursor node { id sequence kind } } pageInfo { hasNextPage endCursor } } }"""
    got: list[dict] = []
    after = None
    while True:
        page = (await org.call(q, {"after": after}, token=token))["events"]
        got += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return got, page["totalCount"]
        after = page["pageInfo"]["endCursor"]


# --- item 2: the feed --------------------------------------------------------------------------


async def test_item2_the_world_writes_every_subject_type_and_the_rule_names_each(world: World):
    written = {row.subject_type for row in await world.event_rows()}
    assert written >= {
        "Organization",
        "User",
        "Team",
        "Cycle",
        "ApiKey",
        "Objective",
        "KeyResult",
        "CheckIn",
        "Comment",
    }
    named = set(ORG_WIDE_SUBJECTS) | set(OBJECTIVE_SUBJECTS) | set(ADMIN_ONLY_SUBJECTS)
    assert written <= named, f"decide who may read {written - named}"


def test_item2_every_subject_type_the_outbox_writes_has_a_reader_rule():
    """The outbox writes only `SubjectType`s (every `events.Event` is typed so), and the
    rule decides on each (a new one would otherwise be admin-only without anyone having
    chosen so)."""
    import typing

    hints = typing.get_type_hints(events.Event)
    assert hints["subject_type"] is SubjectType
    written = {str(s) for s in SubjectType}
    assert {"Objective", "KeyResult", "Comment", "ApiKey", "Team", "User"} <= written
    named = set(ORG_WIDE_SUBJECTS) | set(OBJECTIVE_SUBJECTS) | set(ADMIN_ONLY_SUBJECTS)
    unknown = written - named
    assert not unknown, f"decide in service/reads/visibility.py who may read {unknown}"


@pytest.mark.parametrize("caller", CALLERS)
async def test_item2_the_feed_and_its_total_count_follow_the_one_rule(world: World, caller: str):
    listed, total = await feed(world.org, world.tokens[caller])
    rows = {r.seq: r for r in await world.event_rows()}
    shown = [rows[e["sequence"]] for e in listed]
    # The leaks as found: events of objectives without an owner (and their check-ins and
    # comments) read by callers who may not see them; API key events read by anyone.
    about = {await world.objective_of(r) for r in shown if _about_objective(r)}
    assert not about & world.hidden_from(caller)
    if caller != "admin":
        assert not [r for r in shown if r.subject_type == "ApiKey"]
    expected = await world.expected(caller)
    assert [r.seq for r in shown] == expected
    assert total == len(expected)


def _about_objective(row: Any) -> bool:
    return row.subject_type in ("Objective", "KeyResult", "CheckIn", "Comment")


# --- item 1: node(Event) and what hangs off an event ------------------------------------------


@pytest.mark.parametrize("caller", CALLERS)
async def test_item1_node_of_an_event_is_null_when_its_subject_is_hidden(world: World, caller: str):
    rows = await world.event_rows()
    expected = set(await world.expected(caller))
    gids = [ids.encode("Event", r.id) for r in rows]
    got: list[Any] = []
    for start in range(0, len(gids), 50):
        q = "query($ids: [ID!]!) { nodes(ids: $ids) { ... on Event { sequence } } }"
        got += (await world.org.call(q, {"ids": gids[start : start + 50]}, world.tokens[caller]))[
            "nodes"
        ]
    for row, node in zip(rows, got, strict=True):
        if row.seq in expected:
            assert node == {"sequence": row.seq}
        else:
            assert node is None, (caller, row.subject_type, row.kind)


ATTACK = """query($id: ID!) { node(id: $id) { id ... on Event { kind
    subject { id }
    checkIn { note keyResult { title objective { title description } } }
    changes { node { id } progress } } } }"""


HIDDEN_WORDS = ("Team X secret", "the plan only X may read", "Admin private", "Ownerless")


@pytest.mark.parametrize("caller", OUTSIDERS)
async def test_item1_a_hidden_check_in_is_not_read_through_its_event(world: World, caller: str):
    hidden = world.hidden_from(caller)
    attacked = [
        r
        for r in await world.event_rows()
        if r.subject_type == "ApiKey"
        or (_about_objective(r) and await world.objective_of(r) in hidden)
    ]
    kinds = {r.kind for r in attacked}
    assert {"CHECK_IN", "COMMENT_ADDED", "OBJECTIVE_UPDATED", "API_KEY_CREATED"} <= kinds
    for row in attacked:
        body = await world.org.call(
            ATTACK, {"id": ids.encode("Event", row.id)}, world.tokens[caller], expect_errors=True
        )
        assert "errors" not in body and body["data"] == {"node": None}, (row.kind, body)
    # The same attack as a member of team X reads what that member may read.
    team_kr = world.pk(world.krs["team_goal"])
    row = next(r for r in attacked if r.kind == "CHECK_IN" and r.subject_id == team_kr)
    got = await world.org.call(
        ATTACK, {"id": ids.encode("Event", row.id)}, world.tokens["member_x"]
    )
    assert got["node"]["checkIn"]["note"] == "note about team_goal"
    assert got["node"]["checkIn"]["keyResult"]["objective"]["title"] == "Team X secret plan v2"


@pytest.mark.parametrize("caller", OUTSIDERS)
async def test_item1_a_visible_event_shows_no_hidden_objective_through_its_relations(
    world: World, caller: str
):
    """The public child's check-in climbs into the hidden TEAM objective: the event is
    listed, the hidden change is dropped, and no relation reaches the hidden parent."""
    child_kr = world.pk(world.krs["child"])
    row = next(
        r for r in await world.event_rows() if r.kind == "CHECK_IN" and r.subject_id == child_kr
    )
    q = """query($id: ID!) { node(id: $id) { ... on Event {
        subject { id ... on KeyResult { objective { id title parent { id } } } }
        checkIn { note keyResult { objective { id parent { id } ancestors { id } } } }
        changes { node { id } } } } }"""
    node = (await world.org.call(q, {"id": ids.encode("Event", row.id)}, world.tokens[caller]))[
        "node"
    ]
    text_ = json.dumps(node)
    assert world.team_goal not in text_
    assert not any(word in text_ for word in HIDDEN_WORDS)
    assert node["checkIn"]["keyResult"]["objective"] == {
        "id": world.child,
        "parent": None,
        "ancestors": [],
    }
    assert [c["node"]["id"] for c in node["changes"]] == [world.krs["child"], world.child]


@pytest.mark.parametrize("caller", CALLERS)
async def test_item2_history_uses_the_same_rule(world: World, caller: str):
    q = """query($id: ID!) { node(id: $id) {
        ... on Objective { history(first: 100) { totalCount edges { node { sequence } } } }
        ... on KeyResult { history(first: 100) { totalCount edges { node { sequence } } } } } }"""
    expected = set(await world.expected(caller))
    rows = await world.event_rows()
    for gid in (world.public, world.child, world.krs["public"], world.team_goal):
        type_name, pk = ids.decode(gid)
        node = (await world.org.call(q, {"id": gid}, world.tokens[caller]))["node"]
        if pk in world.hidden_from(caller) and type_name == "Objective":
            assert node is None
            continue
        want = sorted(
            (r.seq for r in rows if r.subject_type == type_name and r.subject_id == pk),
            reverse=True,
        )
        assert [e["node"]["sequence"] for e in node["history"]["edges"]] == want
        assert set(want) <= expected and node["history"]["totalCount"] == len(want)


# --- item 2: the predicates themselves ---------------------------------------------------------


async def test_item2_the_sql_rule_and_its_python_twin_agree_and_never_yield_null(
    world: World, db: Database
):
    org = world.org
    teams = [None, world.pk(world.team_x), world.pk(world.team_y)]
    owners = [None, world.pk(world.mx), org.admin_id]
    cycle = world.pk(world.cycle)

    async def add(s):
        for n, (visibility, team_id, owner_id) in enumerate(
            product(("PUBLIC", "TEAM", "PRIVATE"), teams, owners)
        ):
            s.add(
                models.Objective(
                    organization_id=org.id,
                    cycle_id=cycle,
                    title=f"combo {n}",
                    visibility=visibility,
                    team_id=team_id,
                    owner_id=owner_id,
                )
            )

    await db.transaction(add)
    principals = [
        org.admin,
        Principal(org.id, "MEMBER", world.pk(world.mx), team_ids=frozenset({teams[1]})),
        Principal(org.id, "MEMBER", world.pk(world.my), team_ids=frozenset({teams[2]})),
        Principal(org.id, "MEMBER", world.pk(world.my)),  # in no team
        Principal(org.id, "VIEWER", world.pk(world.viewer)),
        Principal(org.id, "SERVICE", api_key_id=1),
    ]
    async with db.connect() as conn:
        rows = (
            await conn.execute(select(OBJECTIVE).where(OBJECTIVE.c.organization_id == org.id))
        ).all()
        for p in principals:
            in_sql = {
                r[0]
                for r in await conn.execute(
                    select(OBJECTIVE.c.id).where(
                        OBJECTIVE.c.organization_id == org.id, visible_objectives(p)
                    )
                )
            }
            in_python = {
                r.id for r in rows if can_see_objective(p, r.visibility, r.team_id, r.owner_id)
            }
            assert in_sql == in_python, p
            for predicate, table in (
                (visible_objectives(p), OBJECTIVE),
                (visible_events(p), EVENT_TABLE),
            ):
                nulls = await conn.execute(
                    select(func.count()).select_from(table).where(predicate.is_(None))
                )
                assert nulls.scalar_one() == 0, p
        # The leak as found: an ownerless TEAM objective of X, read by a member of Y.
        member_y = principals[2]
        ownerless = world.pk(world.team_goal)
        assert ownerless not in {
            r[0]
            for r in await conn.execute(select(OBJECTIVE.c.id).where(visible_objectives(member_y)))
        }


# --- subscriptions over a real WebSocket --------------------------------------------------


CHANGES = """subscription($after: String) { changes(after: $after) {
    sequence kind subject { id } checkIn { note keyResult { objective { title } } } } }"""
PROGRESS = """subscription($after: String) { progressChanged(after: $after) {
    cursor checkIn { note } changes { node { id } } } }"""


async def test_item2_subscriptions_replay_and_stream_by_the_same_rule(world: World, server: Server):
    """Each outsider replays the whole feed through `changes` and `progressChanged`, then
    gets live events: exactly what the feed shows them, and nothing else."""
    rows = await world.event_rows()
    with_changes = {r.seq for r in rows if r.payload.get("changes")}
    sockets = {c: await Socket.open(server, world.tokens[c]) for c in [*OUTSIDERS, "member_x"]}
    try:
        expected = {c: await world.expected(c) for c in sockets}
        for socket in sockets.values():
            await socket.subscribe("changes", CHANGES, {"after": ids.cursor(0)})
            await socket.subscribe("progress", PROGRESS, {"after": ids.cursor(0)})
            await socket.subscribe("live", CHANGES)  # shared by nobody else: own caller
        for caller, socket in sockets.items():
            got = [await socket.next("changes") for _ in expected[caller]]
            assert [g["data"]["changes"]["sequence"] for g in got] == expected[caller], caller
            progress = [s for s in expected[caller] if s in with_changes]
            got = [await socket.next("progress") for _ in progress]
            assert [ids.uncursor(g["data"]["progressChanged"]["cursor"]) for g in got] == progress
            if caller != "member_x":
                assert not any(word in json.dumps(got) for word in HIDDEN_WORDS)
                assert "note about team_goal" not in json.dumps(got)
        # Live: hidden writes first, one org-wide and one public write last.
        org = world.org
        await world.db.transaction(lambda s: organizations.create_api_key(s, org.id, "later"))
        await check_in(org, world.krs["team_goal"], 70, note="live team secret")
        await check_in(org, world.krs["orphan"], 80, note="live orphan secret")
        await ok(org, "addComment", {"subjectId": world.private, "body": "live"}, "comment { id }")
        await team(org, "Z")
        await check_in(org, world.krs["public"], 90, note="live public")
        for caller, socket in sockets.items():
            live = [(await socket.next("live"))["data"]["changes"] for _ in range(2)]
            if caller == "member_x":
                assert live[0]["checkIn"]["note"] == "live team secret"
                continue
            assert [e["kind"] for e in live] == ["TEAM_CREATED", "CHECK_IN"], caller
            assert live[1]["checkIn"]["note"] == "live public"
            replayed_then_live = [
                (await socket.next("changes"))["data"]["changes"] for _ in range(2)
            ]
            assert replayed_then_live == live
            progress = (await socket.next("progress"))["data"]["progressChanged"]
            assert progress["checkIn"]["note"] == "live public"
        await asyncio.sleep(1)
        for caller in OUTSIDERS:
            for op in ("live", "changes", "progress"):
                assert sockets[caller].idle(op), (caller, op)
    finally:
        for socket in sockets.values():
            await socket.close()


# --- item 12: unexpected errors in a subscription are masked ----------------------------------


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_item12_an_unexpected_error_in_a_subscription_is_masked(
    org: Org, db: Database, server: Server, protocol: str
):
    cycle = await active_cycle(org)
    goal = await objective(org, cycle, "Goal")
    pk = ids.decode_as(goal, "Objective")
    socket = await Socket.open(server, org.admin_token, protocol)
    try:
        query = (
            "subscription($after: String) { progressChanged(after: $after) "
            "{ cursor changes { node { id } progress } } }"
        )
        await socket.subscribe("shared", query)
        await socket.subscribe("own", query, {"after": ids.cursor(1)})
        await asyncio.sleep(0.5)
        # A malformed change in the outbox (no "previous"): the resolver raises KeyError.
        await db.transaction(
            lambda s: events.record(
                s,
                org.admin,
                org.id,
                events.Event(
                    EventKind.OBJECTIVE_UPDATED,
                    SubjectType.OBJECTIVE,
                    pk,
                    {"changes": [{"type": "Objective", "id": pk, "progress": 0.5}]},
                ),
            )
        )
        ops = ["shared", "own"]
        if protocol == "graphql-transport-ws":  # the legacy protocol runs subscriptions only
            # A query over the same socket that reads the bad event: masked as well.
            await socket.subscribe(
                "query", "{ events(first: 100) { edges { node { changes { progress } } } } }"
            )
            ops.append("query")
        else:  # what the caller can fix is not masked: a query where only subscriptions run
            await socket.subscribe("query", "{ viewer { role } }")
            (error,) = (await socket.next("query"))["errors"]
            assert error["message"].startswith("queries are not allowed"), error
        for op in ops:
            got = await socket.next(op)
            while not got.get("errors"):
                got = await socket.next(op)  # replayed events before the bad one
            assert len(got["errors"]) == 1, got
            (error,) = got["errors"]
            assert error["message"] == "Internal server error", error
            assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
            request_id = error["extensions"]["requestId"]
            assert request_id and "previous" not in json.dumps(got)
    finally:
        await socket.close()
    await asyncio.sleep(0.3)
    log = server.log.read_text()
    assert f"unexpected error (request {request_id})" in log
    assert "Traceback" in log and "KeyError: 'previous'" in log


# --- item 14: an `after` from a variable's default is honoured by shared streams -----------------


async def test_item14_identical_subscriptions_with_a_defaulted_after_each_get_their_replay(
    world: World, server: Server
):
    org = world.org
    kr = world.krs["public"]
    start = (await world.event_rows())[-1].seq
    for value in (11, 22):
        await check_in(org, kr, value, note=f"missed {value}")
    query = (
        f'subscription($a: String = "{ids.cursor(start)}") {{ progressChanged(after: $a) '
        "{ cursor checkIn { value } } }"
    )
    first = await Socket.open(server, org.admin_token)
    second = await Socket.open(server, org.admin_token)
    try:
        await first.subscribe("1", query)
        replay = [(await first.next("1"))["data"]["progressChanged"] for _ in range(2)]
        assert [r["checkIn"]["value"] for r in replay] == [11, 22]
        await second.subscribe("1", query)  # the same document, the same (no) variables
        again = [(await second.next("1"))["data"]["progressChanged"] for _ in range(2)]
        assert again == replay
        await check_in(org, kr, 33)
        for socket in (first, second):
            live = (await socket.next("1"))["data"]["progressChanged"]
            assert live["checkIn"]["value"] == 33
    finally:
        await first.close()
        await second.close()


def test_item14_sharing_is_decided_from_the_parsed_document_and_coerced_variables(
    settings: Settings,
):
    schema = build_schema(settings)
    admin = Principal(1, "ADMIN", 1)

    def key(query: str, variables: dict | None = None, name: str | None = None) -> Any:
        return broadcast_key(schema, query, variables, name, admin)

    plain = "subscription { progressChanged { cursor } }"
    assert key(plain) is not None
    assert key(plain) == key(plain)
    assert key("query { viewer { role } }") is None
    defaulted = 'subscription($a: String = "MQ") { progressChanged(after: $a) { cursor } }'
    assert key(defaulted) is None  # the bug: the default is a replay
    assert key(defaulted, {"a": None}) is not None  # explicitly none: no replay
    assert key('subscription { progressChanged(after: "MQ") { cursor } }') is None
    assert (
        key("subscription($x: String) { progressChanged(after: $x) { cursor } }", {"x": "MQ"})
        is None
    )
    spread = (
        'subscription S { ...F } fragment F on Subscription { progressChanged(after: "MQ") '
        "{ cursor } }"
    )
    assert key(spread, None, "S") is None
    aliased = (
        'subscription($a: String = "MQ") { p: progressChanged(objectiveId: null, after: $a) '
        "{ cursor } } # subscription"
    )
    assert key(aliased) is None
    two = "subscription A { progressChanged { cursor } } subscription B { changes { sequence } }"
    assert key(two, None, "B") is not None and key(two, None, "A") != key(two, None, "B")
    assert key(two) is None  # which one? execution says; it is not shared


async def test_progress_that_rolls_up_from_a_hidden_child_reaches_the_visible_parent(
    org: Org, server: Server
):
    """Found from outside: a viewer watching a PUBLIC root got nothing when a check-in on
    a PRIVATE child's key result moved the root, and live dashboards drifted. The event
    comes, with the visible part of the chain only, and neither its cause nor its author."""
    cycle = await active_cycle(org)
    root = await objective(org, cycle, "Public root")
    hidden = await objective(
        org, cycle, "Private child secret", visibility="PRIVATE", parentId=root
    )
    kr = await key_result(org, hidden, "Private KR secret")
    viewer = org.token(ids.decode_as(await user(org, "Vera Viewer", "VIEWER"), "User"))
    socket = await Socket.open(server, viewer)
    try:
        await socket.subscribe(
            "1",
            """subscription($o: ID) { progressChanged(objectiveId: $o) {
                actor { name } checkIn { note } changes { node { id } progress } } }""",
            {"o": root},
        )
        await asyncio.sleep(0.3)
        await check_in(org, kr, 50, note="secret note")
        got = (await socket.next("1"))["data"]["progressChanged"]
        assert got["actor"] is None and got["checkIn"] is None
        assert [c["node"]["id"] for c in got["changes"]] == [root]
        assert got["changes"][0]["progress"] == pytest.approx(0.5)
        assert "secret" not in json.dumps(got)
    finally:
        await socket.close()


async def test_a_hidden_parent_is_no_filter_to_tell_it_exists(org: Org):
    """Found from outside: `objectives(filter: {parentId: <hidden>})` listed its visible
    children, while an id that names nothing listed none: an existence oracle."""
    cycle = await active_cycle(org)
    hidden = await objective(org, cycle, "Private parent", visibility="PRIVATE")
    await objective(org, cycle, "Public child", parentId=hidden)
    viewer = org.token(ids.decode_as(await user(org, "Vlad Viewer", "VIEWER"), "User"))
    query = """query($p: ID) { objectives(filter: {parentId: $p}) { totalCount
        edges { node { title } } } }"""
    for parent in (hidden, ids.encode("Objective", 10**6)):
        got = (await org.call(query, {"p": parent}, token=viewer))["objectives"]
        assert got == {"totalCount": 0, "edges": []}
    mine = (await org.call(query, {"p": hidden}))["objectives"]  # the admin sees both
    assert [e["node"]["title"] for e in mine["edges"]] == ["Public child"]
