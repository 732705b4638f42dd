"""The OKR rules of docs/design.md, case by case."""

import math
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.enums import CycleStatus
from service.domain.enums import KeyResultType as T
from service.domain.enums import ProgressStatus as S
from service.domain.enums import RealismVerdict as V
from service.domain.rules import (
    DEFAULT_AT_RISK_GAP,
    DEFAULT_ON_TRACK_GAP,
    STRETCH_RATIO,
    Part,
    accepts_check_ins,
    can_move_cycle,
    definition_error,
    expected_progress,
    forecast,
    is_finite,
    is_stale,
    key_result_progress,
    progress_status,
    realism,
    realism_from_fit,
    record_window,
    review_due,
    roll_up,
    rolled_checked_in,
    rolled_score,
    shares,
    value_error,
)

UTC = UTC


@pytest.mark.parametrize(
    ("kind", "start", "target", "current", "expected"),
    [
        (T.INCREASE, 0, 100, 50, 0.5),
        (T.INCREASE, 0, 100, 0, 0.0),
        (T.INCREASE, 0, 100, 100, 1.0),
        (T.INCREASE, 0, 100, 150, 1.0),  # clamped above
        (T.INCREASE, 10, 20, 5, 0.0),  # clamped below
        (T.INCREASE, -10, 10, 0, 0.5),
        # "Reduce distribution cost per order from 4.20 to 3.57" is DECREASE.
        (T.DECREASE, 4.20, 3.57, 4.20, 0.0),
        (T.DECREASE, 4.20, 3.57, 3.885, 0.5),
        (T.DECREASE, 4.20, 3.57, 3.57, 1.0),
        (T.DECREASE, 4.20, 3.57, 3.00, 1.0),
        (T.DECREASE, 4.20, 3.57, 5.00, 0.0),
        # "keep on-time dispatch at or above 98%"
        (T.STAY_ABOVE, 0, 98, 98, 1.0),
        (T.STAY_ABOVE, 0, 98, 97.9, 0.0),
        (T.STAY_ABOVE, 0, 98, 99.5, 1.0),
        (T.STAY_BELOW, 0, 2, 2, 1.0),
        (T.STAY_BELOW, 0, 2, 2.1, 0.0),
        (T.STAY_BELOW, 5, 2, 1, 1.0),
        (T.MILESTONE, 0, 1, 0, 0.0),
        (T.MILESTONE, 0, 1, 1, 1.0),
    ],
)
def test_key_result_progress(kind, start, target, current, expected):
    assert key_result_progress(kind, start, target, current) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kind", "start", "target", "bad"),
    [
        (T.INCREASE, 0, 100, False),
        (T.INCREASE, 100, 0, True),  # target not in its direction
        (T.INCREASE, 5, 5, True),
        (T.DECREASE, 4.20, 3.57, False),
        (T.DECREASE, 3.57, 4.20, True),
        (T.DECREASE, 3, 3, True),
        (T.STAY_ABOVE, 0, 98, False),
        (T.STAY_BELOW, 0, 2, False),
        (T.MILESTONE, 0, 1, False),
        (T.MILESTONE, 0, 5, True),
        (T.INCREASE, 0, float("nan"), True),
        (T.INCREASE, float("-inf"), 1, True),
        (T.STAY_ABOVE, 0, float("inf"), True),
    ],
)
def test_definition_errors(kind, start, target, bad):
    assert (definition_error(kind, start, target) is not None) is bad


@pytest.mark.parametrize(
    ("kind", "value", "bad"),
    [
        (T.INCREASE, 3.0, False),
        (T.INCREASE, float("nan"), True),
        (T.INCREASE, float("inf"), True),
        (T.DECREASE, float("-inf"), True),
        (T.MILESTONE, 1, False),
        (T.MILESTONE, 0.5, True),
    ],
)
def test_value_errors(kind, value, bad):
    assert (value_error(kind, value) is not None) is bad


Q = (date(2026, 1, 1), date(2026, 3, 31))  # 90 days: Jan 1 00:00 to Apr 1 00:00 UTC


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (datetime(2025, 12, 1, tzinfo=UTC), 0.0),  # before
        (datetime(2026, 1, 1, tzinfo=UTC), 0.0),  # the very start
        (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=45), 0.5),  # half way
        (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=9), 0.1),
        (datetime(2026, 3, 31, 12, tzinfo=UTC), 1 - 0.5 / 90),  # inside the last day
        (datetime(2026, 4, 1, tzinfo=UTC), 1.0),  # end of endsOn
        (datetime(2026, 6, 1, tzinfo=UTC), 1.0),  # after
    ],
)
def test_expected_progress(at, expected):
    assert expected_progress(*Q, at) == pytest.approx(expected)


