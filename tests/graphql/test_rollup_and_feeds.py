"""Issue 19, items 3, 4 and one line of 6, driven through the GraphQL API as the
findings were made.

3. A member multiplied every batch a service posts by binding key results to its metric:
   the key results one metric feeds and the check-ins one batch writes are bounded
   (settings), a refusal names the limit and writes nothing, and the poster is told how
   many check-ins its batch wrote, hidden ones included.
4. A member diluted the company's PUBLIC root with PRIVATE children: the roll-up still
   counts them, and every reader is told so (`hiddenContributions`), on both read paths;
   admins see every contributor and who aligned it.
6. `weight: -0.0` (and every other float input) is stored as 0.0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from schema import plan as fastpath
from schema.ids import decode_as
from service.settings import Settings
from service.usecases import metrics
from tests import factories as h
from tests.factories import (
    JWT_SECRET,
    Org,
    at,
    bind,
    counts,
    create_metric,
    cycle_now,
    service_token,
)

PER_METRIC = 3
PER_BATCH = 10


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Small limits, so a test reaches them; the result cache off: every request executes.
    return Settings(
        jwt_secret=JWT_SECRET,
        data_dir=tmp_path,
        database_url=None,
        response_cache_seconds=0,
        max_key_results_per_metric=PER_METRIC,
        max_batch_check_ins=PER_BATCH,
    )


def test_the_limits_are_settings_with_the_use_cases_defaults(monkeypatch: pytest.MonkeyPatch):
    defaults = Settings(database_url=None)
    assert defaults.max_key_results_per_metric == metrics.MAX_KEY_RESULTS_PER_METRIC == 25
    assert defaults.max_batch_check_ins == metrics.MAX_BATCH_CHECK_INS == 10_000
    monkeypatch.setenv("OKR_MAX_KEY_RESULTS_PER_METRIC", "7")
    monkeypatch.setenv("OKR_MAX_BATCH_CHECK_INS", "70")
    set_ = Settings(database_url=None)
    assert (set_.max_key_results_per_metric, set_.max_batch_check_ins) == (7, 70)


# --- item 3: bounded feeds ---------------------------------------------------------------------


async def _member(org: Org, name: str = "Mo Member") -> tuple[str, str]:
    member = await h.user(org, name)
    return member, org.token(decode_as(member, "User"))


async def test_item3_a_metric_feeds_at_most_the_limit_of_key_results(org: Org, db):
    cycle = await cycle_now(org)
    metric = await create_metric(org)
    _member_id, member = await _member(org)
    krs = []
    for i in range(PER_METRIC + 1):
        own = await h.objective(org, cycle, f"Mine {i}", visibility="PRIVATE", token=member)
        krs.append(await h.key_result(org, own, "Cost", "DECREASE", 4.2, 3.6))
    for kr in krs[:PER_METRIC]:
        assert (await bind(org, kr, metric, member))["userErrors"] == []

    before = await counts(db)
    refused = await bind(org, krs[-1], metric, member)
    [error] = refused["userErrors"]
    assert (error["code"], error["field"]) == ("INVALID", ["metricId"])
    assert "OKR_MAX_KEY_RESULTS_PER_METRIC" in error["message"]
    assert f"is {PER_METRIC}" in error["message"]
    assert refused["keyResult"] is None
    assert await counts(db) == before  # nothing bound, no event
    # An admin is held to the same bound: it protects every poster of the metric.
    assert (await bind(org, krs[-1], metric))["userErrors"][0]["code"] == "INVALID"

    # Rebinding one already bound is no new place; unbinding one frees a place.
    assert (await bind(org, krs[0], metric, member))["userErrors"] == []
    assert (await bind(org, krs[0], None, member))["userErrors"] == []
    assert (await bind(org, krs[-1], metric, member))["userErrors"] == []
    # Another metric has its own places.
    other = await create_metric(org, "pick_rate", name="Pick rate")
    assert (await bind(org, krs[0], other, member))["userErrors"] == []
    assert (await counts(db))["bound"] == PER_METRIC + 1


async def test_item3_a_closed_cycles_key_results_take_no_place(org: Org, db):
    metric = await create_metric(org)
    old = await h.active_cycle(org, status="ACTIVE")
    for i in range(PER_METRIC):
        kr = await h.key_result(org, await h.objective(org, old, f"Old {i}"), "Cost")
        assert (await bind(org, kr, metric))["userErrors"] == []
    await h.ok(org, "setCycleStatus", {"cycleId": old, "status": "REVIEW"}, "cycle { id }")
    await h.ok(org, "setCycleStatus", {"cycleId": old, "status": "CLOSED"}, "cycle { id }")
    cycle = await cycle_now(org)
    kr = await h.key_result(org, await h.objective(org, cycle, "New"), "Cost")
    assert (await bind(org, kr, metric))["userErrors"] == []


async def test_item3_carrying_over_bound_key_results_takes_places_too(org: Org, db):
    """A carried-over key result keeps its metric: without the bound, carrying the same
    objective into later cycles would multiply what the metric feeds past the limit."""
    metric = await create_metric(org)
    cycle = await cycle_now(org)
    source = await h.objective(org, cycle, "Cost")
    krs = [await h.key_result(org, source, f"Cost {i}") for i in range(2)]
    for kr in krs:
        assert (await bind(org, kr, metric))["userErrors"] == []
    later = await h.active_cycle(
        org, starts_on="2027-04-01", ends_on="2027-06-30", status="PLANNING"
    )
    carry = "objective { id } keyResults { id }"
    before = await counts(db)
    refused = await h.mutate(
        org,
        "carryOverObjective",
        {"objectiveId": source, "toCycleId": later, "keyResultIds": krs},
        carry,
    )
    [error] = refused["userErrors"]
    assert (error["code"], error["field"]) == ("INVALID", ["metricId"])
    assert "OKR_MAX_KEY_RESULTS_PER_METRIC" in error["message"]
    assert await counts(db) == before  # nothing carried, nothing bound, no event
    # One more place is what it takes to carry one of them.
    carried = await h.ok(
        org,
        "carryOverObjective",
        {"objectiveId": source, "toCycleId": later, "keyResultIds": krs[:1]},
        carry,
    )
    assert len(carried["keyResults"]) == 1
    assert (await counts(db))["bound"] == PER_METRIC


async def _bound_world(org: Org) -> tuple[str, list[str], str]:
    """A metric feeding PER_METRIC key results, one of them under a member's PRIVATE
    objective; a service key to post with."""
    cycle = await cycle_now(org)
    metric = await create_metric(org)
    _member_id, member = await _member(org)
    krs = [
        await h.key_result(
            org, await h.objective(org, cycle, f"Public {i}"), "Cost", "DECREASE", 4.2, 3.6
        )
        for i in range(PER_METRIC - 1)
    ]
    hidden = await h.objective(org, cycle, "Mine", visibility="PRIVATE", token=member)
    krs.append(await h.key_result(org, hidden, "Cost", "DECREASE", 4.2, 3.6))
    for kr in krs:
        assert (await bind(org, kr, metric, None))["userErrors"] == []
    return metric, krs, await service_token(org)


def _batch(n: int, key: str = "cost_per_order") -> list[dict[str, Any]]:
    return [
        {
            "metricKey": key,
            "value": 4.0 - i / 100,
            "measuredAt": at(2 - i / 10),
            "idempotencyKey": f"k{i}",
        }
        for i in range(n)
    ]


RECORDED = "measurements { value } checkIns { id keyResult { id } } checkInsWritten"


async def test_item3_a_batch_past_the_check_in_limit_is_refused_whole(org: Org, db):
    _metric, krs, service = await _bound_world(org)
    # 4 measurements x 3 bound key results = 12 check-ins, past the 10 one batch may write.
    before = await counts(db)
    p = await h.mutate(org, "recordMeasurements", {"measurements": _batch(4)}, RECORDED, service)
    [error] = p["userErrors"]
    assert (error["code"], error["field"]) == ("INVALID", ["measurements"])
    assert "12 check-ins" in error["message"]
    assert f"the {PER_BATCH} one batch may write (OKR_MAX_BATCH_CHECK_INS)" in error["message"]
    assert p["measurements"] == [] and p["checkIns"] == [] and p["checkInsWritten"] == 0
    assert await counts(db) == before  # no measurement, no check-in, no event
    async with db.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM measurement")) == 0
        assert await conn.scalar(text("SELECT count(*) FROM check_in")) == 0

    # Measurements outside every running cycle make no check-in: they cost nothing.
    outside = [
        {"metricKey": "cost_per_order", "value": 4.1, "measuredAt": at(400 + i)} for i in range(20)
    ]
    p = await h.mutate(org, "recordMeasurements", {"measurements": outside}, RECORDED, service)
    assert p["userErrors"] == [] and p["checkInsWritten"] == 0

    # At the limit or under it, the batch goes in; the poster learns how many check-ins
    # it wrote, the one on the key result it may not see included.
    p = await h.mutate(org, "recordMeasurements", {"measurements": _batch(3)}, RECORDED, service)
    assert p["userErrors"] == []
    assert p["checkInsWritten"] == 9
    assert len(p["checkIns"]) == 6  # those on the two PUBLIC key results
    assert {c["keyResult"]["id"] for c in p["checkIns"]} == set(krs[:2])
    after = await counts(db)
    assert after["check_in"] - before["check_in"] == 9
    # A retry of the same batch writes nothing, and says so.
    p = await h.mutate(org, "recordMeasurements", {"measurements": _batch(3)}, RECORDED, service)
    assert p["userErrors"] == [] and p["checkInsWritten"] == 0
    assert (await counts(db))["check_in"] == after["check_in"]


# --- item 4: hidden children explained ---------------------------------------------------------

EXPLAIN = """query($id: ID!) { node(id: $id) { ... on Objective { progress
  contributions { node { id } weight progress share }
  hiddenContributions { count weight share } } } }"""
EXPLAIN_LIST = """{ objectives(first: 50) { edges { node { id progress
  contributions { node { id } share } hiddenContributions { count weight share } } } } }"""


async def _on_both_paths(org: Org, query: str, variables: dict, token: str | None) -> dict:
    """The answer of the planned reads and of the executor alone, which must agree."""
    answers = []
    for enabled in (True, False):
        fastpath.SWITCH.enabled = enabled
        try:
            answers.append(await org.call(query, variables, token=token))
        finally:
            fastpath.SWITCH.enabled = True
    assert answers[0] == answers[1]
    return answers[0]


def _sums_to_one(view: dict) -> None:
    hidden = view["hiddenContributions"]
    total = sum(c["share"] for c in view["contributions"]) + (hidden["share"] if hidden else 0)
    assert math.isclose(total, 1.0), view


async def test_item4_private_children_under_a_public_root_are_counted_and_explained(org: Org, db):
    cycle = await cycle_now(org)
    root = await h.objective(org, cycle, "Company: cut distribution costs")
    kr = await h.key_result(org, root, "Cost per order", "DECREASE", 4.2, 3.6)
    await h.check_in(org, kr, 4.2 - 0.6 * 0.198)
    assert math.isclose(await h.progress(org, root), 0.198)

    member_id, member = await _member(org)
    _other_id, other_member = await _member(org, "Otto Other")
    viewer = org.token(decode_as(await h.user(org, "Vi Viewer", "VIEWER"), "User"))
    # Aligning under any visible objective is open at weight 1 (a weight other than 1
    # under a parent needs the right to edit it): the member may not edit the root.
    heavy = await h.mutate(
        org,
        "createObjective",
        {
            "cycleId": cycle,
            "title": "Heavy",
            "parentId": root,
            "weight": 2,
            "visibility": "PRIVATE",
        },
        "objective { id }",
        member,
    )
    assert heavy["userErrors"][0]["code"] == "FORBIDDEN"
    children = [
        await h.objective(
            org, cycle, f"Mine {i}", parentId=root, visibility="PRIVATE", token=member
        )
        for i in range(19)
    ]
    # The twentieth aligned afterwards, by alignObjective.
    late = await h.objective(org, cycle, "Mine 19", visibility="PRIVATE", token=member)
    await h.ok(
        org, "alignObjective", {"objectiveId": late, "parentId": root}, "objective { id }", member
    )
    children.append(late)
    # The roll-up counts what a reader may not see.
    assert math.isclose(await h.progress(org, root), 0.198 / 21)

    for token in (viewer, other_member):
        view = (await _on_both_paths(org, EXPLAIN, {"id": root}, token))["node"]
        assert math.isclose(view["progress"], 0.198 / 21)
        [shown] = view["contributions"]  # the key result, named; the children never
        assert shown["node"]["id"] == kr and math.isclose(shown["share"], 1 / 21)
        hidden = view["hiddenContributions"]
        assert hidden["count"] == 20 and hidden["weight"] == 20.0
        assert math.isclose(hidden["share"], 20 / 21)
        _sums_to_one(view)
        listed = (await _on_both_paths(org, EXPLAIN_LIST, {}, token))["objectives"]["edges"]
        [root_listed] = [e["node"] for e in listed if e["node"]["id"] == root]
        assert root_listed["hiddenContributions"] == hidden
        _sums_to_one(root_listed)

    # Who may see every child (the admin; the member owns them all) sees each named.
    for token in (None, member):
        view = (await _on_both_paths(org, EXPLAIN, {"id": root}, token))["node"]
        assert view["hiddenContributions"] is None
        assert [c["node"]["id"] for c in view["contributions"]] == [kr, *children]
        _sums_to_one(view)
    # Nothing hidden, nothing aggregated: a child's own explanation is empty.
    child_view = (await _on_both_paths(org, EXPLAIN, {"id": children[0]}, member))["node"]
    assert child_view["contributions"] == [] and child_view["hiddenContributions"] is None

    # An admin sees who aligned each child, and what it did to the root.
    history = """query($id: ID!) { node(id: $id) { ... on Objective { history(first: 10) {
      edges { node { kind actor { id }
        changes { node { id } previousProgress progress } } } } } } }"""
    for child, kind in ((children[0], "OBJECTIVE_CREATED"), (late, "OBJECTIVE_ALIGNED")):
        edges = (await org.call(history, {"id": child}))["node"]["history"]["edges"]
        [event] = [e["node"] for e in edges if e["node"]["kind"] == kind]
        assert event["actor"] == {"id": member_id}
        [root_change] = [c for c in event["changes"] if c["node"]["id"] == root]
        assert root_change["progress"] < root_change["previousProgress"]
        # The reader who may not see the child sees neither it nor its history.
        assert (await org.call(history, {"id": child}, token=viewer))["node"] is None


async def test_item4_archived_and_weightless_children_in_the_aggregate(org: Org):
    cycle = await cycle_now(org)
    root = await h.objective(org, cycle, "Root")
    kr = await h.key_result(org, root, "KR")
    await h.check_in(org, kr, 50)
    member_id, member = await _member(org)
    viewer = org.token(decode_as(await h.user(org, "Vi Viewer", "VIEWER"), "User"))
    kept = await h.objective(org, cycle, "Kept", parentId=root, visibility="PRIVATE", token=member)
    # A weight other than 1 needs the right to edit the root: the admin aligns it.
    await h.objective(
        org, cycle, "Zero", parentId=root, visibility="PRIVATE", weight=0, ownerId=member_id
    )
    gone = await h.objective(org, cycle, "Gone", parentId=root, visibility="PRIVATE", token=member)
    await h.ok(org, "archiveObjective", {"objectiveId": gone}, "objective { id }", member)
    assert kept
    view = (await _on_both_paths(org, EXPLAIN, {"id": root}, viewer))["node"]
    # Archived children count nothing and are not hidden contributors; weight 0 ones are.
    assert view["hiddenContributions"] == {"count": 2, "weight": 1.0, "share": 0.5}
    assert math.isclose(view["progress"], 0.25)
    _sums_to_one(view)


# --- item 6: -0.0 ------------------------------------------------------------------------------


async def test_item6_negative_zero_is_stored_as_zero(org: Org, db):
    cycle = await cycle_now(org)
    root = await h.objective(org, cycle, "Root")
    # Sent as variables: JSON's -0.0 reaches Python as -0.0.
    child = (
        await h.ok(
            org,
            "createObjective",
            {"cycleId": cycle, "title": "Child", "parentId": root, "weight": -0.0},
            "objective { id weight }",
        )
    )["objective"]
    kr = (
        await h.ok(
            org,
            "createKeyResult",
            {
                "objectiveId": root,
                "title": "Cost",
                "type": "DECREASE",
                "startValue": -0.0,
                "targetValue": -5.0,
                "weight": -0.0,
            },
            "keyResult { id startValue weight }",
        )
    )["keyResult"]
    await h.ok(
        org,
        "checkIn",
        {"keyResultId": kr["id"], "value": -0.0, "confidence": -0.0},
        "checkIn { id }",
    )
    await h.ok(
        org,
        "updateObjective",
        {"objectiveId": child["id"], "weight": -0.0},
        "objective { id }",
    )
    for shown in (child["weight"], kr["startValue"], kr["weight"]):
        assert math.copysign(1.0, shown) == 1.0
    async with db.connect() as conn:
        stored = [
            *(await conn.execute(text("SELECT weight FROM objective"))).scalars(),
            *(
                await conn.execute(
                    text("SELECT start_value, weight, current_value FROM key_result")
                )
            ).one(),
            *(await conn.execute(text("SELECT value, confidence FROM check_in"))).one(),
        ]
    assert all(math.copysign(1.0, v) == 1.0 for v in stored), stored
