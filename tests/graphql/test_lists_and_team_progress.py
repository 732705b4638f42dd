"""Issue 21, parts 3 and 4, through the GraphQL API: lists page both ways (Relay's
`last`/`before` beside `first`/`after`, with `hasPreviousPage`/`hasNextPage` true to the
data at both ends, keyset so that an insert between pages shifts nothing), and each
team's progress in a cycle (`Team.progress`, `Cycle.teams`) from what the caller may
see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from schema import context as context_module
from schema.ids import decode
from service.domain import rules
from service.settings import Settings
from tests.factories import JWT_SECRET, Org, check_in, key_result, objective, ok, team, user


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The result cache off: a read after the clock moves is read again.
    return Settings(
        jwt_secret=JWT_SECRET, data_dir=tmp_path, database_url=None, response_cache_seconds=0
    )


# --- lists both ways -------------------------------------------------------------------------

PAGE = "pageInfo { hasPreviousPage hasNextPage startCursor endCursor } edges { cursor node { %s } }"
WINDOW = "first: $first, after: $after, last: $last, before: $before"
VARS = "$first: Int, $after: String, $last: Int, $before: String"


def _conn(data: Any, path: list[str]) -> dict[str, Any]:
    for key in path:
        data = data[key]
    return data


async def _page(org: Org, query: str, path: list[str], variables: dict[str, Any], **window: Any):
    got = await org.call(query, {**variables, **window})
    conn = _conn(got, path)
    return conn["edges"], conn["pageInfo"]


async def walk_both_ways(
    org: Org, query: str, path: list[str], variables: dict[str, Any], size: int = 2
) -> list[str]:
    """Page forward then backward over a connection; every page's flags exact. Returns
    the cursors in the list's order."""
    forward: list[str] = []
    after = None
    pages = 0
    while True:
        edges, info = await _page(org, query, path, variables, first=size, after=after)
        pages += 1
        assert info["hasPreviousPage"] is (after is not None), (pages, info)
        forward += [e["cursor"] for e in edges]
        if edges:
            assert info["startCursor"] == edges[0]["cursor"]
            assert info["endCursor"] == edges[-1]["cursor"]
        if not info["hasNextPage"]:
            assert len(edges) <= size
            break
        assert len(edges) == size
        after = info["endCursor"]
    assert len(forward) > 2 * size, "the list is long enough to page through"
    assert len(set(forward)) == len(forward)
    # Past the end: nothing, a page before it, none after.
    edges, info = await _page(org, query, path, variables, first=size, after=forward[-1])
    assert edges == [] and info["hasPreviousPage"] and not info["hasNextPage"], info

    backward: list[str] = []
    before = None
    while True:
        edges, info = await _page(org, query, path, variables, last=size, before=before)
        assert info["hasNextPage"] is (before is not None), info
        backward = [e["cursor"] for e in edges] + backward
        if not info["hasPreviousPage"]:
            break
        assert len(edges) == size
        before = info["startCursor"]
    assert backward == forward
    # Before the start: nothing, a page after it, none before.
    edges, info = await _page(org, query, path, variables, last=size, before=forward[0])
    assert edges == [] and not info["hasPreviousPage"] and info["hasNextPage"], info
    if len(forward) < 5:
        return forward
    # A window in the middle, each way, agrees with the walk.
    edges, info = await _page(org, query, path, variables, first=2, after=forward[1])
    assert [e["cursor"] for e in edges] == forward[2:4]
    assert info["hasPreviousPage"] and info["hasNextPage"] is (len(forward) > 4)
    edges, info = await _page(org, query, path, variables, last=2, before=forward[4])
    assert [e["cursor"] for e in edges] == forward[2:4]
    assert info["hasPreviousPage"] and info["hasNextPage"]
    return forward