def test_one_day_cycle():
    d = date(2026, 5, 5)
    assert expected_progress(d, d, datetime(2026, 5, 5, 12, tzinfo=UTC)) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("progress", "expected", "checked_in", "status"),
    [
        (1.0, 0.5, True, S.ACHIEVED),
        (1.0, 0.5, False, S.ACHIEVED),  # achieved wins even without check-ins
        (0.0, 0.5, False, S.NOT_STARTED),
        (0.4, 0.5, True, S.ON_TRACK),  # gap 0.10, on the bound
        (0.39, 0.5, True, S.AT_RISK),  # gap 0.11, just past
        (0.8, 0.5, True, S.ON_TRACK),  # ahead
        (0.25, 0.5, True, S.AT_RISK),  # gap 0.25, on the bound
        (0.24, 0.5, True, S.OFF_TRACK),  # gap 0.26
        (0.0, 1.0, True, S.OFF_TRACK),
    ],
)
def test_status_bounds(progress, expected, checked_in, status):
    assert progress_status(progress, expected, checked_in) is status


def test_status_bounds_are_settings():
    assert progress_status(0.3, 0.5, True, on_track_gap=0.2, at_risk_gap=0.3) is S.ON_TRACK
    assert progress_status(0.15, 0.5, True, on_track_gap=0.2, at_risk_gap=0.3) is S.OFF_TRACK


NOW = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cycle", "age", "cadence", "stale"),
    [
        (CycleStatus.ACTIVE, timedelta(days=3), 7, False),
        (CycleStatus.ACTIVE, timedelta(days=8), 7, False),  # cadence + grace day, exactly
        (CycleStatus.ACTIVE, timedelta(days=8, seconds=1), 7, True),
        (CycleStatus.ACTIVE, timedelta(days=3), 1, True),  # a daily cadence
        (CycleStatus.PLANNING, timedelta(days=30), 7, False),
        (CycleStatus.REVIEW, timedelta(days=30), 7, False),
        (CycleStatus.CLOSED, timedelta(days=30), 7, False),
    ],
)
def test_stale(cycle, age, cadence, stale):
    assert is_stale(cycle, NOW - age, cadence, NOW) is stale


@pytest.mark.parametrize(
    ("parts", "progress"),
    [
        ([], 0.0),  # nothing under it
        ([Part(1, 0.5)], 0.5),
        ([Part(1, 0.5), Part(1, 1.0)], 0.75),
        ([Part(3, 1.0), Part(1, 0.0)], 0.75),  # weights
        ([Part(0, 1.0), Part(1, 0.2)], 0.2),  # weight 0 aligns without contributing
        ([Part(0, 1.0), Part(0, 0.5)], 0.0),  # zero total weight
        ([Part(1, 1.0, archived=True), Part(1, 0.4)], 0.4),  # archived contribute nothing
        ([Part(1, 1.0, archived=True)], 0.0),
    ],
)
def test_roll_up(parts, progress):
    assert roll_up(parts) == pytest.approx(progress)


def test_shares_explain_the_number():
    parts = [Part(3, 1.0), Part(1, 0.0), Part(2, 0.9, archived=True)]
    got = shares(parts)
    assert [(s.weight, s.share) for s in got] == [(3, 0.75), (1, 0.25)]
    assert sum(s.share * s.progress for s in got) == pytest.approx(roll_up(parts))
    assert shares([Part(0, 1.0)])[0].share == 0.0


def test_checked_in_rolls_up_but_not_from_archived():
    assert rolled_checked_in([Part(1, 0, checked_in=False), Part(1, 0, checked_in=True)])
    assert not rolled_checked_in([Part(1, 0, archived=True, checked_in=True)])


@pytest.mark.parametrize(
    ("parts", "score"),
    [
        ([], None),
        ([Part(1, 0, score=None)], None),
        ([Part(1, 0, score=0.7), Part(1, 0, score=0.3)], 0.5),
        ([Part(3, 0, score=1.0), Part(1, 0, score=0.0)], 0.75),
        ([Part(1, 0, score=0.6), Part(1, 0, score=None)], 0.6),  # unscored counts nothing
        ([Part(1, 0, score=0.6, archived=True), Part(1, 0, score=0.2)], 0.2),
    ],
)
def test_rolled_score(parts, score):
    got = rolled_score(parts)
    assert got == (pytest.approx(score) if score is not None else None)


END = datetime(2026, 4, 1, tzinfo=UTC)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pts(*pairs):
    return [(T0 + timedelta(days=d), v) for d, v in pairs]


