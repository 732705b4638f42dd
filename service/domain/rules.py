"""The OKR rules (docs/design.md) as pure functions: no I/O, no framework.

Progress, expected progress, status, staleness, forecast, roll-up, score and realism.
Every number in docs/design.md is a case in tests/domain/test_rules.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from service.domain.enums import CycleStatus, KeyResultType, ProgressStatus, RealismVerdict

# What the rules are defined over. Inside these bounds no sum, difference or quotient
# below can overflow; the functions stay safe outside them all the same.
MAX_WEIGHT = 1000.0
MAX_MAGNITUDE = 1e15  # start, target and checked-in values
EARLIEST_DATE = date(1900, 1, 1)  # cycle dates
LATEST_DATE = date(2999, 12, 31)

CYCLE_ORDER = [CycleStatus.PLANNING, CycleStatus.ACTIVE, CycleStatus.REVIEW, CycleStatus.CLOSED]
DEFAULT_ON_TRACK_GAP = 0.10
DEFAULT_AT_RISK_GAP = 0.25
GRACE = timedelta(days=1)
# A hair of tolerance in the status rule, so that 0.6 - 0.5 counts as the 0.10 it means.
STATUS_TOLERANCE = 1e-9


def clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    if math.isnan(x):
        return lo  # a fraction is never NaN, whatever came in
    return lo if x <= lo else hi if x >= hi else x  # (and never -0.0)


def _weighted_mean(pairs: Sequence[tuple[float, float]]) -> float | None:
    """The weighted mean of values in [0, 1]; None when the total weight is zero.

    Summed as they are when the sums stay finite (the common case, bit for bit the
    plain formula); otherwise every weight is first scaled by the largest, so no sum
    can overflow to infinity and turn the mean into NaN or 0."""
    total = sum(w for w, _ in pairs)
    if not total > 0:
        return None
    weighted = sum(w * v for w, v in pairs)
    if not (math.isfinite(total) and math.isfinite(weighted)):
        top = max(w for w, _ in pairs)
        total = sum(w / top for w, _ in pairs)
        weighted = sum((w / top) * v for w, v in pairs)
    return clamp(weighted / total)


def is_finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


# --- key results ---------------------------------------------------------------


def definition_error(kind: KeyResultType, start: float, target: float) -> str | None:
    """Why a key result's start and target cannot stand together, or None."""
    if not (math.isfinite(start) and math.isfinite(target)):
        return "start and target values must be finite numbers"
    if kind is KeyResultType.INCREASE and not target > start:
        return "an INCREASE key result needs a target above its start value"
    if kind is KeyResultType.DECREASE and not target < start:
        return "a DECREASE key result needs a target below its start value"
    if kind is KeyResultType.MILESTONE and (start, target) != (0, 1):
        return "a MILESTONE key result runs from 0 to 1"
    return None


def value_error(kind: KeyResultType, value: float) -> str | None:
    """Why a checked-in value cannot be taken, or None."""
    if not math.isfinite(value):
        return "the value must be a finite number"
    if kind is KeyResultType.MILESTONE and value not in (0, 1):
        return "a MILESTONE check-in is 0 (not done) or 1 (done)"
    return None


def key_result_progress(kind: KeyResultType, start: float, target: float, current: float) -> float:
    if kind in (KeyResultType.INCREASE, KeyResultType.DECREASE, KeyResultType.MILESTONE):
        if target == start:
            return 0.0
        done, span = current - start, target - start
        if not (math.isfinite(done) and math.isfinite(span)):
            # Halving is exact and keeps differences of finite numbers finite.
            done, span = current / 2 - start / 2, target / 2 - start / 2
        return clamp(done / span)
    if kind is KeyResultType.STAY_ABOVE:
        return 1.0 if current >= target else 0.0
    return 1.0 if current <= target else 0.0  # STAY_BELOW


# --- cycles --------------------------------------------------------------------


def cycle_bounds(starts_on: date, ends_on: date) -> tuple[datetime, datetime]:
    """From the start of startsOn to the end of endsOn, UTC."""
    start = datetime.combine(starts_on, time.min, tzinfo=UTC)
    if ends_on >= date.max:  # the end of the last representable day
        return start, datetime.max.replace(tzinfo=UTC)
    end = datetime.combine(ends_on + timedelta(days=1), time.min, tzinfo=UTC)
    return start, end


def expected_progress(starts_on: date, ends_on: date, at: datetime) -> float:
    start, end = cycle_bounds(starts_on, ends_on)
    return clamp((at - start) / (end - start))


def review_due(status: CycleStatus, starts_on: date, ends_on: date, now: datetime) -> bool:
    """Ended (past the end of endsOn, UTC) and still ACTIVE: nobody has started the review."""
    return status is CycleStatus.ACTIVE and now >= cycle_bounds(starts_on, ends_on)[1]