@pytest.fixture
async def lists(org: Org) -> SimpleNamespace:
    """A cycle, a team, a parent objective with 5 aligned children, 5 comments on it, a
    key result with 5 check-ins, a metric with 5 measurements; 3 more teams and cycles."""
    w = SimpleNamespace()
    w.team = await team(org, "Operations")
    for name in ("Sales", "Finance", "People", "Legal"):
        await team(org, name)
    q4 = {"name": "Q4", "startsOn": "2026-10-01", "endsOn": "2026-12-31"}
    w.cycle = (await ok(org, "createCycle", q4, "cycle { id }"))["cycle"]["id"]
    for n in range(4):
        await ok(org, "createCycle", {"name": f"C{n}", "startsOn": "2027-01-01",
                                      "endsOn": "2027-03-31"}, "cycle { id }")  # fmt: skip
    await ok(org, "setCycleStatus", {"cycleId": w.cycle, "status": "ACTIVE"}, "cycle { id }")
    w.parent = await objective(org, w.cycle, "Parent", teamId=w.team)
    for n in range(4):  # its history: created, then renamed four times
        await ok(org, "updateObjective", {"objectiveId": w.parent, "title": f"Parent {n}"}, "")
    w.children = [
        await objective(org, w.cycle, f"Child {i}", teamId=w.team, parentId=w.parent)
        for i in range(5)
    ]
    for i in range(5):
        await ok(org, "addComment", {"subjectId": w.parent, "body": f"c{i}"}, "comment { id }")
    w.kr = await key_result(org, w.parent)
    for v in range(5):
        await check_in(org, w.kr, 10 + v)
    await ok(org, "createMetric", {"key": "cost", "name": "Cost"}, "metric { id }")
    for d in range(5):
        at = (datetime(2026, 10, 1, tzinfo=UTC) + timedelta(days=d)).isoformat()
        await ok(
            org,
            "recordMeasurements",
            {"measurements": [{"metricKey": "cost", "value": d, "measuredAt": at}]},
            "",
        )
    return w


CONNECTIONS = {
    "objectives": (f"query({VARS}) {{ objectives({WINDOW}) {{ {PAGE % 'id'} }} }}", ["objectives"]),
    "teams": (f"query({VARS}) {{ teams({WINDOW}) {{ {PAGE % 'id'} }} }}", ["teams"]),
    "cycles": (f"query({VARS}) {{ cycles({WINDOW}) {{ {PAGE % 'id'} }} }}", ["cycles"]),
    "events": (f"query({VARS}) {{ events({WINDOW}) {{ {PAGE % 'kind'} }} }}", ["events"]),
    "metric measurements": (
        f'query({VARS}) {{ metric(key: "cost") {{ measurements({WINDOW}) {{ {PAGE % "value"} }} '
        "} }",
        ["metric", "measurements"],
    ),
    "children": (
        f"query({VARS}, $parent: ID!) {{ node(id: $parent) {{ ... on Objective {{ "
        f"children({WINDOW}) {{ {PAGE % 'id'} }} }} }} }}",
        ["node", "children"],
    ),
    "comments": (
        f"query({VARS}, $parent: ID!) {{ node(id: $parent) {{ ... on Objective {{ "
        f"comments({WINDOW}) {{ {PAGE % 'body'} }} }} }} }}",
        ["node", "comments"],
    ),
    "objective history": (
        f"query({VARS}, $parent: ID!) {{ node(id: $parent) {{ ... on Objective {{ "
        f"history({WINDOW}) {{ {PAGE % 'kind'} }} }} }} }}",
        ["node", "history"],
    ),
    "check-ins": (
        f"query({VARS}, $kr: ID!) {{ node(id: $kr) {{ ... on KeyResult {{ "
        f"checkIns({WINDOW}) {{ {PAGE % 'value'} }} }} }} }}",
        ["node", "checkIns"],
    ),
    "key result history": (
        f"query({VARS}, $kr: ID!) {{ node(id: $kr) {{ ... on KeyResult {{ "
        f"history({WINDOW}) {{ {PAGE % 'kind'} }} }} }} }}",
        ["node", "history"],
    ),
    "team objectives": (
        f"query({VARS}, $team: ID!, $cycle: ID!) {{ node(id: $team) {{ ... on Team {{ "
        f"objectives(cycleId: $cycle, {WINDOW}) {{ {PAGE % 'id'} }} }} }} }}",
        ["node", "objectives"],
    ),
}


@pytest.mark.parametrize("kind", list(CONNECTIONS))
async def test_every_connection_pages_both_ways(org: Org, lists: SimpleNamespace, kind: str):
    query, path = CONNECTIONS[kind]
    variables = {"parent": lists.parent, "kr": lists.kr, "team": lists.team, "cycle": lists.cycle}
    used = {k: v for k, v in variables.items() if f"${k}:" in query}
    size = 1 if "history" in kind else 2
    cursors = await walk_both_ways(org, query, path, used, size)
    if kind == "check-ins":  # newest first, whichever way it is read
        edges, _ = await _page(org, query, path, used, first=10)
        assert [e["node"]["value"] for e in edges] == [14, 13, 12, 11, 10]
        assert [e["cursor"] for e in edges] == cursors
        edges, _ = await _page(org, query, path, used, last=3)
        assert [e["node"]["value"] for e in edges] == [12, 11, 10]