@pytest.mark.parametrize(
    ("kind", "start", "target", "points", "value", "progress", "status"),
    [
        (T.INCREASE, 0, 90, pts(), None, None, None),  # no check-ins
        (T.INCREASE, 0, 90, pts((10, 10)), None, None, None),  # one
        (T.INCREASE, 0, 90, pts((0, 0), (45, 45)), 90.0, 1.0, S.ACHIEVED),  # two, on pace
        (T.INCREASE, 0, 90, pts((0, 0), (30, 15), (60, 30)), 45.0, 0.5, S.OFF_TRACK),
        (T.INCREASE, 0, 100, pts((0, 0), (30, 30), (60, 60)), 90.0, 0.9, S.ON_TRACK),
        (T.INCREASE, 0, 100, pts((0, 0), (30, 25), (60, 50)), 75.0, 0.75, S.AT_RISK),
        # noisy points: least squares, not the last two
        (T.INCREASE, 0, 90, pts((0, 0), (10, 20), (20, 0), (30, 20)), 40.0, 40 / 90, S.OFF_TRACK),
        (T.DECREASE, 4.20, 3.57, pts((0, 4.20), (45, 3.885)), 3.57, 1.0, S.ACHIEVED),
        (T.INCREASE, 0, 90, pts((5, 30), (5, 50)), 40.0, 40 / 90, S.OFF_TRACK),  # one instant
        (T.STAY_ABOVE, 0, 98, pts((0, 99), (30, 98.5)), 97.5, 0.0, S.OFF_TRACK),
    ],
)
def test_forecast(kind, start, target, points, value, progress, status):
    got = forecast(kind, start, target, points, END)
    if value is None:
        assert got is None
        return
    assert got.value == pytest.approx(value)
    assert got.progress == pytest.approx(progress)
    assert got.status is status


@pytest.mark.parametrize(
    ("current", "new", "ok"),
    [
        (CycleStatus.PLANNING, CycleStatus.ACTIVE, True),
        (CycleStatus.ACTIVE, CycleStatus.REVIEW, True),
        (CycleStatus.REVIEW, CycleStatus.CLOSED, True),
        (CycleStatus.ACTIVE, CycleStatus.PLANNING, False),
        (CycleStatus.CLOSED, CycleStatus.REVIEW, False),
        (CycleStatus.PLANNING, CycleStatus.REVIEW, False),
        (CycleStatus.ACTIVE, CycleStatus.ACTIVE, False),
    ],
)
def test_cycle_moves_forward_only(current, new, ok):
    assert can_move_cycle(current, new) is ok


# --- item 7: numbers near the ends of the float range never overflow the rules ---------

BIG = 1e308


@pytest.mark.parametrize(
    ("kind", "start", "target", "current", "expected"),
    [
        (T.INCREASE, -BIG, BIG, 0, 0.5),  # the span itself overflows
        (T.INCREASE, -BIG, BIG, BIG / 2, 0.75),
        (T.INCREASE, -BIG, BIG, BIG, 1.0),
        (T.INCREASE, 0, BIG, -BIG, 0.0),  # the distance done overflows
        (T.DECREASE, BIG, -BIG, 0, 0.5),
        (T.DECREASE, BIG, -BIG, -BIG, 1.0),
        (T.INCREASE, -1e15, 1e15, 0, 0.5),  # the bounds the use cases allow
    ],
)
def test_item7_key_result_progress_does_not_overflow(kind, start, target, current, expected):
    assert key_result_progress(kind, start, target, current) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("parts", "progress"),
    [
        ([Part(BIG, 1.0), Part(BIG, 0.0)], 0.5),  # the total weight overflows
        ([Part(BIG, 1.0), Part(BIG, 1.0), Part(1.0, 0.0)], 1.0),
        ([Part(BIG, 0.5), Part(BIG, 0.5)], 0.5),
        ([Part(1000, 1.0), Part(1000, 0.0), Part(0, 1.0)], 0.5),  # the weights allowed
        ([Part(BIG, 1.0, archived=True), Part(1.0, 0.25)], 0.25),
    ],
)
def test_item7_roll_up_does_not_overflow(parts, progress):
    assert roll_up(parts) == pytest.approx(progress)


def test_item7_shares_and_scores_do_not_overflow():
    parts = [Part(BIG, 1.0, score=1.0), Part(BIG, 0.0, score=0.0), Part(BIG, 0.5, score=0.5)]
    assert [s.share for s in shares(parts)] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert rolled_score(parts) == pytest.approx(0.5)
    assert shares([Part(0, 1.0)])[0].share == 0.0


def test_item7_a_trend_past_every_float_forecasts_nothing():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    points = [(start, -BIG), (start + timedelta(days=1), BIG)]
    assert forecast(T.INCREASE, -BIG, BIG, points, start + timedelta(days=90)) is None


