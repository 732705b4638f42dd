"""The SQL written once in service/sql.py: the status rule in SQL agrees with the pure
fact (service/domain/facts.py), and the tree walks and lock keys live only there."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Boolean, Date, Float, Select, bindparam, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from service import sql
from service.domain import facts, rules
from tests.factories import ROOT

ROOT = ROOT

_dates = st.dates(min_value=rules.EARLIEST_DATE, max_value=rules.LATEST_DATE)


@st.composite
def cases(draw: st.DrawFn) -> tuple:
    starts_on = draw(_dates)
    ends_on = draw(st.dates(min_value=starts_on, max_value=rules.LATEST_DATE))
    # Mostly near the cycle, where the status turns; sometimes far before or after.
    span = (ends_on - starts_on).days + 1
    offset = draw(
        st.one_of(
            st.integers(-span * 86_400_000_000 // 4, span * 86_400_000_000 * 5 // 4),
            st.integers(-(10**15), 10**15),
        )
    )
    start = datetime(starts_on.year, starts_on.month, starts_on.day, tzinfo=UTC)
    try:
        now = start + timedelta(microseconds=offset)
    except OverflowError:
        now = start
    now = min(max(now, datetime(1800, 1, 1, tzinfo=UTC)), datetime(3100, 1, 1, tzinfo=UTC))
    progress = draw(st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.5, 0.9, 1.0])))
    checked_in = draw(st.booleans())
    on_track = draw(st.floats(0, 0.5))
    at_risk = draw(st.floats(on_track, 1))
    return starts_on, ends_on, now, progress, checked_in, (on_track, at_risk)


def _python(case: tuple) -> str:
    starts_on, ends_on, now, progress, checked_in, thresholds = case
    dates = SimpleNamespace(starts_on=starts_on, ends_on=ends_on)
    return str(facts.status(progress, checked_in, dates, thresholds, now))


def _statement(batch: list[tuple]) -> tuple[Select, dict]:
    columns = []
    params: dict = {}
    for i, (starts_on, ends_on, now, progress, checked_in, thresholds) in enumerate(batch):
        params |= {f"s{i}": starts_on, f"e{i}": ends_on, f"p{i}": progress, f"c{i}": checked_in}
        columns.append(
            sql.status(
                now,
                thresholds,
                bindparam(f"p{i}", type_=Float),
                bindparam(f"c{i}", type_=Boolean),
                bindparam(f"s{i}", type_=Date),
                bindparam(f"e{i}", type_=Date),
            ).label(f"status{i}")
        )
    return select(*columns), params


async def _sql(url: str, batch: list[tuple]) -> list[str]:
    statement, params = _statement(batch)
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(statement, params)).one()
    finally:
        await engine.dispose()
    return list(row)


@settings(max_examples=25, deadline=None)
@given(batch=st.lists(cases(), min_size=1, max_size=40))
def test_the_status_rule_in_sql_agrees_with_the_python_rule(pg, batch):
    got = asyncio.run(_sql(pg.url("postgres"), batch))
    assert got == [_python(case) for case in batch]


def test_the_status_rule_in_sql_agrees_on_the_boundaries_of_the_design():
    # A cycle of ten days, checked in, at its fifth day: expected progress is 0.5.
    start, end = date(2026, 1, 1), date(2026, 1, 10)
    now = datetime(2026, 1, 6, tzinfo=UTC)
    batch = [(start, end, now, p, True, (0.10, 0.25)) for p in (0.4, 0.39, 0.25, 0.24, 1.0)]
    batch.append((start, end, now, 0.0, False, (0.10, 0.25)))
    assert [_python(c) for c in batch] == [
        "ON_TRACK",
        "AT_RISK",
        "AT_RISK",
        "OFF_TRACK",
        "ACHIEVED",
        "NOT_STARTED",
    ]


def test_the_tree_walks_and_lock_keys_are_written_once():
    written = {}
    for folder in ("service", "schema"):
        for path in (ROOT / folder).rglob("*.py"):
            source = path.read_text()
            if path.name == "sql.py" and path.parent.name == "service":
                continue
            if re.search(r"RECURSIVE\s+(up|down)\b", source):
                written[str(path.relative_to(ROOT))] = "an objective tree walk"
            if re.search(r"\b\w+_LOCK\s*=\s*\d", source):
                written[str(path.relative_to(ROOT))] = "an advisory lock key"
    assert not written, f"use service/sql.py instead: {written}"