async def test_pages_hold_still_under_inserts_between_them(org: Org, lists: SimpleNamespace):
    query, path = CONNECTIONS["objectives"]
    edges, info = await _page(org, query, path, {}, first=3)
    first_three = [e["node"]["id"] for e in edges]
    # An objective created between pages lands at the end (ids grow): page 2 goes on
    # from where page 1 ended, nothing twice, nothing skipped.
    late = await objective(org, lists.cycle, "Late", teamId=lists.team)
    edges, info = await _page(org, query, path, {}, first=100, after=info["endCursor"])
    rest = [e["node"]["id"] for e in edges]
    assert not set(first_three) & set(rest)
    assert rest[-1] == late and len(first_three) + len(rest) == 7
    # Backward: the last page, an insert, then the page before it is the one before.
    edges, info = await _page(org, query, path, {}, last=2)
    tail = [e["node"]["id"] for e in edges]
    assert tail[-1] == late and info["hasPreviousPage"] and not info["hasNextPage"]
    newer = await objective(org, lists.cycle, "Newer", teamId=lists.team)
    edges, _ = await _page(org, query, path, {}, last=2, before=info["startCursor"])
    assert [e["node"]["id"] for e in edges] == rest[-4:-2]
    # The insert is after this window: now there is a next page past `late`.
    edges, info = await _page(org, query, path, {}, last=1, before=None)
    assert [e["node"]["id"] for e in edges] == [newer]
    # Newest-first check-ins: a check-in made between pages goes on top, page 2 unmoved.
    ci_query, ci_path = CONNECTIONS["check-ins"]
    edges, info = await _page(org, ci_query, ci_path, {"kr": lists.kr}, first=2)
    assert [e["node"]["value"] for e in edges] == [14, 13]
    await check_in(org, lists.kr, 99)
    edges, info = await _page(org, ci_query, ci_path, {"kr": lists.kr}, first=2,
                              after=info["endCursor"])  # fmt: skip
    assert [e["node"]["value"] for e in edges] == [12, 11]
    assert info["hasPreviousPage"] and info["hasNextPage"]


async def _errors(org: Org, query: str, variables: dict[str, Any] | None = None) -> dict:
    return await org.call(query, variables or {}, expect_errors=True)


async def test_first_with_last_is_refused_before_anything_runs(org: Org, lists: SimpleNamespace):
    kr_pages = "checkIns(first: 1, last: 1) { edges { cursor } }"
    cycle_pages = "teams(first: 1, last: 1) { edges { cursor } }"
    for query in (
        "{ objectives(first: 2, last: 2) { edges { node { id } } } }",
        f'{{ node(id: "{lists.kr}") {{ ... on KeyResult {{ {kr_pages} }} }} }}',
        f'{{ node(id: "{lists.cycle}") {{ ... on Cycle {{ {cycle_pages} }} }} }}',
    ):
        body = await _errors(org, query)
        assert body.get("data") is None, body
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "first and last" in body["errors"][0]["message"]


async def test_last_has_the_bounds_and_the_price_of_first(
    org: Org, lists: SimpleNamespace, settings: Settings
):
    top = settings.max_page_size
    for bad in (top + 1, -1):
        body = await _errors(org, "query($n: Int) { objectives(last: $n) { edges { cursor } } }",
                             {"n": bad})  # fmt: skip
        assert body.get("data") is None, body
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert f"last must be between 0 and {top}" in body["errors"][0]["message"]
    costs = []
    for arg in ("first", "last"):
        query = f"{{ teams({arg}: 7) {{ edges {{ node {{ id children {{ id }} }} }} }} }}"
        response = await org.client.post(
            "/graphql", json={"query": query},
            headers={"Authorization": f"Bearer {org.admin_token}"},
        )  # fmt: skip
        costs.append(response.json()["extensions"]["cost"]["requestedQueryCost"])
    assert costs[0] == costs[1] > 7


async def test_paging_both_ways_at_once_or_a_bad_cursor_is_a_clear_error(
    org: Org, lists: SimpleNamespace
):
    _, info = await _page(org, *CONNECTIONS["objectives"], {}, first=2)
    cursor = info["endCursor"]
    for window in (f'last: 2, after: "{cursor}"', f'first: 2, before: "{cursor}"',
                   f'after: "{cursor}", before: "{cursor}"', 'last: 1, before: "zz"'):  # fmt: skip
        body = await _errors(org, f"{{ objectives({window}) {{ edges {{ cursor }} }} }}")
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body


# --- team progress ------------------------------------------------------------------------------