def test_item7_cycle_bounds_at_the_last_date():
    # Stored before the dates were bounded: reading it must not overflow.
    assert 0 < expected_progress(date(2026, 1, 1), date.max, datetime(2026, 6, 1, tzinfo=UTC))


# --- items 4 and 5: realism from the record, reviews that are due ----------------------

CS = datetime(2026, 1, 5, tzinfo=UTC)  # a cycle of 12 weeks
CE = CS + timedelta(weeks=12)
MID = CS + timedelta(weeks=6)  # now, mid-cycle: 6 weeks left, the window reaches 6 before


def wk(*pairs, at=MID):
    """The record as (weeks before `at`, value)."""
    return [(at - timedelta(weeks=w), v) for w, v in pairs]


RISING = wk((6, 0), (3, 15), (0, 30))  # 5 a week


@pytest.mark.parametrize(
    ("kind", "start", "target", "current", "points", "now", "expected"),
    [
        # (verdict, requiredRate, observedRate, ratio, basis)
        pytest.param(
            T.INCREASE, 0, 60, 30, [], MID, (V.UNKNOWN, 5.0, None, None, 0), id="no record"
        ),
        pytest.param(
            T.INCREASE,
            0,
            60,
            30,
            wk((3, 15), (0, 30)),
            MID,
            (V.UNKNOWN, 5.0, None, None, 2),
            id="fewer than 3 points",
        ),
        pytest.param(
            T.INCREASE, 0, 60, 30, RISING, MID, (V.REALISTIC, 5.0, 5.0, 1.0, 3), id="on pace"
        ),
        pytest.param(
            T.INCREASE, 0, 90, 30, RISING, MID, (V.STRETCH, 10.0, 5.0, 2.0, 3), id="twice the pace"
        ),
        pytest.param(
            T.INCREASE, 0, 120, 30, RISING, MID, (V.UNLIKELY, 15.0, 5.0, 3.0, 3), id="three times"
        ),
        pytest.param(
            T.INCREASE,
            0,
            60,
            30,
            wk((6, 30), (3, 30), (0, 30)),
            MID,
            (V.UNLIKELY, 5.0, 0.0, None, 3),
            id="flat record",
        ),
        pytest.param(
            T.INCREASE,
            0,
            60,
            30,
            wk((6, 40), (3, 35), (0, 30)),
            MID,
            (V.UNLIKELY, 5.0, -10 / 6, None, 3),
            id="wrong-way record",
        ),
        pytest.param(
            T.INCREASE, 0, 60, 60, RISING, MID, (V.REALISTIC, 0.0, 5.0, 0.0, 3), id="target reached"
        ),
        pytest.param(
            T.INCREASE,
            0,
            60,
            75,
            wk((6, 75), (3, 75), (0, 75)),
            MID,
            (V.REALISTIC, 0.0, 0.0, None, 3),
            id="target passed, flat",
        ),
        pytest.param(
            T.INCREASE,
            0,
            60,
            30,
            wk((6, 0), (3, 15), (0, 30), at=CE),
            CE + timedelta(days=1),
            (V.UNKNOWN, None, 5.0, None, 3),
            id="after the cycle's end",
        ),
        pytest.param(
            T.INCREASE,
            0,
            60,
            30,
            wk((6, 0), (3, 15), (0, 30), at=CE),
            CE,
            (V.UNKNOWN, None, 5.0, None, 3),
            id="at the cycle's end",
        ),
        # "Reduce distribution cost per order from 4.20 to 3.57": a fall is progress.
        pytest.param(
            T.DECREASE,
            4.20,
            3.57,
            3.90,
            wk((6, 4.20), (3, 4.05), (0, 3.90)),
            MID,
            (V.STRETCH, 0.055, 0.05, 1.1, 3),
            id="DECREASE that falls",
        ),
        pytest.param(
            T.DECREASE,
            4.20,
            3.57,
            4.30,
            wk((6, 4.10), (3, 4.20), (0, 4.30)),
            MID,
            (V.UNLIKELY, 0.73 / 6, -0.2 / 6, None, 3),
            id="DECREASE that rises",
        ),
        pytest.param(
            T.DECREASE,
            4.20,
            3.57,
            3.50,
            wk((6, 3.70), (3, 3.60), (0, 3.50)),
            MID,
            (V.REALISTIC, 0.0, 0.2 / 6, 0.0, 3),
            id="DECREASE reached",
        ),
        # Planning: now is before the start, weeks left count the whole cycle (12), and
        # the window (12 weeks back) holds the record of the cycle before.
        pytest.param(
            T.INCREASE,
            0,
            90,
            30,
            wk((10, -20), (5, 5), (0, 30), at=CS - timedelta(weeks=1)),
            CS - timedelta(weeks=1),
            (V.REALISTIC, 5.0, 5.0, 1.0, 3),
            id="before the cycle's start",
        ),
        pytest.param(
            T.INCREASE,
            0,
            150,
            30,
            wk((10, -20), (5, 5), (0, 30), at=CS - timedelta(weeks=1)),
            CS - timedelta(weeks=1),
            (V.STRETCH, 10.0, 5.0, 2.0, 3),
            id="planning a stretch",
        ),
        # Only the trailing window counts: older points and later ones are not the record.
        pytest.param(
            T.INCREASE,
            0,
            60,
            30,
            RISING + wk((13, 100), (-1, -50)),
            MID,
            (V.REALISTIC, 5.0, 5.0, 1.0, 3),
            id="outside the window",
        ),
        pytest.param(
            T.INCREASE,
            0,
            60,
            30,
            wk((2, 10), (2, 20), (2, 30)),
            MID,
            (V.UNKNOWN, 5.0, None, None, 3),
            id="one instant: no slope",
        ),
        pytest.param(
            T.INCREASE,
            0,
            60,
            60,
            wk((2, 50), (2, 55), (2, 60)),
            MID,
            (V.REALISTIC, 0.0, None, None, 3),
            id="one instant, target reached",
        ),
        pytest.param(
            T.STAY_ABOVE,
            0,
            98,
            97,
            wk((6, 99), (3, 98), (0, 97)),
            MID,
            (V.UNKNOWN, None, None, None, 3),
            id="STAY_ABOVE",
        ),
        pytest.param(
            T.MILESTONE,
            0,
            1,
            0,
            wk((6, 0), (3, 0), (0, 0)),
            MID,
            (V.UNKNOWN, None, None, None, 3),
            id="MILESTONE",
        ),
    ],
)
def test_item4_realism(kind, start, target, current, points, now, expected):
    got = realism(kind, start, target, current, points, CS, CE, now)
    verdict, required, observed, ratio, basis = expected
    assert got.verdict is verdict
    assert got.basis == basis
    for value, want in (
        (got.required_rate, required),
        (got.observed_rate, observed),
        (got.ratio, ratio),
    ):
        if want is None:
            assert value is None
        else:
            assert value == pytest.approx(want)


