"""Items 4 and 5 of issue 15, through the API: realism on every key result (from its
record: its check-ins and those of the key result it was carried over from), the cycle
report's realism mix and unconfirmed scores, `Cycle.reviewDue`, and CYCLE_REVIEW_DUE
written once per cycle however many replicas run the reminders job."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from datetime import UTC, date, datetime, timedelta

import pytest

from schema.ids import decode_as, encode
from service import outage, reminders
from service.db import Database
from service.domain import enums as domain_enums
from service.domain.rules import cycle_bounds
from service.jobs import Periodic, Runner
from service.reminders import write_due_reminders
from service.usecases import commands, cycles, key_results, objectives, organizations
from tests import factories as h
from tests.factories import Org

WEEK = timedelta(weeks=1)

REALISM = "realism { verdict requiredRate observedRate ratio basis }"
KR_REALISM = f"query($id: ID!) {{ node(id: $id) {{ ... on KeyResult {{ {REALISM} }} }} }}"
REPORT = """query($id: ID!) { cycleReport(cycleId: $id) {
  cycle { name reviewDue }
  realism { verdict count } unconfirmedScores
  teams { team { name } realism { verdict count } unconfirmedScores }
} }"""


def ago(weeks: float) -> str:
    return (datetime.now(UTC) - weeks * WEEK).isoformat()


async def realism(org: Org, kr: str, token: str | None = None) -> dict:
    return (await org.call(KR_REALISM, {"id": kr}, token=token))["node"]["realism"]


async def record(org: Org, kr: str, *points: tuple[float, float]) -> None:
    """Backdated check-ins: (weeks ago, value)."""
    for weeks, value in points:
        await h.check_in(org, kr, value, measuredAt=ago(weeks))


def weeks_left(ends_on: date, start: date | None = None) -> float:
    begin, end = cycle_bounds(start or date.min, ends_on)
    return (end - max(datetime.now(UTC), begin)) / WEEK


def mix(counts: list[dict]) -> dict[str, int]:
    return {c["verdict"]: c["count"] for c in counts}


async def test_item4_realism_of_each_verdict_from_the_record(org: Org):
    today = datetime.now(UTC).date()
    ends_on = today + timedelta(weeks=6)
    cycle = await h.active_cycle(org, (today - timedelta(weeks=6)).isoformat(), ends_on.isoformat())
    transport = await h.team(org, "Transport")
    obj = await h.objective(org, cycle, "Ship more for less", teamId=transport)
    other = await h.objective(org, cycle, "Keep the lights on")
    # Rising 5 a week: 10, 20, 30 at 5, 3 and 1 weeks ago.
    rising = ((5, 10), (3, 20), (1, 30))
    easy = await h.key_result(org, obj, "Easy", start=0, target=50)
    stretch = await h.key_result(org, obj, "Stretch", start=0, target=75)
    unlikely = await h.key_result(org, obj, "Unlikely", start=0, target=150)
    for kr in (easy, stretch, unlikely):
        await record(org, kr, *rising)
    wrong_way = await h.key_result(org, obj, "Wrong way", start=0, target=100)
    await record(org, wrong_way, (5, 40), (3, 35), (1, 30))
    # "Reduce distribution cost per order from 4.20 to 3.57": falling is progress.
    cost = await h.key_result(org, other, "Cost per order", "DECREASE", 4.20, 3.57)
    await record(org, cost, (5, 4.20), (3, 4.10), (1, 4.00))
    short = await h.key_result(org, other, "Two points", start=0, target=100)
    await record(org, short, (3, 10), (1, 20))
    done = await h.key_result(org, other, "Done", "MILESTONE", None, None)
    await record(org, done, (5, 0), (3, 0), (1, 1))

    left = weeks_left(ends_on)
    cases = [
        (easy, "REALISTIC", 20 / left, 5.0, 3),
        (stretch, "STRETCH", 45 / left, 5.0, 3),
        (unlikely, "UNLIKELY", 120 / left, 5.0, 3),
        (wrong_way, "UNLIKELY", 70 / left, -2.5, 3),
        (cost, "STRETCH", 0.43 / left, 0.05, 3),
        (short, "UNKNOWN", 80 / left, None, 2),
        (done, "UNKNOWN", None, None, 3),
    ]
    for kr, verdict, required, observed, basis in cases:
        got = await realism(org, kr)
        assert got["verdict"] == verdict, (kr, got)
        assert got["basis"] == basis
        assert got["requiredRate"] == (None if required is None else pytest.approx(required, 1e-3))
        assert got["observedRate"] == (None if observed is None else pytest.approx(observed))
        if observed is not None and observed > 0:
            assert got["ratio"] == pytest.approx(required / observed, 1e-3)
        else:
            assert got["ratio"] is None

    report = (await org.call(REPORT, {"id": cycle}))["cycleReport"]
    assert report["cycle"]["reviewDue"] is False
    assert mix(report["realism"]) == {"REALISTIC": 1, "STRETCH": 2, "UNLIKELY": 2, "UNKNOWN": 2}
    assert [r["verdict"] for r in report["realism"]] == [
        "REALISTIC",
        "STRETCH",
        "UNLIKELY",
        "UNKNOWN",
    ]
    teams = {(t["team"] or {}).get("name"): t for t in report["teams"]}
    assert mix(teams["Transport"]["realism"]) == {
        "REALISTIC": 1,
        "STRETCH": 1,
        "UNLIKELY": 2,
        "UNKNOWN": 0,
    }
    assert mix(teams[None]["realism"]) == {
        "REALISTIC": 0,
        "STRETCH": 1,
        "UNLIKELY": 0,
        "UNKNOWN": 2,
    }
    assert report["unconfirmedScores"] is None  # not in REVIEW
    assert all(t["unconfirmedScores"] is None for t in report["teams"])

    # The CSV says the same, one key result a row.
    response = await org.client.get(
        f"/export/cycles/{cycle}.csv", headers={"Authorization": f"Bearer {org.admin_token}"}
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["key_result"]: r["realism"] for r in rows} == {
        "Easy": "REALISTIC",
        "Stretch": "STRETCH",
        "Unlikely": "UNLIKELY",
        "Wrong way": "UNLIKELY",
        "Cost per order": "STRETCH",
        "Two points": "UNKNOWN",
        "Done": "UNKNOWN",
    }
    assert {r["score_by_hand"] for r in rows} == {""}


async def test_item4_one_point_of_record_per_instant_and_value(org: Org):
    today = datetime.now(UTC).date()
    cycle = await h.active_cycle(
        org, (today - timedelta(weeks=6)).isoformat(), (today + timedelta(weeks=6)).isoformat()
    )
    kr = await h.key_result(org, await h.objective(org, cycle, "O"), start=0, target=60)
    at = ago(2)
    await h.check_in(org, kr, 10, measuredAt=at)
    await h.check_in(org, kr, 10, measuredAt=at)  # the same point, posted twice
    await h.check_in(org, kr, 20, measuredAt=ago(1))
    got = await realism(org, kr)
    assert (got["verdict"], got["basis"], got["observedRate"]) == ("UNKNOWN", 2, None)
    await h.check_in(org, kr, 12, measuredAt=at)  # another value at that instant counts
    got = await realism(org, kr)
    assert got["basis"] == 3 and got["verdict"] != "UNKNOWN"


async def test_item4_a_planning_review_sees_the_record_carried_over(org: Org):
    """Before the next cycle starts, a carried-over key result is judged by the record of
    the one it came from, and the whole next cycle counts as weeks left."""
    today = datetime.now(UTC).date()
    q1 = await h.active_cycle(
        org, (today - timedelta(weeks=11)).isoformat(), (today + timedelta(days=6)).isoformat()
    )
    q2_start, q2_end = today + timedelta(days=7), today + timedelta(days=7, weeks=12)
    q2 = await h.active_cycle(org, q2_start.isoformat(), q2_end.isoformat(), status="PLANNING")
    transport = await h.team(org, "Transport")
    obj = await h.objective(org, q1, "Fill the trucks", teamId=transport)
    fill = await h.key_result(org, obj, "Truck fill", start=0, target=100)
    await record(org, fill, (9, 10), (6, 25), (3, 40))  # 5 a week
    carried = await h.ok(
        org,
        "carryOverObjective",
        {"objectiveId": obj, "toCycleId": q2, "keyResultIds": [fill]},
        "objective { id } keyResults { id startValue currentValue }",
    )
    new_kr = carried["keyResults"][0]["id"]
    assert carried["keyResults"][0]["currentValue"] == 40
    await h.ok(
        org, "updateKeyResult", {"keyResultId": new_kr, "targetValue": 130}, "keyResult { id }"
    )
    fresh = await h.key_result(org, await h.objective(org, q2, "New"), start=0, target=10)

    got = await realism(org, new_kr)
    whole_cycle = weeks_left(q2_end, q2_start)
    assert whole_cycle == pytest.approx((12 * 7 + 1) / 7)  # now is before the start
    assert got["basis"] == 3
    assert got["observedRate"] == pytest.approx(5.0)
    assert got["requiredRate"] == pytest.approx(90 / whole_cycle)
    assert got["verdict"] == "STRETCH"

    report = (await org.call(REPORT, {"id": q2}))["cycleReport"]
    assert mix(report["realism"]) == {"REALISTIC": 0, "STRETCH": 1, "UNLIKELY": 0, "UNKNOWN": 1}
    teams = {(t["team"] or {}).get("name"): mix(t["realism"]) for t in report["teams"]}
    assert teams["Transport"]["STRETCH"] == 1 and teams[None]["UNKNOWN"] == 1
    assert (await realism(org, fresh))["basis"] == 0


async def test_item4_realism_follows_who_may_see(org: Org):
    today = datetime.now(UTC).date()
    cycle = await h.active_cycle(
        org, (today - timedelta(weeks=6)).isoformat(), (today + timedelta(weeks=6)).isoformat()
    )
    public = await h.key_result(org, await h.objective(org, cycle, "Open"), start=0, target=50)
    hidden_obj = await h.objective(org, cycle, "Board only", visibility="PRIVATE")
    hidden = await h.key_result(org, hidden_obj, start=0, target=50)
    for kr in (public, hidden):
        await record(org, kr, (5, 10), (3, 20), (1, 30))
    for role in ("MEMBER", "VIEWER"):
        user = await h.user(org, f"A {role.lower()}", role)
        token = org.token(decode_as(user, "User"))
        assert (await realism(org, public, token))["verdict"] == "REALISTIC"
        node = await org.call(KR_REALISM, {"id": hidden}, token=token)
        assert node["node"] is None
        report = (await org.call(REPORT, {"id": cycle}, token=token))["cycleReport"]
        assert sum(mix(report["realism"]).values()) == 1  # the hidden one is not counted
    report = (await org.call(REPORT, {"id": cycle}))["cycleReport"]
    assert mix(report["realism"])["REALISTIC"] == 2


async def _dashboard(org: Org, db: Database, n: int) -> int:
    """A team's dashboard with realism on each of 2n key results; its SQL statements."""
    p = org.admin
    now = datetime.now(UTC)
    team = await db.transaction(
        lambda s: organizations.create_team(s, p, commands.CreateTeam(f"Team {n}", None))
    )
    cycle = await db.transaction(
        lambda s: cycles.create_cycle(
            s,
            p,
            commands.CreateCycle(f"Cycle {n}", (now - 6 * WEEK).date(), (now + 6 * WEEK).date()),
        )
    )
    await db.transaction(
        lambda s: cycles.set_cycle_status(
            s, p, commands.SetCycleStatus(cycle.id, domain_enums.CycleStatus.ACTIVE)
        )
    )
    for i in range(n):
        obj = await db.transaction(
            lambda s, i=i: objectives.create_objective(
                s, p, commands.CreateObjective(cycle_id=cycle.id, title=f"O{i}", team_id=team.id)
            )
        )
        for k in range(2):
            kr = await db.transaction(
                lambda s, o=obj.id, k=k: key_results.create_key_result(
                    s,
                    p,
                    commands.CreateKeyResult(
                        objective_id=o,
                        title=f"K{k}",
                        type=domain_enums.KeyResultType.INCREASE,
                        start_value=0,
                        target_value=100,
                    ),
                )
            )
            for weeks, value in ((5, 10), (3, 20), (1, 30)):
                await db.transaction(
                    lambda s, kr=kr.id, w=weeks, v=value: key_results.check_in(
                        s,
                        p,
                        commands.CheckIn(key_result_id=kr, value=v, measured_at=now - w * WEEK),
                    )
                )
    query = """query($team: ID!, $cycle: ID!) { node(id: $team) { ... on Team {
      objectives(cycleId: $cycle, first: 100) { edges { node {
        cycle { reviewDue }
        keyResults { title realism { verdict requiredRate observedRate ratio basis } }
      } } } } }
      cycleReport(cycleId: $cycle) { realism { verdict count } } }"""
    response = await org.client.post(
        "/graphql",
        json={
            "query": query,
            "variables": {"team": encode("Team", team.id), "cycle": encode("Cycle", cycle.id)},
        },
        headers={"Authorization": f"Bearer {org.admin_token}"},
    )
    body = response.json()
    assert "errors" not in body, body
    krs = [k for e in body["data"]["node"]["objectives"]["edges"] for k in e["node"]["keyResults"]]
    assert len(krs) == 2 * n
    assert {(k["realism"]["verdict"], k["realism"]["basis"]) for k in krs} == {("UNLIKELY", 3)}
    assert mix(body["data"]["cycleReport"]["realism"])["UNLIKELY"] == 2 * n
    return int(response.headers["x-sql-statements"])