class Clock:
    """The reads' clock (the request's `now`), set by the test; writes keep the real one."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC) + timedelta(hours=1)

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(context_module, "clock", c)
    return c


PROGRESS = """
query($team: ID!, $cycle: ID!) {
  cycle: node(id: $cycle) { ... on Cycle { expectedProgress } }
  node(id: $team) { ... on Team { progress(cycleId: $cycle) {
    team { name } cycle { id } objectives progress expectedProgress
    byStatus { status count } stale
  } } }
}"""


@pytest.fixture
async def teams_world(org: Org, clock: Clock) -> SimpleNamespace:
    """Operations' top objectives: A (public, weight 1, 0.6: its key result 0.4 and its
    aligned child C 0.8), B (private, weight 3, 0.2), D (TEAM, weight 2, 1.0), F (public,
    weight 1, never checked in, aligned under a Sales objective: still top for
    Operations); C is under A (same team: not top); E is archived. Sales: S (public).
    Secret: one private objective. Risen: a child whose same-team parent is archived."""
    w = SimpleNamespace()
    today = datetime.now(UTC).date()
    w.starts, w.ends = today - timedelta(days=45), today + timedelta(days=45)
    w.cycle = (await ok(org, "createCycle", {"name": "Now", "startsOn": w.starts.isoformat(),
               "endsOn": w.ends.isoformat()}, "cycle { id }"))["cycle"]["id"]  # fmt: skip
    await ok(org, "setCycleStatus", {"cycleId": w.cycle, "status": "ACTIVE"}, "cycle { id }")
    w.ops = await team(org, "Operations")
    w.sales = await team(org, "Sales")
    w.secret = await team(org, "Secret")
    w.risen_team = await team(org, "Risen")
    w.empty = await team(org, "Empty")
    w.viewer = await user(org, "Vera Viewer", "VIEWER")
    w.viewer_token = org.token(decode(w.viewer)[1])

    async def with_kr(title: str, value: float | None, **extra: Any) -> str:
        o = await objective(org, w.cycle, title, **extra)
        kr = await key_result(org, o, f"KR {title}")
        if value is not None:
            await check_in(org, kr, value)
        return o

    w.s = await with_kr("S", 50, teamId=w.sales)
    w.a = await with_kr("A", 40, teamId=w.ops)
    w.c = await with_kr("C", 80, teamId=w.ops, parentId=w.a)
    w.b = await with_kr("B", 20, teamId=w.ops, weight=3, visibility="PRIVATE")
    w.d = await with_kr("D", 100, teamId=w.ops, weight=2, visibility="TEAM")
    w.f = await with_kr("F", None, teamId=w.ops, parentId=w.s)
    w.e = await with_kr("E", 100, teamId=w.ops)
    await ok(org, "archiveObjective", {"objectiveId": w.e}, "objective { id }")
    await with_kr("Hidden", 30, teamId=w.secret, visibility="PRIVATE")
    gone = await with_kr("Gone parent", 10, teamId=w.risen_team)
    await with_kr("Risen child", 70, teamId=w.risen_team, parentId=gone)
    await ok(org, "archiveObjective", {"objectiveId": gone}, "objective { id }")
    return w


async def _progress(org: Org, w: SimpleNamespace, team_id: str, token: str | None = None):
    got = await org.call(PROGRESS, {"team": team_id, "cycle": w.cycle}, token=token)
    return got["node"]["progress"], got["cycle"]["expectedProgress"]


def _counts(by_status: list[dict[str, Any]]) -> dict[str, int]:
    return {s["status"]: s["count"] for s in by_status}


async def test_team_progress_counts_what_the_caller_may_see(
    org: Org, teams_world: SimpleNamespace, clock: Clock
):
    w = teams_world
    admin, expected = await _progress(org, w, w.ops)
    # A 0.6 x1, B 0.2 x3, D 1.0 x2, F 0 x1; C (under A) and E (archived) left out.
    assert admin["objectives"] == 4
    assert admin["progress"] == pytest.approx((0.6 + 0.2 * 3 + 1.0 * 2 + 0) / 7)
    assert admin["expectedProgress"] == expected
    assert admin["expectedProgress"] == pytest.approx(
        rules.expected_progress(w.starts, w.ends, clock.at)
    )
    assert _counts(admin["byStatus"]) == {
        "ACHIEVED": 1, "NOT_STARTED": 1, "OFF_TRACK": 1, "ON_TRACK": 1,
    }  # fmt: skip
    assert [s["status"] for s in admin["byStatus"]] == sorted(_counts(admin["byStatus"]))
    assert admin["stale"] == 0
    assert admin["team"]["name"] == "Operations" and admin["cycle"]["id"] == w.cycle

    viewer, _ = await _progress(org, w, w.ops, w.viewer_token)
    # The viewer sees A and F only (B private, D a TEAM objective of a team not theirs).
    assert viewer["objectives"] == 2
    assert viewer["progress"] == pytest.approx(0.3)
    assert _counts(viewer["byStatus"]) == {"NOT_STARTED": 1, "ON_TRACK": 1}

    # Ten days on, every top objective with a key result has gone unchecked too long.
    clock.at += timedelta(days=10)
    admin, _ = await _progress(org, w, w.ops)
    viewer, _ = await _progress(org, w, w.ops, w.viewer_token)
    assert (admin["stale"], viewer["stale"]) == (4, 2)


async def test_team_progress_is_null_with_nothing_to_count(org: Org, teams_world: SimpleNamespace):
    w = teams_world
    empty, _ = await _progress(org, w, w.empty)
    assert (empty["objectives"], empty["progress"], empty["byStatus"], empty["stale"]) == (
        0, None, [], 0,
    )  # fmt: skip
    hidden, _ = await _progress(org, w, w.secret, w.viewer_token)
    assert (hidden["objectives"], hidden["progress"]) == (0, None)
    shown, _ = await _progress(org, w, w.secret)
    assert (shown["objectives"], shown["progress"]) == (1, pytest.approx(0.3))
    # A child whose same-team parent is archived rises to the top (it is not lost).
    risen, _ = await _progress(org, w, w.risen_team)
    assert (risen["objectives"], risen["progress"]) == (1, pytest.approx(0.7))


async def test_team_progress_refuses_a_cycle_it_cannot_find(org: Org, teams_world: SimpleNamespace):
    w = teams_world
    body = await _errors(org, PROGRESS, {"team": w.ops, "cycle": w.ops})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
    from schema.ids import encode

    body = await _errors(org, PROGRESS, {"team": w.ops, "cycle": encode("Cycle", 10**9)})
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND", body


CYCLE_TEAMS = f"""
query($cycle: ID!, {VARS}) {{ node(id: $cycle) {{ ... on Cycle {{
  teams({WINDOW}) {{ totalCount
    pageInfo {{ hasPreviousPage hasNextPage startCursor endCursor }}
    edges {{ cursor node {{ team {{ id name }} objectives progress stale }} }}
  }} }} }} }}"""


async def test_cycle_teams_by_name_both_ways(org: Org, teams_world: SimpleNamespace):
    w = teams_world
    got = await org.call(CYCLE_TEAMS, {"cycle": w.cycle, "first": 10})
    teams = got["node"]["teams"]
    names = [e["node"]["team"]["name"] for e in teams["edges"]]
    # Empty has no objective; created in another order than their names sort.
    assert names == ["Operations", "Risen", "Sales", "Secret"]
    assert teams["totalCount"] == 4
    ops = teams["edges"][0]["node"]
    single, _ = await _progress(org, w, w.ops)
    assert (ops["objectives"], ops["progress"]) == (single["objectives"], single["progress"])

    seen = await org.call(CYCLE_TEAMS, {"cycle": w.cycle, "first": 10}, token=w.viewer_token)
    assert [e["node"]["team"]["name"] for e in seen["node"]["teams"]["edges"]] == [
        "Operations", "Risen", "Sales",
    ]  # fmt: skip
    assert seen["node"]["teams"]["totalCount"] == 3

    cursors = await walk_both_ways(org, CYCLE_TEAMS, ["node", "teams"], {"cycle": w.cycle}, 1)
    assert cursors == [e["cursor"] for e in teams["edges"]]
    # A team added between pages, named to sort before the cursor: the next page is
    # unmoved, and the new team is found paging back.
    edges, info = await _page(org, CYCLE_TEAMS, ["node", "teams"], {"cycle": w.cycle}, first=2)
    early = await team(org, "Aardvark")
    await objective(org, w.cycle, "Early", teamId=early)
    edges, _ = await _page(
        org, CYCLE_TEAMS, ["node", "teams"], {"cycle": w.cycle}, first=2, after=info["endCursor"]
    )
    assert [e["node"]["team"]["name"] for e in edges] == ["Sales", "Secret"]
    edges, info3 = await _page(
        org, CYCLE_TEAMS, ["node", "teams"], {"cycle": w.cycle}, last=5, before=edges[0]["cursor"]
    )
    assert [e["node"]["team"]["name"] for e in edges] == ["Aardvark", "Operations", "Risen"]
    assert not info3["hasPreviousPage"] and info3["hasNextPage"]
