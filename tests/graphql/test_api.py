"""The GraphQL contract (schema/schema.graphql and the README), end to end through HTTP,
against a real database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.verify import verify, verify_event_sequences
from tests import factories as h
from tests.factories import Org

OBJECTIVE_VIEW = """
query($id: ID!) { node(id: $id) { ... on Objective {
  progress status score version
  contributions { node { id } weight progress share }
  keyResults { id progress score status }
} } }
"""


async def assert_verified(org: Org) -> None:
    async with org.db.connect() as conn:
        checked, mismatches = await verify(conn)
        gaps = await verify_event_sequences(conn)
    assert checked > 0
    assert mismatches == [] and gaps == []


async def test_progress_rolls_up_with_weights_and_archiving(org: Org):
    cycle = await h.active_cycle(org)
    root = await h.objective(org, cycle, "Reduce distribution costs by 15%")
    kr1 = await h.key_result(org, root, "Orders per hour", "INCREASE", 0, 100)
    kr2 = await h.key_result(org, root, "Cost per order", "DECREASE", 4.20, 3.57, weight=3)
    child = await h.objective(org, cycle, "Packaging supplier", parentId=root, weight=2)
    kr3 = await h.key_result(org, child, "Supplier signed", "MILESTONE", None, None)

    await h.check_in(org, kr1, 50)
    assert await h.progress(org, root) == pytest.approx(0.5 / 6)
    result = await h.check_in(org, kr2, 3.885)
    assert result["keyResult"]["progress"] == pytest.approx(0.5)
    assert await h.progress(org, root) == pytest.approx(2.0 / 6)
    await h.check_in(org, kr3, 1)
    assert await h.progress(org, child) == 1.0
    assert await h.progress(org, root) == pytest.approx(4.0 / 6)

    view = (await org.call(OBJECTIVE_VIEW, {"id": root}))["node"]
    shares = {c["node"]["id"]: (c["weight"], c["share"]) for c in view["contributions"]}
    assert shares == {
        kr1: (1.0, pytest.approx(1 / 6)),
        kr2: (3.0, pytest.approx(3 / 6)),
        child: (2.0, pytest.approx(2 / 6)),
    }

    await h.ok(org, "archiveObjective", {"objectiveId": child}, "objective { archivedAt }")
    assert await h.progress(org, root) == pytest.approx(2.0 / 4)
    view = (await org.call(OBJECTIVE_VIEW, {"id": root}))["node"]
    assert {c["node"]["id"] for c in view["contributions"]} == {kr1, kr2}

    # Weight 0 aligns without contributing.
    zero = await h.objective(org, cycle, "Aligned, not counted", parentId=root, weight=0)
    kr4 = await h.key_result(org, zero)
    await h.check_in(org, kr4, 100)
    assert await h.progress(org, root) == pytest.approx(2.0 / 4)
    await assert_verified(org)


async def test_status_and_not_started(org: Org):
    cycle = await h.active_cycle(org, "2020-01-01", "2020-03-31", status="ACTIVE")
    obj = await h.objective(org, cycle, "Past cycle")
    kr = await h.key_result(org, obj)
    view = (await org.call(OBJECTIVE_VIEW, {"id": obj}))["node"]
    assert view["status"] == "NOT_STARTED"
    await h.check_in(org, kr, 95)  # expected progress is 1 (the cycle is over): gap 0.05
    view = (await org.call(OBJECTIVE_VIEW, {"id": obj}))["node"]
    assert view["status"] == "ON_TRACK"
    await h.check_in(org, kr, 80)  # gap 0.20
    assert (await org.call(OBJECTIVE_VIEW, {"id": obj}))["node"]["status"] == "AT_RISK"
    await h.check_in(org, kr, 50)  # gap 0.50
    assert (await org.call(OBJECTIVE_VIEW, {"id": obj}))["node"]["status"] == "OFF_TRACK"
    await h.check_in(org, kr, 100)
    assert (await org.call(OBJECTIVE_VIEW, {"id": obj}))["node"]["status"] == "ACHIEVED"


async def test_idempotent_check_in_writes_once(org: Org):
    cycle = await h.active_cycle(org)
    kr = await h.key_result(org, await h.objective(org, cycle, "O"))
    first = await h.check_in(org, kr, 10, idempotencyKey="logistics-2026-11-24")
    again = await h.check_in(org, kr, 10, idempotencyKey="logistics-2026-11-24")
    assert again["checkIn"] == first["checkIn"]
    q = (
        "query($id: ID!) { node(id: $id) { ... on KeyResult { currentValue "
        "checkIns { totalCount } } } }"
    )
    node = (await org.call(q, {"id": kr}))["node"]
    assert node == {"currentValue": 10.0, "checkIns": {"totalCount": 1}}
    events = (await org.call("{ events(first: 100) { edges { node { kind } } } }"))["events"]
    kinds = [e["node"]["kind"] for e in events["edges"]]
    assert kinds.count("CHECK_IN") == 1


async def test_expected_version_conflict(org: Org):
    cycle = await h.active_cycle(org)
    obj = await h.objective(org, cycle, "Original")
    p = await h.ok(
        org,
        "updateObjective",
        {"objectiveId": obj, "expectedVersion": 1, "title": "Renamed"},
        "objective { title version }",
    )
    assert p["objective"] == {"title": "Renamed", "version": 2}
    stale = await h.mutate(
        org,
        "updateObjective",
        {"objectiveId": obj, "expectedVersion": 1, "title": "Lost"},
        "objective { title }",
    )
    assert stale["objective"] is None
    assert stale["userErrors"][0]["code"] == "CONFLICT"
    assert stale["userErrors"][0]["field"] == ["expectedVersion"]
    q = "query($id: ID!) { node(id: $id) { ... on Objective { title version } } }"
    assert (await org.call(q, {"id": obj}))["node"] == {"title": "Renamed", "version": 2}
    # Leaving out a field keeps it; sending null for a nullable one clears it.
    await h.ok(
        org, "updateObjective", {"objectiveId": obj, "description": "Why"}, "objective { id }"
    )
    p = await h.ok(
        org,
        "updateObjective",
        {"objectiveId": obj, "description": None},
        "objective { title description }",
    )
    assert p["objective"] == {"title": "Renamed", "description": None}


async def test_cycle_lifecycle_review_scores_and_closed(org: Org):
    cycle = await h.active_cycle(org, status="PLANNING")
    obj = await h.objective(org, cycle, "Dispatch")
    kr1 = await h.key_result(org, obj, "Fill", "INCREASE", 0, 10)
    kr2 = await h.key_result(org, obj, "Waste", "DECREASE", 10, 0)
    early = await h.mutate(org, "checkIn", {"keyResultId": kr1, "value": 5}, "checkIn { id }")
    assert early["userErrors"][0]["code"] == "INVALID"

    await h.ok(org, "setCycleStatus", {"cycleId": cycle, "status": "ACTIVE"}, "cycle { id }")
    back = await h.mutate(
        org, "setCycleStatus", {"cycleId": cycle, "status": "PLANNING"}, "cycle { id }"
    )
    assert back["userErrors"][0]["code"] == "INVALID"
    await h.check_in(org, kr1, 8)
    await h.check_in(org, kr2, 6)
    too_soon = await h.mutate(
        org, "scoreKeyResult", {"keyResultId": kr1, "score": 0.5}, "keyResult { id }"
    )
    assert too_soon["userErrors"][0]["code"] == "INVALID"

    await h.ok(org, "setCycleStatus", {"cycleId": cycle, "status": "REVIEW"}, "cycle { status }")
    view = (await org.call(OBJECTIVE_VIEW, {"id": obj}))["node"]
    assert [k["score"] for k in view["keyResults"]] == [pytest.approx(0.8), pytest.approx(0.4)]
    assert view["score"] == pytest.approx(0.6)
    p = await h.ok(
        org,
        "scoreKeyResult",
        {"keyResultId": kr2, "score": 0.7, "reason": "the waste audit came late"},
        "keyResult { score scoreReason }",
    )
    assert p["keyResult"] == {"score": 0.7, "scoreReason": "the waste audit came late"}
    assert (await org.call(OBJECTIVE_VIEW, {"id": obj}))["node"]["score"] == pytest.approx(0.75)
    await h.check_in(org, kr1, 9)  # late numbers are still taken in REVIEW
    p = await h.ok(
        org,
        "reflectOnObjective",
        {"objectiveId": obj, "wentWell": "Cross-dock pilot", "lessons": "Start early"},
        "objective { reflection { wentWell challenges lessons } }",
    )
    assert p["objective"]["reflection"] == {
        "wentWell": "Cross-dock pilot",
        "challenges": None,
        "lessons": "Start early",
    }

    await h.ok(org, "setCycleStatus", {"cycleId": cycle, "status": "CLOSED"}, "cycle { id }")
    for name, inp in [
        ("checkIn", {"keyResultId": kr1, "value": 10}),
        ("updateObjective", {"objectiveId": obj, "title": "New"}),
        ("archiveObjective", {"objectiveId": obj}),
        ("createKeyResult", {"objectiveId": obj, "title": "x", "type": "MILESTONE"}),
        ("updateKeyResult", {"keyResultId": kr1, "title": "x"}),
        ("scoreKeyResult", {"keyResultId": kr1, "score": 1}),
        ("reflectOnObjective", {"objectiveId": obj, "lessons": "x"}),
        ("addComment", {"subjectId": obj, "body": "x"}),
        ("setCycleStatus", {"cycleId": cycle, "status": "REVIEW"}),
        ("createObjective", {"cycleId": cycle, "title": "x"}),
    ]:
        payload = await h.mutate(org, name, inp, "__typename")
        assert [e["code"] for e in payload["userErrors"]] == ["CYCLE_CLOSED"], name
    await assert_verified(org)


async def test_alignment_loops_and_realignment(org: Org):
    cycle = await h.active_cycle(org)
    a = await h.objective(org, cycle, "A")
    b = await h.objective(org, cycle, "B", parentId=a)
    c = await h.objective(org, cycle, "C", parentId=b)
    for parent in (c, b, a):
        p = await h.mutate(
            org, "alignObjective", {"objectiveId": a, "parentId": parent}, "objective { id }"
        )
        assert p["userErrors"][0]["code"] == "ALIGNMENT_LOOP"
        assert p["userErrors"][0]["field"] == ["parentId"]
    other = await h.active_cycle(org, *h.around_today(before=-100, after=190))  # a later one
    d = await h.objective(org, other, "D")
    p = await h.mutate(org, "alignObjective", {"objectiveId": d, "parentId": a}, "objective { id }")
    assert p["userErrors"][0]["code"] == "INVALID"

    kr = await h.key_result(org, c)
    await h.check_in(org, kr, 60)
    assert await h.progress(org, a) == pytest.approx(0.6)
    e = await h.objective(org, cycle, "E")
    await h.ok(org, "alignObjective", {"objectiveId": c, "parentId": e}, "objective { id }")
    assert await h.progress(org, a) == 0.0
    assert await h.progress(org, e) == pytest.approx(0.6)
    q = """query($id: ID!) { node(id: $id) { ... on Objective {
        ancestors { title } descendants { title } parent { title } } } }"""
    assert (await org.call(q, {"id": c}))["node"] == {
        "ancestors": [{"title": "E"}],
        "descendants": [],
        "parent": {"title": "E"},
    }
    await h.ok(org, "alignObjective", {"objectiveId": c, "parentId": b}, "objective { id }")
    assert (await org.call(q, {"id": a}))["node"]["descendants"] == [{"title": "B"}, {"title": "C"}]
    assert (await org.call(q, {"id": c}))["node"]["ancestors"] == [{"title": "B"}, {"title": "A"}]
    await h.ok(org, "alignObjective", {"objectiveId": c, "parentId": None}, "objective { id }")
    assert await h.progress(org, a) == 0.0
    await assert_verified(org)


@pytest.mark.parametrize(
    ("name", "make_input", "code", "field"),
    [
        (
            "createObjective",
            lambda ids: {"cycleId": ids["cycle"], "title": "  "},
            "INVALID",
            ["title"],
        ),
        (
            "createObjective",
            lambda ids: {"cycleId": ids["cycle"], "title": "x" * 301},
            "INVALID",
            ["title"],
        ),
        (
            "createObjective",
            lambda ids: {"cycleId": ids["cycle"], "title": "t", "weight": -1},
            "INVALID",
            ["weight"],
        ),
        (
            "createObjective",
            lambda ids: {"cycleId": "not-an-id", "title": "t"},
            "INVALID",
            ["cycleId"],
        ),
        (
            "createObjective",
            lambda ids: {"cycleId": ids["objective"], "title": "t"},
            "INVALID",
            ["cycleId"],
        ),
        (
            "createObjective",
            lambda ids: {"cycleId": ids["missing_cycle"], "title": "t"},
            "NOT_FOUND",
            ["cycleId"],
        ),
        (
            "createKeyResult",
            lambda ids: {
                "objectiveId": ids["objective"],
                "title": "t",
                "type": "INCREASE",
                "startValue": 5,
                "targetValue": 1,
            },
            "INVALID",
            ["targetValue"],
        ),
        (
            "createKeyResult",
            lambda ids: {
                "objectiveId": ids["objective"],
                "title": "t",
                "type": "DECREASE",
                "startValue": 1,
                "targetValue": 5,
            },
            "INVALID",
            ["targetValue"],
        ),
        (
            "createKeyResult",
            lambda ids: {
                "objectiveId": ids["objective"],
                "title": "t",
                "type": "INCREASE",
                "targetValue": 5,
            },
            "INVALID",
            ["startValue"],
        ),
        (
            "checkIn",
            lambda ids: {"keyResultId": ids["kr"], "value": 5, "confidence": 1.5},
            "INVALID",
            ["confidence"],
        ),
        (
            "checkIn",
            lambda ids: {"keyResultId": ids["milestone"], "value": 0.5},
            "INVALID",
            ["value"],
        ),
        (
            "checkIn",
            lambda ids: {"keyResultId": ids["kr"], "value": 1, "note": "n" * 5001},
            "INVALID",
            ["note"],
        ),
        (
            "createCycle",
            lambda ids: {"name": "Q", "startsOn": "2026-12-31", "endsOn": "2026-10-01"},
            "INVALID",
            ["endsOn"],
        ),
        (
            "createUser",
            lambda ids: {"name": "Ada", "email": "admin@acme.example"},
            "CONFLICT",
            ["email"],
        ),
        ("createUser", lambda ids: {"name": "Ada", "email": "no-at-sign"}, "INVALID", ["email"]),
        (
            "createTeam",
            lambda ids: {"name": "T", "parentId": ids["missing_team"]},
            "NOT_FOUND",
            ["parentId"],
        ),
        (
            "addComment",
            lambda ids: {"subjectId": ids["cycle"], "body": "hi"},
            "INVALID",
            ["subjectId"],
        ),
        (
            "addComment",
            lambda ids: {"subjectId": ids["objective"], "body": ""},
            "INVALID",
            ["body"],
        ),
        (
            "alignObjective",
            lambda ids: {"objectiveId": ids["objective"], "parentId": ids["objective"]},
            "ALIGNMENT_LOOP",
            ["parentId"],
        ),
    ],
)
async def test_rejected_input_changes_nothing(org: Org, name, make_input, code, field):
    cycle = await h.active_cycle(org)
    obj = await h.objective(org, cycle, "O")
    ids = {
        "cycle": cycle,
        "objective": obj,
        "kr": await h.key_result(org, obj),
        "milestone": await h.key_result(org, obj, "M", "MILESTONE", None, None),
        "missing_cycle": "Q3ljbGU6OTk5OTk",  # Cycle:99999
        "missing_team": "VGVhbTo5OTk5OQ",  # Team:99999
    }
    before = (await org.call("{ events(first: 1) { totalCount } }"))["events"]["totalCount"]
    payload = await h.mutate(org, name, make_input(ids), "__typename")
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [(code, field)]
    assert payload["userErrors"][0]["message"]
    after = (await org.call("{ events(first: 1) { totalCount } }"))["events"]["totalCount"]
    assert after == before  # nothing was written


async def test_forbidden_by_role(org: Org):
    cycle = await h.active_cycle(org)
    viewer = await h.user(org, "Vic Viewer", "VIEWER")
    member = await h.user(org, "Mo Member", "MEMBER")
    from schema.ids import decode_as

    viewer_token = org.token(decode_as(viewer, "User"))
    member_token = org.token(decode_as(member, "User"))
    obj = await h.objective(org, cycle, "Admin's")
    kr = await h.key_result(org, obj)
    for token, name, inp in [
        (viewer_token, "createObjective", {"cycleId": cycle, "title": "t"}),
        (viewer_token, "checkIn", {"keyResultId": kr, "value": 1}),
        (member_token, "checkIn", {"keyResultId": kr, "value": 1}),
        (member_token, "createTeam", {"name": "t"}),
        (
            member_token,
            "createCycle",
            {"name": "c", "startsOn": "2026-01-01", "endsOn": "2026-02-01"},
        ),
        (member_token, "updateObjective", {"objectiveId": obj, "title": "mine now"}),
    ]:
        payload = await h.mutate(org, name, inp, "__typename", token=token)
        assert [e["code"] for e in payload["userErrors"]] == ["FORBIDDEN"], (name, payload)
    # A member's own personal objective is theirs to run.
    mine = await h.objective(org, cycle, "Mine", token=member_token)
    my_kr = (
        await h.ok(
            org,
            "createKeyResult",
            {"objectiveId": mine, "title": "k", "type": "MILESTONE"},
            "keyResult { id }",
            token=member_token,
        )
    )["keyResult"]["id"]
    await h.check_in(org, my_kr, 1, token=member_token)


async def test_private_objective_is_absent_for_others(org: Org):
    cycle = await h.active_cycle(org)
    member = await h.user(org, "Mo Member")
    from schema.ids import decode_as

    token = org.token(decode_as(member, "User"))
    root = await h.objective(org, cycle, "Public root")
    secret = await h.objective(org, cycle, "Secret", parentId=root, visibility="PRIVATE")
    kr = await h.key_result(org, secret)
    await h.check_in(org, kr, 100)
    q = "query($id: ID!) { node(id: $id) { id } }"
    assert (await org.call(q, {"id": secret}, token=token))["node"] is None
    assert (await org.call(q, {"id": kr}, token=token))["node"] is None
    view = (await org.call(OBJECTIVE_VIEW, {"id": root}, token=token))["node"]
    assert view["progress"] == 1.0  # the roll-up still counts it ...
    assert view["contributions"] == []  # ... and never shows it
    listed = await org.call("{ objectives { edges { node { title } } } }", token=token)
    assert [e["node"]["title"] for e in listed["objectives"]["edges"]] == ["Public root"]
    payload = await h.mutate(
        org, "checkIn", {"keyResultId": kr, "value": 1}, "__typename", token=token
    )
    assert payload["userErrors"][0]["code"] == "NOT_FOUND"


async def test_authentication(client, org: Org):
    for headers in (
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Basic x"},
        {"Authorization": f"Bearer {org.token(424242)}"},
    ):
        r = await client.post("/graphql", json={"query": "{ viewer { role } }"}, headers=headers)
        assert r.status_code == 401
        assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    page = await client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    viewer = await org.call("{ viewer { role user { email } organization { slug } } }")
    assert viewer["viewer"] == {
        "role": "ADMIN",
        "user": {"email": "admin@acme.example"},
        "organization": {"slug": "acme-logistics"},
    }


async def test_page_size_limit_and_pagination(org: Org):
    cycle = await h.active_cycle(org)
    for i in range(5):
        await h.objective(org, cycle, f"O{i}")
    body = await org.call("{ objectives(first: 101) { totalCount } }", expect_errors=True)
    assert body["data"] is None
    assert "first must be between 0 and 100" in body["errors"][0]["message"]
    q = (
        "query($after: String) { objectives(first: 2, after: $after) { totalCount "
        "pageInfo { hasNextPage endCursor } edges { node { title } } } }"
    )
    seen, after = [], None
    while True:
        page = (await org.call(q, {"after": after}))["objectives"]
        assert page["totalCount"] == 5
        seen += [e["node"]["title"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [f"O{i}" for i in range(5)]
    filtered = await org.call('{ objectives(filter: {search: "o3"}) { edges { node { title } } } }')
    assert [e["node"]["title"] for e in filtered["objectives"]["edges"]] == ["O3"]
    by_status = await org.call("{ objectives(filter: {status: [NOT_STARTED]}) { totalCount } }")
    assert by_status["objectives"]["totalCount"] == 5


async def test_node_nodes_and_events_feed(org: Org):
    cycle = await h.active_cycle(org)
    team = await h.team(org, "Warehouse")
    obj = await h.objective(org, cycle, "O", teamId=team)
    kr = await h.key_result(org, obj)
    ci = (await h.check_in(org, kr, 40, note="first count"))["checkIn"]["id"]
    q = "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }"
    nodes = (
        await org.call(q, {"ids": [cycle, team, obj, kr, ci, "garbage", "T2JqZWN0aXZlOjk5OTk5"]})
    )["nodes"]
    assert [n and n["__typename"] for n in nodes] == [
        "Cycle",
        "Team",
        "Objective",
        "KeyResult",
        "CheckIn",
        None,
        None,
    ]

    feed = await org.call(
        "{ events(first: 100) { edges { cursor node { sequence kind "
        "changes { node { id } previousProgress progress status } } } } }"
    )
    edges = feed["events"]["edges"]
    assert [e["node"]["sequence"] for e in edges] == list(range(1, len(edges) + 1))
    last = edges[-1]["node"]
    assert last["kind"] == "CHECK_IN"
    assert [c["node"]["id"] for c in last["changes"]] == [kr, obj]
    assert last["changes"][0]["progress"] == pytest.approx(0.4)
    q = "query($after: String) { events(after: $after) { edges { node { sequence } } } }"
    rest = (await org.call(q, {"after": edges[-3]["cursor"]}))["events"]["edges"]
    assert [e["node"]["sequence"] for e in rest] == [len(edges) - 1, len(edges)]


async def test_forecast_and_stale(org: Org):
    cycle = await h.active_cycle(org, "2020-01-01", "2020-03-31")
    obj = await h.objective(org, cycle, "O")
    q = "query($id: ID!) { node(id: $id) { ... on KeyResult { stale forecast { value } } } }"
    with h.clock_at(datetime(2020, 1, 1, tzinfo=UTC)):  # inside the cycle, on its first day
        kr = await h.key_result(org, obj, "K", "INCREASE", 0, 90)
        assert (await org.call(q, {"id": kr}))["node"] == {"stale": False, "forecast": None}
        await h.check_in(org, kr, 10)
    with h.clock_at(datetime(2020, 1, 11, tzinfo=UTC)):
        await h.check_in(org, kr, 20)
    node = (await org.call(q, {"id": kr}))["node"]
    # 10 on day 0, 20 on day 10: one a day, read at the end of day 91 (April 1st).
    assert node["forecast"]["value"] == pytest.approx(101.0)
    assert node["stale"] is True  # silence is never green
    obj_q = "query($id: ID!) { node(id: $id) { ... on Objective { stale } } }"
    assert (await org.call(obj_q, {"id": obj}))["node"]["stale"] is True


async def test_unexpected_errors_are_masked_with_a_request_id(org: Org, monkeypatch, caplog):
    cycle = await h.active_cycle(org)
    obj = await h.objective(org, cycle, "O")

    async def broken(*_args, **_kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr("service.usecases.comments.add_comment", broken)
    body = await org.call(
        'mutation($id: ID!) { addComment(input: {subjectId: $id, body: "hi"}) { __typename } }',
        {"id": obj},
        expect_errors=True,
    )
    error = body["errors"][0]
    assert error["message"] == "Internal server error"
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["extensions"]["requestId"]
    assert "secret internals" not in str(body)
    assert "secret internals" in caplog.text  # the stack goes to the log


async def test_query_limits_are_checked_before_resolvers(org: Org):
    deep = (
        "{ viewer { user { teams { children { children { children { children { children "
        "{ children { children { children { children { children { id } } } } } } } } } "
        "} } } } }"
    )
    body = await org.call(deep, expect_errors=True)
    assert "exceeds maximum operation depth" in body["errors"][0]["message"]
    aliases = "{ " + " ".join(f"a{i}: viewer {{ role }}" for i in range(31)) + " }"
    body = await org.call(aliases, expect_errors=True)
    assert "aliases" in body["errors"][0]["message"].lower()


async def test_query_results_are_cached_until_the_next_write(org: Org, client):
    cycle = await h.active_cycle(org)
    obj = await h.objective(org, cycle, "Cached")
    kr = await h.key_result(org, obj)
    query = {
        "query": "query($id: ID!) { node(id: $id) { ... on Objective { progress "
        "keyResults { progress } } } }",
        "variables": {"id": obj},
    }
    headers = {"Authorization": f"Bearer {org.admin_token}"}
    first = await client.post("/graphql", json=query, headers=headers)
    again = await client.post("/graphql", json=query, headers=headers)
    assert again.json() == first.json()
    assert int(again.headers["x-sql-statements"]) == 1  # authentication only
    await h.check_in(org, kr, 50)  # a write moves the organization's outbox position
    after = await client.post("/graphql", json=query, headers=headers)
    assert after.json()["data"]["node"]["progress"] == pytest.approx(0.5)
    assert int(after.headers["x-sql-statements"]) > 1


async def test_a_failing_field_does_not_break_its_siblings_loads(org: Org):
    # Found by the fuzz test: both branches wait on one batched load of the same
    # descendants; GraphQL abandons the second branch when its `children` fails, and
    # that must not cancel the load the first branch is still waiting on.
    cycle = await h.active_cycle(org)
    root = await h.objective(org, cycle, "Root")
    await h.objective(org, cycle, "Child", parentId=root)
    body = await org.call(
        """query($id: ID!) {
          node(id: $id) { ... on Objective { descendants(maxDepth: 1) { title } } }
          nodes(ids: [$id]) { ... on Objective {
            children(first: 0, after: "") { totalCount }
            descendants(maxDepth: 1) { title } } } }""",
        {"id": root},
        expect_errors=True,
    )
    assert body["data"]["node"] == {"descendants": [{"title": "Child"}]}
    assert body["data"]["nodes"] == [None]
    assert "not a valid cursor" in body["errors"][0]["message"]


async def test_team_members_and_a_users_teams(org: Org):
    team = await h.team(org, "Warehouse")
    other = await h.team(org, "Transport")
    sam = await h.user(org, "Sam Lindqvist")
    for t in (team, other):
        await h.ok(org, "addTeamMember", {"teamId": t, "userId": sam}, "team { id }")
    q = """query($t: ID!, $u: ID!) {
      team: node(id: $t) { ... on Team { members { name } } }
      user: node(id: $u) { ... on User { teams { name } } } }"""
    got = await org.call(q, {"t": team, "u": sam})
    assert got["team"] == {"members": [{"name": "Sam Lindqvist"}]}
    assert got["user"] == {"teams": [{"name": "Transport"}, {"name": "Warehouse"}]}