async def test_item4_realism_costs_the_same_statements_for_10_or_68_key_results(
    org: Org, db: Database
):
    ten = await _dashboard(org, db, 5)
    sixty_eight = await _dashboard(org, db, 34)
    print(f"dashboard with realism: {ten} statements for 10 key results, {sixty_eight} for 68")
    assert ten == sixty_eight


# --- item 5: review discipline ----------------------------------------------------------


async def _events(org: Org, kind: str, token: str | None = None) -> list[dict]:
    feed = await org.call(
        "{ events(first: 100) { edges { node { kind actor { id } subject { id "
        "... on Cycle { reviewDue status } } } } } }",
        token=token,
    )
    return [e["node"] for e in feed["events"]["edges"] if e["node"]["kind"] == kind]


async def test_item5_review_due_once_across_replicas(org: Org, database_url: str):
    today = datetime.now(UTC).date()
    ended = await h.active_cycle(
        org, (today - timedelta(weeks=13)).isoformat(), (today - timedelta(days=1)).isoformat()
    )
    running = await h.active_cycle(org, today.isoformat(), (today + WEEK).isoformat())
    reviewed = await h.active_cycle(
        org,
        (today - timedelta(weeks=13)).isoformat(),
        (today - timedelta(days=1)).isoformat(),
        status="REVIEW",
    )
    q = "query($id: ID!) { node(id: $id) { ... on Cycle { reviewDue } } }"
    due = {
        c: (await org.call(q, {"id": c}))["node"]["reviewDue"] for c in (ended, running, reviewed)
    }
    assert due == {ended: True, running: False, reviewed: False}

    # Four replicas, each with its own pool, run the job at once, three times over.
    replicas = [Database(database_url, pool_size=2) for _ in range(4)]
    try:
        written = []
        for _ in range(3):
            now = datetime.now(UTC)
            written += await asyncio.gather(
                *(r.transaction(lambda s, now=now: write_due_reminders(s, now)) for r in replicas)
            )
    finally:
        for r in replicas:
            await r.dispose()
    assert sum(written) == 1
    events = await _events(org, "CYCLE_REVIEW_DUE")
    assert events == [
        {
            "kind": "CYCLE_REVIEW_DUE",
            "actor": None,
            "subject": {"id": ended, "reviewDue": True, "status": "ACTIVE"},
        }
    ]
    # Org-wide: every role reads it.
    viewer = await h.user(org, "Vera Viewer", "VIEWER")
    assert len(await _events(org, "CYCLE_REVIEW_DUE", org.token(decode_as(viewer, "User")))) == 1
    # A day later, still nothing more; once reviewed, the cycle is no longer due.
    later = datetime.now(UTC) + timedelta(days=1)
    assert await org.db.transaction(lambda s: write_due_reminders(s, later)) == 0
    await h.ok(org, "setCycleStatus", {"cycleId": ended, "status": "REVIEW"}, "cycle { id }")
    assert (await org.call(q, {"id": ended}))["node"]["reviewDue"] is False
    # The running cycle's end passes: its own single event.
    after = datetime.combine(today + WEEK + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    assert await org.db.transaction(lambda s: write_due_reminders(s, after)) == 1
    assert await org.db.transaction(lambda s: write_due_reminders(s, after)) == 0
    subjects = [e["subject"]["id"] for e in await _events(org, "CYCLE_REVIEW_DUE")]
    assert sorted(subjects) == sorted([ended, running])


async def test_item5_the_reminders_job_writes_and_logs_its_failures(
    org: Org, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    today = datetime.now(UTC).date()
    ended = await h.active_cycle(
        org, (today - timedelta(weeks=2)).isoformat(), (today - timedelta(days=1)).isoformat()
    )
    caplog.set_level(logging.INFO, logger="service.reminders")
    job = asyncio.create_task(reminders_job(org.db).run_forever())
    try:
        for _ in range(500):
            if await _events(org, "CYCLE_REVIEW_DUE"):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # many more runs: still one event
    finally:
        job.cancel()
    assert [e["subject"]["id"] for e in await _events(org, "CYCLE_REVIEW_DUE")] == [ended]
    assert any("wrote 1 reminders" in r.getMessage() for r in caplog.records)

    # A database that is not there: an outage, said in one rate-limited line with the rest
    # of the service's (service/outage.py), no stack and no flood; the job keeps going.
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="okr.outage")
    # Its own rate limit: another test's outage in this process must not hold its line.
    monkeypatch.setattr(outage, "outage_log", outage.RateLimitedLog(outage.log))
    gone = Database(f"postgresql+asyncpg://nobody@127.0.0.1:{h.free_port()}/nothing", pool_size=1)
    job = asyncio.create_task(reminders_job(gone).run_forever())
    try:
        await asyncio.sleep(0.5)
        assert not job.done()
    finally:
        job.cancel()
        await gone.dispose()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    said = [r for r in caplog.records if "database unavailable (job runner)" in r.getMessage()]
    assert 1 <= len(said) <= 2, [r.getMessage() for r in caplog.records]
    assert all(r.exc_info is None for r in said)


def reminders_job(db: Database) -> Runner:
    """The job runner with the reminders alone, queued every 10 ms (service/jobs.py)."""
    every = Periodic(reminders.KIND, reminders.KIND, 0.01)
    handlers = {reminders.KIND: reminders.handler(db)}
    return Runner(db, handlers, periodic=[every], poll_seconds=0.01)


async def test_item5_report_counts_scores_nobody_set_or_confirmed(org: Org):
    today = datetime.now(UTC).date()
    cycle = await h.active_cycle(
        org, (today - timedelta(weeks=12)).isoformat(), (today - timedelta(days=1)).isoformat()
    )
    transport = await h.team(org, "Transport")
    obj = await h.objective(org, cycle, "Ship", teamId=transport)
    lone = await h.objective(org, cycle, "Alone")
    set_by_hand = await h.key_result(org, obj, "Set")
    confirmed = await h.key_result(org, obj, "Confirmed")
    untouched = await h.key_result(org, obj, "Untouched")
    await h.key_result(org, lone, "Never looked at")
    await h.check_in(org, confirmed, 40, measuredAt=ago(2))
    report = (await org.call(REPORT, {"id": cycle}))["cycleReport"]
    assert report["cycle"]["reviewDue"] is True and report["unconfirmedScores"] is None

    await h.ok(org, "setCycleStatus", {"cycleId": cycle, "status": "REVIEW"}, "cycle { id }")
    report = (await org.call(REPORT, {"id": cycle}))["cycleReport"]
    assert report["unconfirmedScores"] == 4  # the defaults from progress count as unset
    score = "keyResult { score scoreReason }"
    await h.ok(org, "scoreKeyResult", {"keyResultId": set_by_hand, "score": 0.7}, score)
    # Confirming the default (0.4, from progress) by hand, without a reason, counts too.
    got = await h.ok(org, "scoreKeyResult", {"keyResultId": confirmed, "score": 0.4}, score)
    assert got["keyResult"] == {"score": 0.4, "scoreReason": None}
    bad = await h.mutate(org, "scoreKeyResult", {"keyResultId": untouched, "score": 2}, score)
    assert bad["userErrors"][0]["field"] == ["score"]  # refused: changes nothing
    report = (await org.call(REPORT, {"id": cycle}))["cycleReport"]
    assert report["unconfirmedScores"] == 2
    teams = {(t["team"] or {}).get("name"): t["unconfirmedScores"] for t in report["teams"]}
    assert teams == {"Transport": 1, None: 1}
    response = await org.client.get(
        f"/export/cycles/{cycle}.csv", headers={"Authorization": f"Bearer {org.admin_token}"}
    )
    by_hand = {
        r["key_result"]: r["score_by_hand"] for r in csv.DictReader(io.StringIO(response.text))
    }
    assert by_hand == {"Set": "yes", "Confirmed": "yes", "Untouched": "no", "Never looked at": "no"}
    await h.ok(org, "setCycleStatus", {"cycleId": cycle, "status": "CLOSED"}, "cycle { id }")
    closed = (await org.call(REPORT, {"id": cycle}))["cycleReport"]
    assert closed["unconfirmedScores"] == 2  # the record of a review left unfinished


async def test_item4_the_record_includes_the_bound_metrics_measurements_once(org: Org):
    """The measurements of the bound metric are record, from before the cycle too; a
    measurement and the check-in made from it are one point, not two."""
    today = datetime.now(UTC).date()
    ends_on = today + timedelta(weeks=4)
    cycle = await h.active_cycle(org, (today - timedelta(weeks=1)).isoformat(), ends_on.isoformat())
    obj = await h.objective(org, cycle, "Ship for less")
    cost = await h.key_result(org, obj, "Cost per order", "DECREASE", 4.20, 3.57)
    metric = await h.ok(
        org,
        "createMetric",
        {"key": "cost_per_order", "name": "Cost per order", "unit": "EUR"},
        "metric { id }",
    )
    await h.ok(
        org,
        "bindKeyResult",
        {"keyResultId": cost, "metricId": metric["metric"]["id"]},
        "keyResult { id }",
    )
    assert (await realism(org, cost))["basis"] == 0
    # Three weeks of history before the cycle (record only), then one inside it, which
    # also becomes a check-in: four points of record, not five.
    points = [(3.5, 4.35), (2.5, 4.30), (1.5, 4.25), (0.5, 4.20)]
    payload = await h.ok(
        org,
        "recordMeasurements",
        {
            "measurements": [
                {"metricKey": "cost_per_order", "value": v, "measuredAt": ago(w)} for w, v in points
            ]
        },
        "checkIns { id }",
    )
    assert len(payload["checkIns"]) == 1
    got = await realism(org, cost)
    assert got["basis"] == 4
    assert got["observedRate"] == pytest.approx(0.05, 1e-6)  # falling 0.05 a week: progress
    assert got["requiredRate"] == pytest.approx((4.20 - 3.57) / weeks_left(ends_on), 1e-3)
    assert got["verdict"] == "UNLIKELY"  # 0.16 a week needed, three times the pace