@pytest.mark.parametrize(
    ("kind", "start", "target", "current", "points", "now", "verdict"),
    [
        # The distance still to go overflows; halved, it does not.
        (T.INCREASE, -BIG, BIG, -BIG, wk((6, -BIG), (3, 0), (0, BIG)), MID, V.REALISTIC),
        # A second left with half the float range to go: no rate to require.
        (T.INCREASE, -BIG, BIG, 0, RISING, CE - timedelta(seconds=1), V.UNKNOWN),
        # Required over a vanishing observed rate is past every float: far more than 2.
        (T.INCREASE, 0, BIG, 0, wk((6, 0), (3, 5e-320), (0, 1e-319)), MID, V.UNLIKELY),
        (T.DECREASE, BIG, -BIG, BIG, wk((6, BIG), (3, BIG), (0, BIG)), MID, V.UNLIKELY),
        (T.INCREASE, 0, 1e15, 0, wk((6, -1e15), (3, 0), (0, 1e15)), MID, V.REALISTIC),
    ],
)
def test_item4_realism_does_not_overflow(kind, start, target, current, points, now, verdict):
    got = realism(kind, start, target, current, points, CS, CE, now)
    assert got.verdict is verdict
    for value in (got.required_rate, got.observed_rate, got.ratio):
        assert value is None or math.isfinite(value)


