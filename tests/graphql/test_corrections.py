"""Corrections (issue 21, part 1): retractCheckIn, correctCheckIn and retractMeasurement,
driven through the GraphQL API as a client would.

Nothing committed is destroyed: a retracted check-in stays listed, marked with who, when
and why; the key result's value returns to its latest check-in not retracted (or its
start), the chain rolls up in the same transaction, `okr verify` agrees, and the record
(realism, forecast, progress history, values asOf) leaves the retracted one out, on both
read paths (the planned one and the executor). Bad input and races change nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from schema import plan as fastpath
from schema.ids import decode_as, encode
from service.db import Database
from service.domain import rules
from service.domain.enums import KeyResultType
from service.settings import Settings
from service.usecases import organizations
from tests import factories as h
from tests.factories import JWT_SECRET, Org
from tests.sockets import Socket

NOW = datetime.now(UTC)
TODAY = NOW.date()

CHECK_IN = (
    "id value confidence note measuredAt retracted retractedAt reason "
    "retractedBy { id } correctionOf { id } correctedBy { id }"
)
PAYLOAD = f"checkIn {{ {CHECK_IN} }} keyResult {{ currentValue progress confidence status }}"
STATE = """query($id: ID!) { node(id: $id) { ... on KeyResult {
  currentValue progress confidence status lastCheckIn { id value }
  checkIns(first: 20) { totalCount edges { node { id value retracted reason } } }
  objective { progress status parent { progress } } } } }"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # No response cache: the same read runs on both paths (planned and executor).
    return Settings(
        jwt_secret=JWT_SECRET, data_dir=tmp_path, database_url=None, response_cache_seconds=0
    )


def ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


async def cycle_now(org: Org) -> str:
    return await h.active_cycle(
        org, starts_on=str(TODAY - timedelta(days=30)), ends_on=str(TODAY + timedelta(days=60))
    )


class Tree:
    """Company <- Team objective with one INCREASE key result, 0 to 100."""

    async def build(self, org: Org) -> Tree:
        self.org = org
        self.cycle = await cycle_now(org)
        self.root = await h.objective(org, self.cycle, "Cut distribution costs")
        self.leaf = await h.objective(org, self.cycle, "Cheaper routes", parentId=self.root)
        self.kr = await h.key_result(org, self.leaf, "Routes re-planned", "INCREASE", 0, 100)
        return self

    async def check_in(self, value: float, days_ago: float, **extra: Any) -> str:
        token = extra.pop("token", None)
        p = await h.ok(
            self.org,
            "checkIn",
            {"keyResultId": self.kr, "value": value, "measuredAt": ago(days_ago), **extra},
            "checkIn { id }",
            token=token,
        )
        return p["checkIn"]["id"]

    async def state(self, token: str | None = None) -> dict[str, Any]:
        return (await self.org.call(STATE, {"id": self.kr}, token=token))["node"]


@pytest.fixture
async def tree(org: Org) -> Tree:
    return await Tree().build(org)


async def retract(org: Org, check_in: str, reason: str = "typo", token: str | None = None):
    return await h.mutate(
        org, "retractCheckIn", {"checkInId": check_in, "reason": reason}, PAYLOAD, token
    )


async def correct(org: Org, check_in: str, value: float, token: str | None = None, **extra: Any):
    return await h.mutate(
        org,
        "correctCheckIn",
        {"checkInId": check_in, "value": value, "reason": extra.pop("reason", "typo"), **extra},
        PAYLOAD,
        token,
    )


