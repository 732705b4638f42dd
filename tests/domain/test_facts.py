"""The derived facts (service/domain/facts.py): each in one pure function, table tests
beside the rules, and the reminders' SQL twin of the due date held equal to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from schema.ids import decode_as
from service import clock
from service.domain import facts
from service.domain.enums import CycleStatus, ProgressStatus
from service.models import Cycle, KeyResult, Objective, Team
from service.reminders import write_due_reminders
from tests import factories as h
from tests.factories import Org

THRESHOLDS = (0.10, 0.25)
Q = (date(2026, 1, 1), date(2026, 1, 10))  # ten days
AT_DAY_6 = datetime(2026, 1, 6, tzinfo=UTC)  # halfway: expected progress 0.5


@dataclass
class C:
    starts_on: date = Q[0]
    ends_on: date = Q[1]
    status: str = "ACTIVE"


@dataclass
class K:
    created_at: datetime
    last_check_in_at: datetime | None = None
    type: str = "INCREASE"
    start_value: float = 0.0
    target_value: float = 100.0


@dataclass
class P:
    measured_at: datetime
    value: float
    retracted_at: datetime | None = None


def test_expected_progress_is_the_share_of_the_cycle_gone():
    assert facts.expected_progress(C(), AT_DAY_6) == 0.5
    assert facts.expected_progress(C(), datetime(2025, 12, 1, tzinfo=UTC)) == 0.0
    assert facts.expected_progress(C(), datetime(2026, 2, 1, tzinfo=UTC)) == 1.0


@pytest.mark.parametrize(
    ("progress", "checked_in", "status"),
    [
        (1.0, False, ProgressStatus.ACHIEVED),  # achieved beats not started
        (0.3, False, ProgressStatus.NOT_STARTED),
        (0.4, True, ProgressStatus.ON_TRACK),  # gap 0.10: on track, the bound included
        (0.39, True, ProgressStatus.AT_RISK),
        (0.25, True, ProgressStatus.AT_RISK),  # gap 0.25
        (0.24, True, ProgressStatus.OFF_TRACK),
        (0.9, True, ProgressStatus.ON_TRACK),  # ahead of the pace
    ],
)
def test_status_against_the_pace(progress, checked_in, status):
    assert facts.status(progress, checked_in, C(), THRESHOLDS, AT_DAY_6) is status


def test_statuses_of_a_list_are_each_items_status():
    items = [(1.0, False), (0.3, False), (0.4, True), (0.24, True)]
    assert facts.statuses(items, C(), THRESHOLDS, AT_DAY_6) == [
        facts.status(p, c, C(), THRESHOLDS, AT_DAY_6) for p, c in items
    ]
    assert facts.statuses([], C(), THRESHOLDS, AT_DAY_6) == []


def test_the_organizations_bounds_move_the_status():
    assert facts.status(0.3, True, C(), (0.2, 0.3), AT_DAY_6) is ProgressStatus.ON_TRACK
    assert facts.status(0.3, True, C(), (0.0, 0.1), AT_DAY_6) is ProgressStatus.OFF_TRACK


def test_cadence_is_the_teams_override_else_the_organizations():
    assert facts.cadence(3, 7) == 3
    assert facts.cadence(None, 7) == 7


def test_staleness_is_the_cadence_plus_a_grace_day_in_an_active_cycle():
    created = datetime(2026, 1, 1, tzinfo=UTC)
    kr = K(created_at=created)
    assert facts.last_activity(kr) == created
    assert not facts.key_result_stale(kr, C(), 3, created + timedelta(days=4))
    assert facts.key_result_stale(kr, C(), 3, created + timedelta(days=4, seconds=1))
    # A check-in starts a new stretch.
    checked = K(created_at=created, last_check_in_at=created + timedelta(days=3))
    assert facts.last_activity(checked) == created + timedelta(days=3)
    assert not facts.key_result_stale(checked, C(), 3, created + timedelta(days=5))
    # Outside ACTIVE nothing goes stale.
    for status in ("PLANNING", "REVIEW", "CLOSED"):
        assert not facts.key_result_stale(kr, C(status=status), 3, created + timedelta(days=30))


def test_an_objective_is_stale_when_one_of_its_key_results_is():
    created = datetime(2026, 1, 1, tzinfo=UTC)
    now = created + timedelta(days=5)
    fresh = K(created_at=created, last_check_in_at=now - timedelta(hours=1))
    silent = K(created_at=created)
    assert facts.objective_stale([fresh, silent], C(), 3, now)
    assert not facts.objective_stale([fresh], C(), 3, now)
    assert not facts.objective_stale([], C(), 3, now)
    assert not facts.objective_stale([silent], C(status="REVIEW"), 3, now)


def test_next_check_in_due_and_rhythm():
    created = datetime(2026, 1, 1, tzinfo=UTC)
    kr = K(created_at=created)
    assert facts.next_check_in_due(kr, C(), 3) == created + timedelta(days=3)
    assert facts.next_check_in_due(kr, C(status="CLOSED"), 3) is None
    assert not facts.in_rhythm(kr, 3, created)  # a creation is not a check-in
    checked = K(created_at=created, last_check_in_at=created + timedelta(days=1))
    assert facts.next_check_in_due(checked, C(), 3) == created + timedelta(days=4)
    assert facts.in_rhythm(checked, 3, created + timedelta(days=4))
    assert not facts.in_rhythm(checked, 3, created + timedelta(days=4, seconds=1))


def test_a_forecast_reads_the_check_ins_not_retracted_inside_the_cycle():
    day = lambda n: datetime(2026, 1, n, tzinfo=UTC)  # noqa: E731
    history = [
        P(day(3), 30.0),
        P(day(1), 10.0),
        P(day(2), 99.0, retracted_at=day(2)),  # retracted: left out
        P(datetime(2025, 12, 30, tzinfo=UTC), 500.0),  # before the cycle: left out
        P(datetime(2026, 1, 11, tzinfo=UTC), 500.0),  # after its last day: left out
    ]
    assert facts.forecast_points(history, C()) == [(day(1), 10.0), (day(3), 30.0)]
    got = facts.forecast(K(created_at=day(1)), history, C(), THRESHOLDS)
    assert got is not None
    # 10 a day from 10 on day 1, read at the end of day 10 (the start of 11 January): 110.
    assert got.value == pytest.approx(110.0)
    assert got.status is ProgressStatus.ACHIEVED
    assert facts.forecast(K(created_at=day(1)), history[:1], C(), THRESHOLDS) is None


_days = st.integers(min_value=1, max_value=30)


@settings(max_examples=200, deadline=None)
@given(
    age=st.floats(0, 40),
    checked=st.one_of(st.none(), st.floats(0, 40)),
    cadence=_days,
    status=st.sampled_from(list(CycleStatus)),
)
def test_stale_is_exactly_past_the_due_date_and_a_grace_day(age, checked, cadence, status):
    now = datetime(2026, 1, 20, tzinfo=UTC)
    kr = K(
        created_at=now - timedelta(days=age),
        last_check_in_at=None if checked is None else now - timedelta(days=min(checked, age)),
    )
    cycle = C(ends_on=date(2026, 3, 31), status=str(status))
    due = facts.next_check_in_due(kr, cycle, cadence)
    stale = facts.key_result_stale(kr, cycle, cadence, now)
    if status is not CycleStatus.ACTIVE:
        assert due is None and not stale
    else:
        assert due is not None
        assert stale == (now > due + timedelta(days=1))


async def test_the_reminders_sql_agrees_with_the_due_date(org: Org):
    """service/reminders.py decides in SQL which key results are overdue; at every instant
    the key results it has reminded of are exactly those `facts.next_check_in_due` says are
    due before it (team cadences, the organization's, check-ins starting new stretches)."""
    today = datetime.now(UTC)
    cycle = await h.active_cycle(
        org,
        starts_on=(today - timedelta(days=40)).date().isoformat(),
        ends_on=(today + timedelta(days=60)).date().isoformat(),
    )
    fast = await h.team(org, "Fast")
    await h.ok(org, "setCheckInCadence", {"teamId": fast, "days": 2}, "days")
    await h.ok(org, "setCheckInCadence", {"days": 5}, "days")
    objectives = [
        await h.objective(org, cycle, "Fast one", teamId=fast),
        await h.objective(org, cycle, "Org-wide"),
    ]
    krs: list[str] = []
    try:
        for n, age in enumerate([0.5, 1.5, 2.5, 4.0, 6.0, 9.0, 13.0]):
            for objective in objectives:
                clock.start(today - timedelta(days=age))
                kr = await h.key_result(org, objective, f"KR {n}")
                krs.append(kr)
                if n % 3 == 1:  # some checked in a day after their creation
                    clock.start(today - timedelta(days=age) + timedelta(days=1))
                    await h.check_in(org, kr, 10)
    finally:
        clock.start(None)

    async def due_dates() -> dict[int, datetime | None]:
        async def read(session):
            rows = (
                await session.execute(
                    select(KeyResult, Cycle, Team.check_in_cadence_days)
                    .join(Objective, Objective.id == KeyResult.objective_id)
                    .join(Cycle, Cycle.id == Objective.cycle_id)
                    .outerjoin(Team, Team.id == Objective.team_id)
                    .where(KeyResult.organization_id == org.id)
                )
            ).all()
            return {
                kr.id: facts.next_check_in_due(kr, c, facts.cadence(team_days, 5))
                for kr, c, team_days in rows
            }

        return await org.db.transaction(read)

    due = await due_dates()
    assert set(due) == {decode_as(k, "KeyResult") for k in krs}
    reminded: set[int] = set()
    for later in [0, 0.4, 1, 2.2, 4, 7, 12]:
        instant = today + timedelta(days=later)
        await org.db.transaction(lambda s, at=instant: write_due_reminders(s, at))
        feed = await org.call(
            "{ events(last: 100) { pageInfo { hasPreviousPage } "
            "edges { node { kind subject { id } } } } }"
        )
        assert not feed["events"]["pageInfo"]["hasPreviousPage"]
        reminded = {
            decode_as(e["node"]["subject"]["id"], "KeyResult")
            for e in feed["events"]["edges"]
            if e["node"]["kind"] == "CHECK_IN_DUE"
        }
        expected = {i for i, d in due.items() if d is not None and d < instant}
        assert reminded == expected, later
    assert reminded == set(due)  # in the end every one of them fell due