def test_item4_the_window_of_a_cycle_longer_than_history():
    start, end = datetime(1900, 1, 1, tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    assert record_window(start, end, MID) == datetime.min.replace(tzinfo=UTC)
    got = realism(T.INCREASE, 0, 60, 30, RISING, start, end, MID)
    assert got.verdict is V.REALISTIC and got.basis == 3


@pytest.mark.parametrize(
    ("status", "now", "due"),
    [
        (CycleStatus.ACTIVE, datetime(2026, 3, 31, 23, 59, tzinfo=UTC), False),  # the last day
        (CycleStatus.ACTIVE, datetime(2026, 4, 1, tzinfo=UTC), True),  # the end of endsOn
        (CycleStatus.REVIEW, datetime(2026, 4, 2, tzinfo=UTC), False),  # the review began
        (CycleStatus.PLANNING, datetime(2026, 4, 2, tzinfo=UTC), False),
        (CycleStatus.CLOSED, datetime(2026, 4, 2, tzinfo=UTC), False),
    ],
)
def test_item5_review_due(status, now, due):
    assert review_due(status, date(2026, 1, 1), date(2026, 3, 31), now) is due
    assert review_due(status, date(2026, 1, 1), date.max, now) is False


# --- issue 14 item 7: the rows that tell every mutant of rules.py from the rules ---------
# (scripts/mutants.sh runs the mutants; the ones no row can tell apart are listed there.)


def positive_zero(x: float) -> bool:
    """0.0 and not -0.0: a progress or rate a client would read as "-0"."""
    return x == 0 and math.copysign(1.0, x) == 1.0


@pytest.mark.parametrize(
    ("kind", "start", "target", "current", "expected"),
    [
        (T.INCREASE, 5, 5, 7, 0.0),  # a start equal to its target (never valid): no progress
        (T.DECREASE, 3, 3, 1, 0.0),
        (T.INCREASE, 0, 10, float("nan"), 0.0),  # a fraction is never NaN
        (T.INCREASE, 0, 10, -0.0, 0.0),
        (T.DECREASE, 4.20, 3.57, 4.20, 0.0),  # 0 / -0.63 is -0.0: read as 0
        (T.INCREASE, 0, 10, 10, 1.0),
    ],
)
def test_item7_progress_edges(kind, start, target, current, expected):
    got = key_result_progress(kind, start, target, current)
    assert got == expected
    assert got != 0 or positive_zero(got)


@pytest.mark.parametrize(
    ("kind", "value", "bad"),
    [
        (T.MILESTONE, 0, False),  # not done yet is a check-in too
        (T.MILESTONE, 1, False),
        (T.MILESTONE, -1, True),
        (T.MILESTONE, 2, True),
        (T.STAY_ABOVE, -1, False),
    ],
)
def test_item7_milestone_check_ins(kind, value, bad):
    assert (value_error(kind, value) is not None) is bad


@pytest.mark.parametrize(
    ("status", "accepts"),
    [
        (CycleStatus.PLANNING, False),
        (CycleStatus.ACTIVE, True),
        (CycleStatus.REVIEW, True),  # late numbers
        (CycleStatus.CLOSED, False),  # read-only
    ],
)
def test_item7_check_ins_by_cycle_status(status, accepts):
    assert accepts_check_ins(status) is accepts


@pytest.mark.parametrize(
    ("x", "finite"),
    [(None, False), (0.0, True), (-2.5, True), (float("nan"), False), (float("inf"), False)],
)
def test_item7_is_finite(x, finite):
    assert is_finite(x) is finite


@pytest.mark.parametrize(
    ("progress", "expected", "status"),
    [
        # The hair of tolerance belongs to the bound: a gap of exactly bound + 1e-9 is in.
        (0.0, DEFAULT_ON_TRACK_GAP + 1e-9, S.ON_TRACK),
        (0.0, DEFAULT_AT_RISK_GAP + 1e-9, S.AT_RISK),
        (0.0, math.nextafter(DEFAULT_ON_TRACK_GAP + 1e-9, 1), S.AT_RISK),
        (0.0, math.nextafter(DEFAULT_AT_RISK_GAP + 1e-9, 1), S.OFF_TRACK),
    ],
)
def test_item7_status_tolerance_is_inclusive(progress, expected, status):
    assert progress_status(progress, expected, True) is status


def test_item7_a_part_counts_and_is_not_checked_in_unless_told():
    part = Part(1, 0.5)
    assert roll_up([part]) == 0.5
    assert rolled_checked_in([part]) is False
    assert [s.share for s in shares([part])] == [1.0]


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ([0.5], [1.0]),  # a total weight below 1 still shares all of it
        ([0.25, 0.25], [0.5, 0.5]),
        ([0.0, 0.0], [0.0, 0.0]),
    ],
)
def test_item7_shares_of_small_weights(weights, expected):
    assert [s.share for s in shares([Part(w, 1.0) for w in weights])] == expected


@pytest.mark.parametrize(
    ("parts", "score"),
    [
        # Scores whose weights are all 0: zero total weight contributes nothing, as progress.
        ([Part(0, 0, score=0.8), Part(0, 0, score=0.4)], 0.0),
        ([Part(0, 0, score=0.8), Part(0.5, 0, score=0.4)], 0.4),
    ],
)
def test_item7_scores_of_zero_weight(parts, score):
    got = rolled_score(parts)
    assert got == score and positive_zero(got) is (score == 0)