async def rows(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def snapshot(db: Database) -> list[Any]:
    """Everything a correction may write."""
    out = []
    for table in ("check_in", "measurement", "key_result", "objective", "event", "organization"):
        out.append(await rows(db, f"SELECT * FROM {table} ORDER BY id"))
    return out


async def assert_verified(db: Database) -> None:
    from service.verify import verify, verify_event_sequences

    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        assert mismatches == []
        assert await verify_event_sequences(conn) == []


async def both_paths(org: Org, query: str, variables: dict, token: str | None = None) -> dict:
    """The read through the planned path and through the executor alone: the same."""
    answers = []
    for planned in (True, False):
        before = fastpath.SWITCH.planned
        fastpath.SWITCH.enabled = planned
        try:
            answers.append(await org.call(query, variables, token=token))
        finally:
            fastpath.SWITCH.enabled = True
        assert (fastpath.SWITCH.planned > before) == planned
    assert answers[0] == answers[1]
    return answers[0]


def uid(gid: str) -> int:
    return decode_as(gid, "User")


# --- retractCheckIn ----------------------------------------------------------------------------


async def test_retracting_the_latest_check_in_returns_to_the_one_before_and_rolls_up(
    org: Org, tree: Tree, db: Database
):
    first = await tree.check_in(20, 3, confidence=0.8)
    typo = await tree.check_in(38.4, 1, confidence=0.5, note="38.4, meant 3.84")
    assert (await tree.state())["currentValue"] == 38.4

    p = await retract(org, typo, "typo: 3.84 was meant")
    assert p["userErrors"] == []
    shown = p["checkIn"]
    assert shown["id"] == typo and shown["retracted"] is True
    assert shown["reason"] == "typo: 3.84 was meant"
    assert shown["retractedBy"] == {"id": encode("User", org.admin_id)}
    assert datetime.fromisoformat(shown["retractedAt"]) >= NOW
    assert p["keyResult"]["currentValue"] == 20 and p["keyResult"]["confidence"] == 0.8

    state = await tree.state()
    assert state["currentValue"] == 20 and state["progress"] == pytest.approx(0.2)
    assert state["lastCheckIn"] == {"id": first, "value": 20}
    # Still listed, marked, with why.
    assert state["checkIns"]["totalCount"] == 2
    assert state["checkIns"]["edges"][0]["node"] == {
        "id": typo,
        "value": 38.4,
        "retracted": True,
        "reason": "typo: 3.84 was meant",
    }
    assert state["objective"]["progress"] == pytest.approx(0.2)
    assert state["objective"]["parent"]["progress"] == pytest.approx(0.2)
    await assert_verified(db)

    [event] = await rows(db, "SELECT * FROM event WHERE kind = 'CHECK_IN_RETRACTED'")
    assert event.subject_type == "KeyResult" and event.check_in_id == decode_as(typo, "CheckIn")
    assert event.payload["reason"] == "typo: 3.84 was meant"
    assert [(c["type"], c["previous"], c["progress"]) for c in event.payload["changes"]] == [
        ("KeyResult", pytest.approx(0.384), pytest.approx(0.2)),
        ("Objective", pytest.approx(0.384), pytest.approx(0.2)),
        ("Objective", pytest.approx(0.384), pytest.approx(0.2)),
    ]
    # The events feed and the key result's history show it, with the check-in.
    feed = await org.call(
        "query($id: ID!) { node(id: $id) { ... on KeyResult { history(first: 5) { edges { "
        "node { kind checkIn { id retracted } } } } } } }",
        {"id": tree.kr},
    )
    assert feed["node"]["history"]["edges"][0]["node"] == {
        "kind": "CHECK_IN_RETRACTED",
        "checkIn": {"id": typo, "retracted": True},
    }


async def test_retracting_the_only_check_in_returns_to_the_start_not_started(
    org: Org, tree: Tree, db: Database
):
    only = await tree.check_in(40, 1, confidence=0.9)
    p = await retract(org, only)
    assert p["userErrors"] == []
    state = await tree.state()
    assert state["currentValue"] == 0 and state["progress"] == 0
    assert state["confidence"] is None and state["lastCheckIn"] is None
    assert state["status"] == "NOT_STARTED"
    assert state["objective"]["status"] == "NOT_STARTED"
    await assert_verified(db)


async def test_retracting_an_old_check_in_changes_the_record_but_not_the_current_value(
    org: Org, tree: Tree, db: Database
):
    await tree.check_in(10, 20)
    wrong = await tree.check_in(90, 10)
    await tree.check_in(30, 2)
    # Served by both read paths (the planned one and the executor) ...
    read = """query($id: ID!) { node(id: $id) { ... on KeyResult {
        currentValue lastCheckIn { value } forecast { value progress }
        checkIns(first: 5) { edges { node { value retracted } } } } } }"""
    # ... and by the executor alone.
    past = """query($id: ID!, $then: DateTime!, $from: DateTime!, $to: DateTime!) {
      node(id: $id) { ... on KeyResult { then: progress(asOf: $then)
        history: progressHistory(from: $from, to: $to, interval: DAY) { progress } } } }"""
    span = {"id": tree.kr, "then": ago(5), "from": ago(12), "to": ago(8)}
    before = await both_paths(org, read, {"id": tree.kr})
    before_past = (await org.call(past, span))["node"]
    assert before_past["then"] == pytest.approx(0.9)
    assert before_past["history"][-1]["progress"] == pytest.approx(0.9)
    realism_q = "query($id: ID!) { node(id: $id) { ... on KeyResult { realism { basis } } } }"
    assert (await org.call(realism_q, {"id": tree.kr}))["node"]["realism"]["basis"] == 3

    assert (await retract(org, wrong, "double-counted a depot"))["userErrors"] == []

    node = (await both_paths(org, read, {"id": tree.kr}))["node"]
    assert node["currentValue"] == 30 and node["lastCheckIn"] == {"value": 30}
    assert [e["node"] for e in node["checkIns"]["edges"]] == [
        {"value": 30, "retracted": False},
        {"value": 90, "retracted": True},
        {"value": 10, "retracted": False},
    ]
    after_past = (await org.call(past, span))["node"]
    assert after_past["then"] == pytest.approx(0.1)
    assert [p["progress"] for p in after_past["history"]] == pytest.approx([0.1] * 5)
    # The forecast is the fit through the two check-ins still standing.
    cycle = await rows(db, "SELECT starts_on, ends_on FROM cycle")
    _start, end = rules.cycle_bounds(cycle[0].starts_on, cycle[0].ends_on)
    standing = await rows(
        db, "SELECT measured_at, value FROM check_in WHERE retracted_at IS NULL ORDER BY 1"
    )
    expected = rules.forecast(
        KeyResultType.INCREASE, 0, 100, [(r.measured_at, r.value) for r in standing], end
    )
    assert expected is not None and node["forecast"] != before["node"]["forecast"]
    assert node["forecast"] == {
        "value": pytest.approx(expected.value),
        "progress": pytest.approx(expected.progress),
    }
    assert (await org.call(realism_q, {"id": tree.kr}))["node"]["realism"]["basis"] == 2
    await assert_verified(db)


async def test_retracting_twice_is_a_conflict_and_writes_no_second_event(
    org: Org, tree: Tree, db: Database
):
    ci = await tree.check_in(50, 1)
    assert (await retract(org, ci))["userErrors"] == []
    before = await snapshot(db)
    again = await retract(org, ci)
    assert again["checkIn"] is None
    [error] = again["userErrors"]
    assert (error["code"], error["field"]) == ("CONFLICT", ["checkInId"])
    assert "retracted already" in error["message"]
    corrected = await correct(org, ci, 5)
    assert [(e["code"], e["field"]) for e in corrected["userErrors"]] == [
        ("CONFLICT", ["checkInId"])
    ]
    assert await snapshot(db) == before


async def test_a_reason_is_required(org: Org, tree: Tree, db: Database):
    ci = await tree.check_in(50, 1)
    before = await snapshot(db)
    for reason in ("", "   "):
        p = await retract(org, ci, reason)
        assert [(e["code"], e["field"]) for e in p["userErrors"]] == [("INVALID", ["reason"])]
    assert await snapshot(db) == before


# --- correctCheckIn ----------------------------------------------------------------------------


async def test_a_correction_retracts_and_checks_in_at_the_same_instant_linked_both_ways(
    org: Org, tree: Tree, db: Database
):
    await tree.check_in(20, 5)
    typo = await tree.check_in(38.4, 1, confidence=0.6, note="weekly figure")
    p = await correct(org, typo, 3.84, reason="decimal point")
    assert p["userErrors"] == []
    new = p["checkIn"]
    assert new["id"] != typo and new["value"] == 3.84 and new["retracted"] is False
    assert new["correctionOf"] == {"id": typo} and new["correctedBy"] is None
    # Left out, confidence and note are the corrected check-in's.
    assert (new["confidence"], new["note"]) == (0.6, "weekly figure")
    old = (
        await org.call(
            f"query($id: ID!) {{ node(id: $id) {{ ... on CheckIn {{ {CHECK_IN} }} }} }}",
            {"id": typo},
        )
    )["node"]
    assert old["retracted"] is True and old["reason"] == "decimal point"
    assert old["correctedBy"] == {"id": new["id"]}
    assert old["measuredAt"] == new["measuredAt"]
    assert p["keyResult"]["currentValue"] == 3.84
    state = await tree.state()
    assert state["lastCheckIn"] == {"id": new["id"], "value": 3.84}
    assert state["objective"]["parent"]["progress"] == pytest.approx(0.0384)
    # One event, CHECK_IN_CORRECTED, about the new check-in; none of kind CHECK_IN_RETRACTED.
    kinds = [r.kind for r in await rows(db, "SELECT kind FROM event ORDER BY seq")]
    assert kinds[-1] == "CHECK_IN_CORRECTED" and "CHECK_IN_RETRACTED" not in kinds
    [event] = await rows(db, "SELECT * FROM event WHERE kind = 'CHECK_IN_CORRECTED'")
    assert event.check_in_id == decode_as(new["id"], "CheckIn")
    assert event.payload["corrected"] == decode_as(typo, "CheckIn")
    assert event.payload["changes"][0]["progress"] == pytest.approx(0.0384)
    # Explicit values win; the planned path and the executor show the links alike.
    again = await correct(org, new["id"], 4.0, confidence=None, note="re-counted")
    assert again["userErrors"] == []
    assert (again["checkIn"]["confidence"], again["checkIn"]["note"]) == (None, "re-counted")
    q = """query($id: ID!) { node(id: $id) { ... on KeyResult { lastCheckIn {
      value correctionOf { value retracted correctedBy { value } correctionOf { value } } }
      checkIns(first: 5) { edges { node { value retracted reason retractedAt
        retractedBy { name } correctionOf { value } correctedBy { value } } } } } } }"""
    seen = await both_paths(org, q, {"id": tree.kr})
    assert seen["node"]["lastCheckIn"] == {
        "value": 4.0,
        "correctionOf": {
            "value": 3.84,
            "retracted": True,
            "correctedBy": {"value": 4.0},
            "correctionOf": {"value": 38.4},
        },
    }
    await assert_verified(db)


async def test_a_correction_checks_the_value_like_a_check_in(org: Org, db: Database):
    cycle = await cycle_now(org)
    objective = await h.objective(org, cycle, "Ship the new depot")
    kr = await h.key_result(org, objective, "Depot open", "MILESTONE", None, None)
    ci = (await h.check_in(org, kr, 0))["checkIn"]["id"]
    before = await snapshot(db)
    for value in (0.5, 2, 1e300):  # a milestone takes 0 or 1; and within the bounds
        p = await correct(org, ci, value)
        assert [(e["code"], e["field"]) for e in p["userErrors"]] == [("INVALID", ["value"])]
    p = await correct(org, ci, 0, confidence=1.5)
    assert [(e["code"], e["field"]) for e in p["userErrors"]] == [("INVALID", ["confidence"])]
    assert await snapshot(db) == before
    assert (await correct(org, ci, 1))["keyResult"]["status"] == "ACHIEVED"


async def test_a_retry_of_a_corrected_check_ins_key_gets_the_first_answer_saying_so(
    org: Org, tree: Tree, db: Database
):
    first = await h.ok(
        org,
        "checkIn",
        {"keyResultId": tree.kr, "value": 38.4, "idempotencyKey": "week-48"},
        f"checkIn {{ {CHECK_IN} }}",
    )
    original = first["checkIn"]["id"]
    fixed = (await correct(org, original, 3.84))["checkIn"]["id"]
    before = await snapshot(db)
    retry = await h.ok(
        org,
        "checkIn",
        {"keyResultId": tree.kr, "value": 38.4, "idempotencyKey": "week-48"},
        f"checkIn {{ {CHECK_IN} }} keyResult {{ currentValue }}",
    )
    assert retry["checkIn"]["id"] == original
    assert retry["checkIn"]["retracted"] is True
    assert retry["checkIn"]["correctedBy"] == {"id": fixed}
    assert retry["keyResult"]["currentValue"] == 3.84
    assert await snapshot(db) == before
    # The key still means that check-in: another value under it is a CONFLICT.
    p = await h.mutate(
        org,
        "checkIn",
        {"keyResultId": tree.kr, "value": 3.84, "idempotencyKey": "week-48"},
        "checkIn { id }",
    )
    assert [e["code"] for e in p["userErrors"]] == ["CONFLICT"]


# --- who may, and bad input --------------------------------------------------------------------


async def test_another_organizations_or_a_hidden_check_in_is_not_found_and_changes_nothing(
    org: Org, tree: Tree, db: Database, client
):
    ci = await tree.check_in(50, 1)
    created, admin = await db.transaction(
        lambda s: organizations.create_organization(s, "Rival", "boss@rival.example", "Rex")
    )
    rival = Org(client, db, created.id, admin.id)
    member = await h.user(org, "Mia Member")
    private = await h.objective(org, tree.cycle, "Board only", visibility="PRIVATE")
    hidden_kr = await h.key_result(org, private, "Secret KR")
    hidden = (await h.check_in(org, hidden_kr, 5))["checkIn"]["id"]
    before = await snapshot(db)
    cases = [
        (rival, ci, None),
        (org, hidden, org.token(uid(member))),
        (org, "Q2hlY2tJbjo5OTk5OTk=", None),  # CheckIn:999999
    ]
    for who, target, token in cases:
        for p in (
            await retract(who, target, token=token),
            await correct(who, target, 1, token=token),
        ):
            assert p["checkIn"] is None
            assert [(e["code"], e["field"]) for e in p["userErrors"]] == [
                ("NOT_FOUND", ["checkInId"])
            ]
    p = await retract(org, tree.kr)  # a key result's id is not a check-in's
    assert [(e["code"], e["field"]) for e in p["userErrors"]] == [("INVALID", ["checkInId"])]
    assert await snapshot(db) == before


async def test_only_who_may_check_in_retracts_and_a_service_key_only_its_own(
    org: Org, tree: Tree, db: Database
):
    ci = await tree.check_in(50, 2)
    viewer = org.token(uid(await h.user(org, "Vic Viewer", "VIEWER")))
    _row, key = await db.transaction(lambda s: organizations.create_api_key(s, org.id, "erp"))
    before = await snapshot(db)
    for token in (viewer, key):
        for p in (await retract(org, ci, token=token), await correct(org, ci, 1, token=token)):
            assert [e["code"] for e in p["userErrors"]] == ["FORBIDDEN"], p
    assert await snapshot(db) == before
    own = await tree.check_in(60, 1, token=key)
    p = await retract(org, own, "posted twice", token=key)
    assert p["userErrors"] == [] and p["checkIn"]["retractedBy"] is None
    assert (await tree.state())["currentValue"] == 50
    by_key = await rows(
        db, "SELECT retracted_by_api_key_id FROM check_in WHERE retracted_at IS NOT NULL"
    )
    assert [r.retracted_by_api_key_id for r in by_key] == [_row.id]
    await assert_verified(db)


async def test_a_closed_cycle_is_read_only(org: Org, tree: Tree, db: Database):
    ci = await tree.check_in(50, 1)
    for status in ("REVIEW", "CLOSED"):
        await h.ok(org, "setCycleStatus", {"cycleId": tree.cycle, "status": status}, "cycle { id }")
    before = await snapshot(db)
    for p in (await retract(org, ci), await correct(org, ci, 1)):
        assert [e["code"] for e in p["userErrors"]] == ["CYCLE_CLOSED"]
    assert await snapshot(db) == before


# --- retractMeasurement ------------------------------------------------------------------------

MEASURED = (
    "measurement { value measuredAt retracted retractedAt reason } "
    "retractedCheckIns { id value retracted }"
)


async def measured_tree(org: Org) -> tuple[Tree, str, str]:
    """The tree's key result bound to a metric that posted 4.0 two days ago."""
    tree = await Tree().build(org)
    metric = (
        await h.ok(org, "createMetric", {"key": "routes", "name": "Routes"}, "metric { id }")
    )["metric"]["id"]
    await h.ok(
        org, "bindKeyResult", {"keyResultId": tree.kr, "metricId": metric}, "keyResult { id }"
    )
    await tree.check_in(10, 5)
    await h.ok(
        org,
        "recordMeasurements",
        {"measurements": [{"metricKey": "routes", "value": 40, "measuredAt": ago(2)}]},
        "measurements { value }",
    )
    made = (await tree.state())["lastCheckIn"]["id"]
    return tree, metric, made


async def test_a_measurements_check_in_is_corrected_through_its_metric(org: Org, db: Database):
    tree, _metric, made = await measured_tree(org)
    at = (await rows(db, "SELECT measured_at FROM measurement"))[0].measured_at.isoformat()
    before = await snapshot(db)
    for p in (await retract(org, made), await correct(org, made, 4)):
        [error] = p["userErrors"]
        assert (error["code"], error["field"]) == ("INVALID", ["checkInId"])
        assert "retractMeasurement" in error["message"]
    assert await snapshot(db) == before

    p = await h.mutate(
        org,
        "retractMeasurement",
        {"metricKey": "routes", "measuredAt": at, "reason": "sensor fault"},
        MEASURED,
    )
    assert p["userErrors"] == []
    assert p["measurement"]["retracted"] is True and p["measurement"]["reason"] == "sensor fault"
    assert p["retractedCheckIns"] == [{"id": made, "value": 40, "retracted": True}]
    state = await tree.state()
    assert state["currentValue"] == 10 and state["lastCheckIn"]["value"] == 10
    q = """{ metric(key: "routes") { latest { value }
      measurements(first: 5) { edges { node { value retracted reason } } } } }"""
    metric = (await org.call(q))["metric"]
    assert metric["latest"] is None
    assert [e["node"] for e in metric["measurements"]["edges"]] == [
        {"value": 40, "retracted": True, "reason": "sensor fault"}
    ]
    kinds = [r.kind for r in await rows(db, "SELECT kind FROM event ORDER BY seq")]
    assert kinds[-2:] == ["MEASUREMENT_RETRACTED", "CHECK_IN_RETRACTED"]
    await assert_verified(db)

    # Twice is a CONFLICT; an instant with no measurement is NOT_FOUND.
    again = await h.mutate(
        org,
        "retractMeasurement",
        {"metricKey": "routes", "measuredAt": at, "reason": "x"},
        MEASURED,
    )
    assert [(e["code"], e["field"]) for e in again["userErrors"]] == [("CONFLICT", ["measuredAt"])]
    other = await h.mutate(
        org,
        "retractMeasurement",
        {"metricKey": "routes", "measuredAt": ago(3), "reason": "x"},
        MEASURED,
    )
    assert [(e["code"], e["field"]) for e in other["userErrors"]] == [("NOT_FOUND", ["measuredAt"])]
    nope = await h.mutate(
        org, "retractMeasurement", {"metricKey": "nope", "measuredAt": at, "reason": "x"}, MEASURED
    )
    assert [(e["code"], e["field"]) for e in nope["userErrors"]] == [("NOT_FOUND", ["metricKey"])]

    # The right value may then be recorded for that instant.
    await h.ok(
        org,
        "recordMeasurements",
        {"measurements": [{"metricKey": "routes", "value": 4, "measuredAt": at}]},
        "measurements { value }",
    )
    assert (await tree.state())["currentValue"] == 4
    assert (await org.call(q))["metric"]["latest"] == {"value": 4}
    await assert_verified(db)


async def test_retracting_a_measurement_needs_an_admin_or_the_service_that_recorded_it(
    org: Org, db: Database
):
    tree, _metric, _made = await measured_tree(org)
    at = (await rows(db, "SELECT measured_at FROM measurement"))[0].measured_at.isoformat()
    member = org.token(uid(await h.user(org, "Max Member")))
    _row, key = await db.transaction(lambda s: organizations.create_api_key(s, org.id, "erp"))
    before = await snapshot(db)
    for token in (member, key):  # the key did not record it
        p = await h.mutate(
            org,
            "retractMeasurement",
            {"metricKey": "routes", "measuredAt": at, "reason": "x"},
            MEASURED,
            token,
        )
        assert [e["code"] for e in p["userErrors"]] == ["FORBIDDEN"], p
    assert await snapshot(db) == before
    # The key's own measurement it retracts.
    await h.ok(
        org,
        "recordMeasurements",
        {"measurements": [{"metricKey": "routes", "value": 50, "measuredAt": ago(1)}]},
        "measurements { value }",
        token=key,
    )
    assert (await tree.state())["currentValue"] == 50
    own = (await rows(db, "SELECT measured_at FROM measurement ORDER BY id DESC"))[0]
    p = await h.mutate(
        org,
        "retractMeasurement",
        {"metricKey": "routes", "measuredAt": own.measured_at.isoformat(), "reason": "dup"},
        MEASURED,
        key,
    )
    assert p["userErrors"] == [] and p["measurement"]["value"] == 50
    assert (await tree.state())["currentValue"] == 40
    await assert_verified(db)


# --- what subscribers see, over a real WebSocket ----------------------------------------------

PROGRESS = """subscription($objectiveId: ID) { progressChanged(objectiveId: $objectiveId) {
    cursor checkIn { id value retracted reason correctionOf { id } }
    changes { node { id } previousProgress progress status } } }"""
KINDS = """subscription { changes(kinds: [CHECK_IN_RETRACTED, CHECK_IN_CORRECTED]) {
    kind sequence checkIn { id } } }"""


async def test_subscribers_get_retractions_and_corrections_like_check_ins(
    org: Org,
    tree: Tree,
    server: Any,
):
    member = await h.user(org, "Sam Screen")
    socket = await Socket.open(server, org.token(uid(member)))
    try:
        await socket.subscribe("progress", PROGRESS, {"objectiveId": tree.root})
        await socket.subscribe("kinds", KINDS)
        await asyncio.sleep(0.4)  # the subscriptions are followed before anything is written
        first = await tree.check_in(20, 3)
        typo = await tree.check_in(38.4, 1)
        assert (await retract(org, typo, "typo"))["userErrors"] == []
        fixed = await correct(org, first, 25, reason="re-counted")
        assert fixed["userErrors"] == []
        got = [await socket.next("progress") for _ in range(4)]
        for result in got:
            assert "data" in result and not result.get("errors"), result
        events = [r["data"]["progressChanged"] for r in got]
        assert [e["checkIn"]["id"] for e in events] == [first, typo, typo, fixed["checkIn"]["id"]]
        retraction, correction = events[2], events[3]
        assert retraction["checkIn"] == {
            "id": typo,
            "value": 38.4,
            "retracted": True,
            "reason": "typo",
            "correctionOf": None,
        }
        assert [
            (c["node"]["id"], c["previousProgress"], c["progress"]) for c in retraction["changes"]
        ] == [
            (tree.kr, pytest.approx(0.384), pytest.approx(0.2)),
            (tree.leaf, pytest.approx(0.384), pytest.approx(0.2)),
            (tree.root, pytest.approx(0.384), pytest.approx(0.2)),
        ]
        assert correction["checkIn"]["correctionOf"] == {"id": first}
        assert correction["checkIn"]["retracted"] is False
        assert [(c["node"]["id"], c["progress"]) for c in correction["changes"]] == [
            (tree.kr, pytest.approx(0.25)),
            (tree.leaf, pytest.approx(0.25)),
            (tree.root, pytest.approx(0.25)),
        ]
        # In commit order, gapless: the two check-ins' events come just before.
        from schema.ids import uncursor

        seqs = [uncursor(e["cursor"]) for e in events]
        assert seqs == list(range(seqs[0], seqs[0] + 4))
        kinds = [(await socket.next("kinds"))["data"]["changes"] for _ in range(2)]
        assert [(k["kind"], k["sequence"], k["checkIn"]["id"]) for k in kinds] == [
            ("CHECK_IN_RETRACTED", seqs[2], typo),
            ("CHECK_IN_CORRECTED", seqs[3], fixed["checkIn"]["id"]),
        ]
    finally:
        await socket.close()


async def test_a_measurement_retraction_lists_only_what_the_caller_sees_and_not_in_a_closed_cycle(
    org: Org, db: Database
):
    tree, metric, _made = await measured_tree(org)
    private = await h.objective(org, tree.cycle, "Board only", visibility="PRIVATE")
    hidden_kr = await h.key_result(org, private, "Secret routes")
    bound = {"keyResultId": hidden_kr, "metricId": metric}
    await h.ok(org, "bindKeyResult", bound, "keyResult { id }")
    _row, key = await db.transaction(lambda s: organizations.create_api_key(s, org.id, "erp"))
    at = ago(1)
    recorded = {"measurements": [{"metricKey": "routes", "value": 60, "measuredAt": at}]}
    await h.ok(org, "recordMeasurements", recorded, "checkInsWritten", token=key)
    retraction = {"metricKey": "routes", "measuredAt": at, "reason": "wrong depot"}
    p = await h.mutate(org, "retractMeasurement", retraction, MEASURED, key)
    assert p["userErrors"] == []
    # Both check-ins are retracted; the key lists the one on the key result it may see.
    assert p["retractedCheckIns"] == [
        {
            "id": (await tree.state())["checkIns"]["edges"][0]["node"]["id"],
            "value": 60,
            "retracted": True,
        }
    ]
    made = await rows(db, "SELECT retracted_at FROM check_in WHERE value = 60")
    assert len(made) == 2 and all(r.retracted_at is not None for r in made)
    await assert_verified(db)
    # In a CLOSED cycle the record is read-only.
    again = {"measurements": [{"metricKey": "routes", "value": 70, "measuredAt": ago(0.5)}]}
    await h.ok(org, "recordMeasurements", again, "checkInsWritten")
    for status in ("REVIEW", "CLOSED"):
        await h.ok(org, "setCycleStatus", {"cycleId": tree.cycle, "status": status}, "cycle { id }")
    measured_at = (await rows(db, "SELECT measured_at FROM measurement WHERE value = 70"))[0]
    before = await snapshot(db)
    closed = {
        "metricKey": "routes",
        "measuredAt": measured_at.measured_at.isoformat(),
        "reason": "late",
    }
    p = await h.mutate(org, "retractMeasurement", closed, MEASURED)
    assert [(e["code"], e["field"]) for e in p["userErrors"]] == [("CYCLE_CLOSED", ["measuredAt"])]
    assert await snapshot(db) == before
