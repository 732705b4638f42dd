"""Reviews and what follows: carry-over, history, cycle reports and their CSV, check-in
reminders and cadences."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from service.reminders import write_due_reminders
from service.sql import REMINDER_LOCK
from tests import factories as h
from tests.factories import Org

CARRY = (
    "objective { id title cycle { name } parent { id } carriedFrom { id } "
    "keyResults { title startValue currentValue targetValue progress } } "
    "carriedFrom { id } keyResults { id startValue carriedFrom { id } }"
)


async def test_carry_over_keeps_values_and_alignment(org: Org):
    q1 = await h.active_cycle(org, "2026-07-01", "2026-09-30")
    q2 = await h.active_cycle(org, "2026-10-01", "2026-12-31", status="PLANNING")
    parent = await h.objective(org, q1, "Reduce distribution costs")
    child = await h.objective(org, q1, "Consolidate freight", parentId=parent)
    cost = await h.key_result(org, parent, "Cost per order", "DECREASE", 4.20, 3.57)
    fill = await h.key_result(org, child, "Truck fill", "INCREASE", 68, 85)
    done = await h.key_result(org, parent, "Supplier signed", "MILESTONE", None, None)
    await h.check_in(org, cost, 3.90)
    await h.check_in(org, fill, 80)
    await h.check_in(org, done, 1)

    # The child first: its parent has not been carried over yet.
    p = await h.ok(
        org,
        "carryOverObjective",
        {"objectiveId": child, "toCycleId": q2, "keyResultIds": [fill]},
        CARRY,
    )
    new_child = p["objective"]["id"]
    assert p["objective"]["parent"] is None
    assert p["objective"]["keyResults"] == [
        {
            "title": "Truck fill",
            "startValue": 80.0,
            "currentValue": 80.0,
            "targetValue": 85.0,
            "progress": 0.0,
        }
    ]
    assert p["keyResults"][0]["carriedFrom"] == {"id": fill}
    p = await h.ok(
        org,
        "carryOverObjective",
        {"objectiveId": parent, "toCycleId": q2, "keyResultIds": [cost, done]},
        CARRY,
    )
    new_parent = p["objective"]["id"]
    assert p["objective"]["carriedFrom"] == {"id": parent}
    assert p["carriedFrom"] == {"id": parent}
    assert [k["startValue"] for k in p["keyResults"]] == [3.90, 0.0]
    # The child carried before is now aligned under the carried parent.
    q = "query($id: ID!) { node(id: $id) { ... on Objective { parent { id } } } }"
    assert (await org.call(q, {"id": new_child}))["node"]["parent"] == {"id": new_parent}
    # The old cycle is untouched.
    assert await h.progress(org, cost) == pytest.approx(0.3 / 0.63)

    again = await h.mutate(
        org, "carryOverObjective", {"objectiveId": parent, "toCycleId": q2}, "__typename"
    )
    assert again["userErrors"][0]["code"] == "CONFLICT"
    back = await h.mutate(
        org, "carryOverObjective", {"objectiveId": new_parent, "toCycleId": q1}, "__typename"
    )
    assert back["userErrors"][0]["code"] == "INVALID"
    reached = await h.key_result(org, child, "Reached", "INCREASE", 0, 10)
    await h.check_in(org, reached, 10)
    q3 = await h.active_cycle(org, "2027-01-01", "2027-03-31", status="PLANNING")
    bad = await h.mutate(
        org,
        "carryOverObjective",
        {"objectiveId": child, "toCycleId": q3, "keyResultIds": [reached]},
        "__typename",
    )
    assert bad["userErrors"][0]["code"] == "INVALID"
    assert bad["userErrors"][0]["field"] == ["keyResultIds"]
    wrong = await h.mutate(
        org,
        "carryOverObjective",
        {"objectiveId": child, "toCycleId": q3, "keyResultIds": [cost]},
        "__typename",
    )
    assert wrong["userErrors"][0]["code"] == "INVALID"


async def test_history_tells_who_changed_what(org: Org):
    cycle = await h.active_cycle(org)
    obj = await h.objective(org, cycle, "First title")
    await h.ok(
        org,
        "updateObjective",
        {"objectiveId": obj, "title": "Second title", "weight": 2},
        "objective { id }",
    )
    kr = await h.key_result(org, obj)
    await h.check_in(org, kr, 30)
    q = """query($id: ID!) { node(id: $id) { ... on Objective {
        history(first: 10) { totalCount edges { node { kind actor { name } before after } } }
    } } }"""
    history = (await org.call(q, {"id": obj}))["node"]["history"]
    kinds = [e["node"]["kind"] for e in history["edges"]]
    assert kinds == ["OBJECTIVE_UPDATED", "OBJECTIVE_CREATED"]  # newest first
    update = history["edges"][0]["node"]
    assert update["actor"] == {"name": "Ada Admin"}
    assert update["before"] == {"title": "First title", "weight": 1.0}
    assert update["after"] == {"title": "Second title", "weight": 2.0}
    kq = (
        "query($id: ID!) { node(id: $id) { ... on KeyResult { history { edges { node { kind "
        "checkIn { value } } } } } } }"
    )
    kinds = [
        e["node"]["kind"] for e in (await org.call(kq, {"id": kr}))["node"]["history"]["edges"]
    ]
    assert kinds == ["CHECK_IN", "KEY_RESULT_CREATED"]


async def test_cycle_report_and_csv(org: Org, client):
    cycle = await h.active_cycle(org, "2020-01-01", "2020-03-31")  # over: expected 1
    warehouse = await h.team(org, "Warehouse")
    root = await h.objective(org, cycle, "Root", teamId=warehouse)
    aligned = await h.objective(org, cycle, "Aligned", teamId=warehouse, parentId=root)
    a = await h.key_result(org, root, "A")
    b = await h.key_result(org, aligned, "B")
    await h.key_result(org, aligned, "Never checked in")
    await h.check_in(org, a, 100)  # ACHIEVED
    await h.check_in(org, b, 50)
    q = """query($c: ID!) { cycleReport(cycleId: $c) { cycle { name } teams {
        team { name } objectives byStatus { status count } meanProgress meanScore
        staleKeyResults unalignedObjectives checkInRhythm } } }"""
    report = (await org.call(q, {"c": cycle}))["cycleReport"]
    team = report["teams"][0]
    assert team["team"] == {"name": "Warehouse"}
    assert team["objectives"] == 2
    # root: (1 + 0.25) / 2 = 0.625, gap 0.375: OFF_TRACK; aligned: 0.25, OFF_TRACK
    assert team["byStatus"] == [{"status": "OFF_TRACK", "count": 2}]
    assert team["meanProgress"] == pytest.approx((0.625 + 0.25) / 2)
    assert team["meanScore"] is None
    assert team["unalignedObjectives"] == 1
    assert team["staleKeyResults"] == 0  # all created or checked in just now
    assert team["checkInRhythm"] == pytest.approx(2 / 3)
    r = await client.get(
        f"/export/cycles/{cycle}.csv", headers={"Authorization": f"Bearer {org.admin_token}"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["objective"], row["key_result"]) for row in rows] == [
        ("Root", "A"),
        ("Aligned", "B"),
        ("Aligned", "Never checked in"),
    ]
    assert rows[0]["status"] == "ACHIEVED" and rows[1]["progress"] == "0.5"
    assert (await client.get(f"/export/cycles/{cycle}.csv")).status_code == 401


async def test_check_in_reminders_once_per_overdue_stretch(org: Org):
    cycle = await h.active_cycle(org)
    team = await h.team(org, "Transport")
    obj = await h.objective(org, cycle, "O", teamId=team)
    with h.clock_at(datetime.now(UTC) - timedelta(days=10)):  # defined 10 days ago
        kr = await h.key_result(org, obj)
    quiet = await h.key_result(org, obj, "Fresh")
    now = datetime.now(UTC)
    assert await org.db.transaction(lambda s: write_due_reminders(s, now)) == 1
    assert await org.db.transaction(lambda s: write_due_reminders(s, now)) == 0  # once
    feed = await org.call("{ events(first: 100) { edges { node { kind subject { id } } } } }")
    due = [
        e["node"]["subject"]["id"]
        for e in feed["events"]["edges"]
        if e["node"]["kind"] == "CHECK_IN_DUE"
    ]
    assert due == [kr]
    # A check-in starts a new stretch; a shorter team cadence makes it due sooner.
    await h.check_in(org, kr, 5)
    await h.ok(org, "setCheckInCadence", {"teamId": team, "days": 1}, "days")
    later = now + timedelta(days=2)
    assert await org.db.transaction(lambda s: write_due_reminders(s, later)) == 2
    q = "query($id: ID!) { node(id: $id) { ... on KeyResult { nextCheckInDue } } }"
    due_at = datetime.fromisoformat((await org.call(q, {"id": quiet}))["node"]["nextCheckInDue"])
    assert due_at - now < timedelta(days=1, minutes=1)
    # Another replica holding the lock: this one writes nothing.
    async with org.db.engine.connect() as other:
        await other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": REMINDER_LOCK})
        much_later = now + timedelta(days=30)
        assert await org.db.transaction(lambda s: write_due_reminders(s, much_later)) == 0
        await other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": REMINDER_LOCK})
    bad = await h.mutate(org, "setCheckInCadence", {"days": 0}, "days")
    assert bad["userErrors"][0]["code"] == "INVALID"


async def test_backdated_values_progress_as_of_and_history(org: Org):
    today = datetime.now(UTC).date()
    start = today - timedelta(days=60)
    cycle = await h.active_cycle(org, start.isoformat(), (today + timedelta(days=30)).isoformat())
    with h.clock_at(datetime.combine(start, datetime.min.time(), tzinfo=UTC)):
        # defined at the cycle's start
        root = await h.objective(org, cycle, "Root")
        child = await h.objective(org, cycle, "Child", parentId=root)
        kr = await h.key_result(org, root, "Own")
        other = await h.key_result(org, child, "Child's")

    def day(n: int) -> str:
        return datetime.combine(
            start + timedelta(days=n), datetime.min.time(), tzinfo=UTC
        ).isoformat()

    await h.check_in(org, kr, 40, measuredAt=day(10))
    await h.check_in(org, kr, 70, measuredAt=day(20))
    late = await h.check_in(org, kr, 55, measuredAt=day(15))  # arrives last, measured earlier
    assert late["keyResult"]["progress"] == pytest.approx(0.7)  # still the latest measured
    await h.check_in(org, other, 100, measuredAt=day(30))
    q = """query($id: ID!, $t: DateTime) { node(id: $id) {
        ... on KeyResult { progress(asOf: $t) currentValue }
        ... on Objective { progress(asOf: $t) } } }"""
    expectations = [
        (kr, day(5), 0.0),
        (kr, day(12), 0.4),
        (kr, day(17), 0.55),
        (kr, None, 0.7),
        (root, day(12), 0.2),
        (root, day(31), (0.7 + 1) / 2),
        (root, None, (0.7 + 1) / 2),
    ]
    for node, at, progress in expectations:
        got = (await org.call(q, {"id": node, "t": at}))["node"]["progress"]
        assert got == pytest.approx(progress), (node, at)
    hq = """query($id: ID!, $from: DateTime!, $to: DateTime!) { node(id: $id) {
        ... on KeyResult { progressHistory(from: $from, to: $to, interval: WEEK) {
            at progress } } } }"""
    series = (await org.call(hq, {"id": kr, "from": day(0), "to": day(21)}))["node"]
    # days 0, 7, 14, 21: nothing yet, nothing yet, 40 (day 10), 70 (day 20)
    assert [p["progress"] for p in series["progressHistory"]] == [
        0.0,
        0.0,
        pytest.approx(0.4),
        pytest.approx(0.7),
    ]
    too_many = await org.call(
        hq.replace("WEEK", "HOUR"), {"id": kr, "from": day(0), "to": day(30)}, expect_errors=True
    )
    assert "at most 400 points" in too_many["errors"][0]["message"]
    for bad in (day(100), day(-1)):
        p = await h.mutate(
            org, "checkIn", {"keyResultId": kr, "value": 1, "measuredAt": bad}, "__typename"
        )
        assert p["userErrors"][0]["field"] == ["measuredAt"]
    async with org.db.connect() as conn:
        from service.verify import verify

        assert (await verify(conn))[1] == []


async def test_nothing_carries_into_a_closed_cycle(org: Org):
    old = await h.active_cycle(org, "2026-01-01", "2026-03-31")
    obj = await h.objective(org, old, "O")
    closed = await h.active_cycle(org, "2026-04-01", "2026-06-30", status="CLOSED")
    p = await h.mutate(
        org, "carryOverObjective", {"objectiveId": obj, "toCycleId": closed}, "__typename"
    )
    assert [e["code"] for e in p["userErrors"]] == ["CYCLE_CLOSED"]
