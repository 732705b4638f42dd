"""The OKR rules of DESIGN.md, case by case."""

import math
from datetime import UTC, date, datetime, timedelta

import pytest

from service.domain.enums import CycleStatus
from service.domain.enums import KeyResultType as T
from service.domain.enums import ProgressStatus as S
from service.domain.enums import RealismVerdict as V
from service.domain.rules import (
    Part,
    can_move_cycle,
    definition_error,
    expected_progress,
    forecast,
    is_stale,
    key_result_progress,
    progress_status,
    realism,
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