@pytest.mark.parametrize(
    ("points", "value", "status"),
    [
        # The forecast of a MILESTONE reads the line as a check-in: 1 from 0.5 up, else 0.
        (pts((0, 0), (30, 0), (60, 1)), 1.0, S.ACHIEVED),  # the line reads 4/3 at the end
        (pts((0, 0), (45, 0)), 0.0, S.OFF_TRACK),
        (pts((5, 0), (5, 1)), 1.0, S.ACHIEVED),  # one instant: the mean, 0.5, on the bound
        (pts((0, 1), (45, 1)), 1.0, S.ACHIEVED),
        (pts((0, 1), (30, 1), (60, 0)), 0.0, S.OFF_TRACK),  # the line reads -1/3
        (pts((0, 0), (30, 0), (60, 0), (90, 1)), 1.0, S.ACHIEVED),  # the line reads 0.7
        (pts((0, 1), (30, 0), (60, 0), (90, 0)), 0.0, S.OFF_TRACK),  # the line reads -0.2
    ],
)
def test_item7_forecast_of_a_milestone(points, value, status):
    got = forecast(T.MILESTONE, 0, 1, points, END)
    assert (got.value, got.progress, got.status) == (value, value, status)


def slope_for_ratio(required: float, ratio: float) -> float:
    """An observed rate for which `required / observed` is exactly `ratio` as a float."""
    slope = required / ratio
    for _ in range(1000):
        got = required / slope
        if got == ratio:
            return slope
        slope = math.nextafter(slope, 0.0 if got < ratio else math.inf)
    raise AssertionError(f"no float slope gives the ratio {ratio}")


# now MID: 6 weeks left, 30 to go from 30 to 60: a required rate of exactly 5 a week
@pytest.mark.parametrize(
    ("ratio", "verdict"),
    [
        (1 + 1e-9, V.REALISTIC),  # the tolerance of the bound is inclusive
        (math.nextafter(1 + 1e-9, 2), V.STRETCH),
        (STRETCH_RATIO + 1e-9, V.STRETCH),
        (math.nextafter(STRETCH_RATIO + 1e-9, 3), V.UNLIKELY),
    ],
)
def test_item7_realism_ratio_bounds(ratio, verdict):
    slope = slope_for_ratio(5.0, ratio)
    got = realism_from_fit(T.INCREASE, 0, 60, 30, 3, slope, CS, CE, MID)
    assert (got.verdict, got.required_rate, got.ratio) == (verdict, 5.0, ratio)


@pytest.mark.parametrize(
    ("basis", "slope", "expected"),
    [
        (2, 5.0, (V.UNKNOWN, None)),  # a slope over fewer than 3 points is not read
        (3, 5.0, (V.REALISTIC, 5.0)),
        (4, 5.0, (V.REALISTIC, 5.0)),
        (40, 2.5, (V.STRETCH, 2.5)),
        (4, None, (V.UNKNOWN, None)),  # one instant: no slope
        (4, float("inf"), (V.UNKNOWN, None)),
    ],
)
def test_item7_realism_from_fit_basis(basis, slope, expected):
    got = realism_from_fit(T.INCREASE, 0, 60, 30, basis, slope, CS, CE, MID)
    assert (got.verdict, got.observed_rate) == expected
    assert got.basis == basis and got.required_rate == 5.0


@pytest.mark.parametrize(
    ("cycle_start", "cycle_end"),
    [
        (CE, CE),  # a cycle without length: no weeks to spread the rest over
        (CE + timedelta(days=3), CE),  # ends before it starts
    ],
)
def test_item7_realism_of_a_cycle_without_weeks(cycle_start, cycle_end):
    got = realism_from_fit(T.INCREASE, 0, 60, 30, 3, 5.0, cycle_start, cycle_end, MID)
    assert got.verdict is V.UNKNOWN and got.required_rate is None and got.ratio is None


LATE = CE - timedelta(days=3)  # the last days: 3/7 of a week left