def can_move_cycle(current: CycleStatus, new: CycleStatus) -> bool:
    """Forward only, one step at a time."""
    return CYCLE_ORDER.index(new) == CYCLE_ORDER.index(current) + 1


def accepts_check_ins(status: CycleStatus) -> bool:
    return status in (CycleStatus.ACTIVE, CycleStatus.REVIEW)


# --- status and staleness ------------------------------------------------------


def progress_status(
    progress: float,
    expected: float,
    checked_in: bool,
    on_track_gap: float = DEFAULT_ON_TRACK_GAP,
    at_risk_gap: float = DEFAULT_AT_RISK_GAP,
) -> ProgressStatus:
    if progress >= 1:
        return ProgressStatus.ACHIEVED
    if not checked_in:
        return ProgressStatus.NOT_STARTED
    gap = expected - progress
    if gap <= on_track_gap + STATUS_TOLERANCE:
        return ProgressStatus.ON_TRACK
    if gap <= at_risk_gap + STATUS_TOLERANCE:
        return ProgressStatus.AT_RISK
    return ProgressStatus.OFF_TRACK


def is_stale(
    cycle_status: CycleStatus, last_activity: datetime, cadence_days: int, now: datetime
) -> bool:
    """Silence is never green: no check-in within cadence plus a grace day."""
    if cycle_status is not CycleStatus.ACTIVE:
        return False
    return now - last_activity > timedelta(days=cadence_days) + GRACE


# --- roll-up -------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One key result or aligned child as its objective sees it."""

    weight: float
    progress: float
    archived: bool = False
    checked_in: bool = False
    score: float | None = None


@dataclass(frozen=True)
class Share:
    weight: float
    progress: float
    share: float


def counted(parts: Iterable[Part]) -> list[Part]:
    return [p for p in parts if not p.archived]


def roll_up(parts: Sequence[Part]) -> float:
    """Weighted mean of progress; archived parts and zero total weight count nothing."""
    mean = _weighted_mean([(p.weight, p.progress) for p in counted(parts)])
    return 0.0 if mean is None else mean


def shares(parts: Sequence[Part]) -> list[Share]:
    """Each counted part's weight, progress and share of the total weight."""
    live = counted(parts)
    total = sum(p.weight for p in live)
    if not total > 0:
        return [Share(p.weight, p.progress, 0.0) for p in live]
    if math.isfinite(total):
        return [Share(p.weight, p.progress, clamp(p.weight / total)) for p in live]
    top = max(p.weight for p in live)  # scaled, so the total cannot overflow
    scaled = sum(p.weight / top for p in live)
    return [Share(p.weight, p.progress, clamp((p.weight / top) / scaled)) for p in live]


def rolled_checked_in(parts: Sequence[Part]) -> bool:
    return any(p.checked_in for p in counted(parts))


def rolled_score(parts: Sequence[Part]) -> float | None:
    """Weighted mean of the scores that are set; None when none is."""
    scored = [p for p in counted(parts) if p.score is not None]
    if not scored:
        return None
    mean = _weighted_mean([(p.weight, p.score or 0.0) for p in scored])
    return 0.0 if mean is None else mean


# --- forecast ------------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    value: float
    progress: float
    status: ProgressStatus


def forecast(
    kind: KeyResultType,
    start: float,
    target: float,
    points: Sequence[tuple[datetime, float]],
    cycle_end: datetime,
    on_track_gap: float = DEFAULT_ON_TRACK_GAP,
    at_risk_gap: float = DEFAULT_AT_RISK_GAP,
) -> Forecast | None:
    """A least-squares line through (instant, value), read at the cycle's end."""
    if len(points) < 2:
        return None
    origin = points[0][0]
    xs = [(t - origin).total_seconds() for t, _ in points]
    ys = [v for _, v in points]
    n = len(points)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        value = my  # all at one instant: no trend to read
    else:
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        value = my + slope * ((cycle_end - origin).total_seconds() - mx)
    if not math.isfinite(value):
        return None  # a trend past every representable number says nothing
    if kind is KeyResultType.MILESTONE:
        value = 1.0 if value >= 0.5 else 0.0
    progress = key_result_progress(kind, start, target, value)
    return Forecast(
        value, progress, progress_status(progress, 1.0, True, on_track_gap, at_risk_gap)
    )


# --- realism -------------------------------------------------------------------


MIN_RECORD = 3  # points of record below which nothing is judged
STRETCH_RATIO = 2.0
WEEK = timedelta(weeks=1)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Realism:
    verdict: RealismVerdict
    required_rate: float | None  # units per week, in the key result's direction
    observed_rate: float | None  # units per week, in the key result's direction
    ratio: float | None  # required / observed, when observed > 0
    basis: int  # points of record in the window


