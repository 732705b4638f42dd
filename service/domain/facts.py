"""Each derived fact of an objective, key result or team, decided in one pure function.

docs/design.md states the rules (status against the cycle's pace, staleness, the
check-in cadence, the forecast); service/domain/rules.py holds their arithmetic. This
module is the one place that puts the rows' columns together into a fact, so every
reader (the executor's resolvers, the planned reads, team progress, the cycle report,
the roll-up's event payloads) asks the same question the same way:

- `expected_progress(cycle, now)`: where the cycle's pace says progress should be;
- `status(progress, checked_in, cycle, thresholds, now)` and `statuses(...)` for lists;
- `cadence(team_days, organization_days)`: a team's override, else the organization's;
- `last_activity(kr)`, `key_result_stale(kr, cycle, cadence, now)`,
  `objective_stale(krs, cycle, cadence, now)`, `stale(cycle, last, cadence, now)`;
- `next_check_in_due(kr, cycle, cadence)`, `in_rhythm(kr, cadence, now)`;
- `forecast_points(check_ins, cycle)` (the window a forecast reads) and
  `forecast(kr, check_ins, cycle, thresholds)`.

Rows are anything with the named attributes (SQLModel rows, SQLAlchemy rows, the planned
reads' records): lists in, lists out, no I/O. The SQL twins (the status bound in
service/sql.py, the reminders' due dates in service/reminders.py) are held equal to these
by property tests in tests/domain/test_facts.py and tests/domain/test_shared_sql.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from service.domain import rules
from service.domain.enums import CycleStatus, KeyResultType, ProgressStatus


class Dated(Protocol):
    """A cycle's dates (a cycle row, or a row that carries them)."""

    @property
    def starts_on(self) -> date: ...
    @property
    def ends_on(self) -> date: ...


class CycleLike(Dated, Protocol):
    @property
    def status(self) -> Any: ...  # a CycleStatus or its name


class KeyResultLike(Protocol):
    @property
    def last_check_in_at(self) -> datetime | None: ...
    @property
    def created_at(self) -> datetime: ...


class CheckInLike(Protocol):
    @property
    def measured_at(self) -> datetime: ...
    @property
    def value(self) -> float: ...
    @property
    def retracted_at(self) -> datetime | None: ...


Thresholds = tuple[float, float]  # (on-track gap, at-risk gap): the organization's bounds


def _cycle_status(cycle: CycleLike) -> CycleStatus:
    return CycleStatus(cycle.status)


def expected_progress(cycle: Dated, now: datetime) -> float:
    """How far through its cycle `now` is, 0 to 1: the pace status is read against."""
    return rules.expected_progress(cycle.starts_on, cycle.ends_on, now)


def status(
    progress: float, checked_in: bool, cycle: Dated, thresholds: Thresholds, now: datetime
) -> ProgressStatus:
    """An objective's or key result's status against its cycle's pace."""
    return rules.progress_status(progress, expected_progress(cycle, now), checked_in, *thresholds)


def statuses(
    items: Iterable[tuple[float, bool]],
    cycle: Dated,
    thresholds: Thresholds,
    now: datetime,
) -> list[ProgressStatus]:
    """`status` of many items of one cycle: (progress, checked in) in, statuses out."""
    expected = expected_progress(cycle, now)
    return [rules.progress_status(p, expected, c, *thresholds) for p, c in items]


def cadence(team_days: int | None, organization_days: int) -> int:
    """Days between check-ins: the team's override when it has one, else the
    organization's."""
    return team_days if team_days else organization_days


def last_activity(kr: KeyResultLike) -> datetime:
    """The latest check-in not retracted, or the key result's creation."""
    return kr.last_check_in_at or kr.created_at


def stale(cycle: CycleLike, last: datetime, cadence_days: int, now: datetime) -> bool:
    """Silence is never green: ACTIVE and nothing since `last` for the cadence plus a
    grace day."""
    return rules.is_stale(_cycle_status(cycle), last, cadence_days, now)


def key_result_stale(kr: KeyResultLike, cycle: CycleLike, cadence_days: int, now: datetime) -> bool:
    return stale(cycle, last_activity(kr), cadence_days, now)


def objective_stale(
    krs: Iterable[KeyResultLike], cycle: CycleLike, cadence_days: int, now: datetime
) -> bool:
    """An objective is stale when one of its (live) key results is."""
    if _cycle_status(cycle) is not CycleStatus.ACTIVE:
        return False
    return any(key_result_stale(kr, cycle, cadence_days, now) for kr in krs)


def next_check_in_due(kr: KeyResultLike, cycle: CycleLike, cadence_days: int) -> datetime | None:
    """When the next check-in is due; None outside an ACTIVE cycle."""
    if _cycle_status(cycle) is not CycleStatus.ACTIVE:
        return None
    return last_activity(kr) + timedelta(days=cadence_days)


def in_rhythm(kr: KeyResultLike, cadence_days: int, now: datetime) -> bool:
    """Checked in within its cadence (a creation does not count)."""
    last = kr.last_check_in_at
    return last is not None and now - last <= timedelta(days=cadence_days)


def forecast_points(check_ins: Iterable[CheckInLike], cycle: Dated) -> list[tuple[datetime, float]]:
    """What a forecast reads: the check-ins not retracted, measured inside the cycle, by
    instant."""
    start, end = rules.cycle_bounds(cycle.starts_on, cycle.ends_on)
    return sorted(
        (c.measured_at, c.value)
        for c in check_ins
        if start <= c.measured_at < end and c.retracted_at is None
    )


def forecast(
    kr: Any, check_ins: Sequence[CheckInLike], cycle: Dated, thresholds: Thresholds
) -> rules.Forecast | None:
    """Where the key result is heading: a least-squares line through its check-ins, read
    at the cycle's end; None with fewer than two of them."""
    end = rules.cycle_bounds(cycle.starts_on, cycle.ends_on)[1]
    return rules.forecast(
        KeyResultType(kr.type),
        kr.start_value,
        kr.target_value,
        forecast_points(check_ins, cycle),
        end,
        *thresholds,
    )