@pytest.mark.parametrize(
    ("kind", "start", "target", "current", "points", "now", "expected"),
    [
        pytest.param(
            T.INCREASE,
            0,
            60,
            60,
            wk((6, 0), (3, 30), (0, 60), at=CE),
            CE,
            (V.UNKNOWN, None, 10.0, None, 3),
            id="at the cycle's end, target reached",
        ),
        pytest.param(
            T.INCREASE,
            0,
            60,
            58,
            wk((6, 28), (3, 43), (0, 58), at=LATE),
            LATE,
            (V.REALISTIC, 14 / 3, 5.0, 14 / 15, 3),
            id="less than a week left",
        ),
        pytest.param(
            T.INCREASE,
            0,
            60,
            30,
            wk((12, -30), (6, 0), (0, 30)),
            MID,
            (V.REALISTIC, 5.0, 5.0, 1.0, 3),
            id="a point on the window's start counts",
        ),
        pytest.param(
            T.INCREASE,
            0,
            60,
            30,
            wk((6, 0), (4, 10), (2, 20), (0, 30)),
            MID,
            (V.REALISTIC, 5.0, 5.0, 1.0, 4),
            id="four points",
        ),
        pytest.param(
            T.INCREASE,
            0,
            0.6,
            0.3,
            wk((6, 0.0), (3, 0.15), (0, 0.3)),
            MID,
            (V.REALISTIC, 0.05, 0.05, 1.0, 3),
            id="values below 1",
        ),
        pytest.param(
            T.INCREASE,
            0,
            60,
            30,
            wk((6, 0), (3, 0), (0, 0)),
            MID,
            (V.UNLIKELY, 5.0, 0.0, None, 3),
            id="a record of zeros",
        ),
        pytest.param(
            T.DECREASE,
            4.20,
            3.57,
            4.0,
            wk((6, 4.0), (3, 4.0), (0, 4.0)),
            MID,
            (V.UNLIKELY, 0.43 / 6, 0.0, None, 3),
            id="DECREASE, flat",
        ),
        pytest.param(
            T.DECREASE,
            4.20,
            3.57,
            3.57,
            wk((6, 3.77), (3, 3.67), (0, 3.57)),
            MID,
            (V.REALISTIC, 0.0, 0.1 / 3, 0.0, 3),
            id="DECREASE on its target",
        ),
    ],
)
def test_item7_realism_edges(kind, start, target, current, points, now, expected):
    got = realism(kind, start, target, current, points, CS, CE, now)
    verdict, required, observed, ratio, basis = expected
    assert (got.verdict, got.basis) == (verdict, basis)
    for value, want in (
        (got.required_rate, required),
        (got.observed_rate, observed),
        (got.ratio, ratio),
    ):
        if want is None:
            assert value is None
        else:
            assert value == pytest.approx(want)
            assert value != 0 or positive_zero(value)  # never "-0" in the direction


def test_item7_the_required_rate_when_the_distance_overflows():
    # From -1e308 to 1e308 is past every float; halved, it is not: 2e308 over 6 weeks.
    got = realism(T.INCREASE, -BIG, BIG, -BIG, RISING, CS, CE, MID)
    assert got.required_rate == pytest.approx(BIG / 3)
    got = realism(T.DECREASE, BIG, -BIG, BIG / 2, RISING, CS, CE, MID)
    assert got.required_rate == pytest.approx(1.5 * BIG / 6)


# Properties over any finite input (hypothesis; derandomized, so a mutant run is repeatable).
FINITE = st.floats(allow_nan=False, allow_infinity=False)
PROPERTY = settings(max_examples=200, deadline=None, database=None, derandomize=True)


@PROPERTY
@given(st.sampled_from(list(T)), FINITE, FINITE, st.floats())
def test_item7_progress_is_a_fraction_never_minus_zero(kind, start, target, current):
    if definition_error(kind, start, target) is not None:
        return
    got = key_result_progress(kind, start, target, current)
    assert 0 <= got <= 1
    assert got != 0 or positive_zero(got)


@PROPERTY
@given(
    st.lists(
        st.tuples(
            st.floats(0, 1e308),
            st.floats(0, 1),
            st.booleans(),
            st.none() | st.floats(0, 1),
        ),
        max_size=5,
    )
)
def test_item7_roll_ups_are_fractions_and_shares_add_up(rows):
    parts = [Part(w, p, archived=a, score=s) for w, p, a, s in rows]
    for got in (roll_up(parts), rolled_score(parts)):
        assert got is None or (0 <= got <= 1 and (got != 0 or positive_zero(got)))
    got_shares = shares(parts)
    if sum(s.weight for s in got_shares) > 0:
        assert sum(s.share for s in got_shares) == pytest.approx(1.0)
    else:
        assert all(s.share == 0 for s in got_shares)


@PROPERTY
@given(
    st.lists(st.tuples(st.integers(0, 90 * 86400), st.floats(-1e6, 1e6)), min_size=2, max_size=6),
    st.integers(-(10**9), 10**9),
)
def test_item7_a_forecast_does_not_depend_on_when_it_is_read_from(points, shift):
    """Moving every instant and the cycle's end by one amount leaves the line where it is
    (why the choice of the first point as origin is an equivalent mutant)."""
    at = [(T0 + timedelta(seconds=x), v) for x, v in points]
    moved = [(t + timedelta(seconds=shift), v) for t, v in at]
    a = forecast(T.INCREASE, -1e6, 1e6, at, END)
    b = forecast(T.INCREASE, -1e6, 1e6, moved, END + timedelta(seconds=shift))
    assert a is not None and b is not None
    assert b.value == pytest.approx(a.value, rel=1e-6, abs=1e-3)