def record_window(cycle_start: datetime, cycle_end: datetime, now: datetime) -> datetime:
    """The start of the trailing window as long as the cycle, ending now."""
    try:
        return now - (cycle_end - cycle_start)
    except OverflowError:  # a cycle longer than everything before now
        return _EARLIEST


def _slope_per_week(points: Sequence[tuple[datetime, float]]) -> float | None:
    """The least-squares slope through (instant, value) in units per week; None when
    every point shares one instant (no trend to read) or the slope is past every float.
    The values are first scaled by the largest of them, so no square or sum overflows."""
    top = max(abs(v) for _, v in points)
    if not math.isfinite(top):
        return None
    origin = points[0][0]
    xs = [(t - origin) / WEEK for t, _ in points]
    ys = [v / top for _, v in points] if top > 0 else [0.0 for _ in points]
    n = len(points)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    slope = slope * top if top > 0 else slope
    return slope if math.isfinite(slope) else None


def _required_rate(
    direction: float,
    target: float,
    current: float,
    cycle_start: datetime,
    cycle_end: datetime,
    now: datetime,
) -> float | None:
    """Units per week still needed to reach the target by the cycle's end; 0 when it
    is reached; None after the cycle's end or when the rate is past every float."""
    if now >= cycle_end:
        return None
    remaining, scale = direction * (target - current), 1.0
    if not math.isfinite(remaining):  # halving is exact and keeps the difference finite
        remaining, scale = direction * (target / 2 - current / 2), 2.0
    if remaining <= 0:
        return 0.0
    weeks = (cycle_end - max(now, cycle_start)) / WEEK
    if not weeks > 0:
        return None
    rate = remaining / weeks * scale
    return rate if math.isfinite(rate) else None


def realism(
    kind: KeyResultType,
    start: float,
    target: float,
    current: float,
    points: Sequence[tuple[datetime, float]],
    cycle_start: datetime,
    cycle_end: datetime,
    now: datetime,
) -> Realism:
    """Is the target realistic, judged by the record (docs/design.md, "Realism")?

    `points` is the record, (instant, value); only the points in the trailing window
    as long as the cycle and ending now count (`basis`). INCREASE and DECREASE only.
    Every point at one instant gives no slope: the observed rate is unknown, so the
    verdict is UNKNOWN unless nothing is required any more (REALISTIC)."""
    since = record_window(cycle_start, cycle_end, now)
    record = [(t, v) for t, v in points if since <= t <= now and math.isfinite(v)]
    basis = len(record)
    slope = _slope_per_week(record) if basis >= MIN_RECORD else None
    return realism_from_fit(kind, start, target, current, basis, slope, cycle_start, cycle_end, now)


def realism_from_fit(
    kind: KeyResultType,
    start: float,
    target: float,
    current: float,
    basis: int,
    slope_per_week: float | None,
    cycle_start: datetime,
    cycle_end: datetime,
    now: datetime,
) -> Realism:
    """The same rule over the record's fit rather than its points: how many points lie
    in the window (`basis`) and the least-squares slope through them, in units per week
    (None when they share one instant). A database computes these over any number of
    points (`service/reads/realism.py`); `realism` computes them from a list."""
    slope = slope_per_week if basis >= MIN_RECORD else None
    if slope is not None and not math.isfinite(slope):
        slope = None
    if (
        kind not in (KeyResultType.INCREASE, KeyResultType.DECREASE)
        or definition_error(kind, start, target) is not None
        or not math.isfinite(current)
    ):
        return Realism(RealismVerdict.UNKNOWN, None, None, None, basis)
    direction = 1.0 if kind is KeyResultType.INCREASE else -1.0
    required = _required_rate(direction, target, current, cycle_start, cycle_end, now)
    observed = None if slope is None else direction * slope + 0.0  # (never -0.0)
    ratio = None
    if required is not None and observed is not None and observed > 0:
        ratio = required / observed
        if not math.isfinite(ratio):
            ratio = None  # a required rate past every float times the observed one
    if basis < MIN_RECORD or required is None:
        verdict = RealismVerdict.UNKNOWN
    elif required <= 0:
        verdict = RealismVerdict.REALISTIC
    elif observed is None:
        verdict = RealismVerdict.UNKNOWN
    elif observed <= 0 or ratio is None:
        verdict = RealismVerdict.UNLIKELY
    elif ratio <= 1 + 1e-9:  # the same hair of tolerance as the status bounds
        verdict = RealismVerdict.REALISTIC
    elif ratio <= STRETCH_RATIO + 1e-9:
        verdict = RealismVerdict.STRETCH
    else:
        verdict = RealismVerdict.UNLIKELY
    return Realism(verdict, required, observed, ratio, basis)
