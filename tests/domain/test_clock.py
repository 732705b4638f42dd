"""Issue 19, item 0: one clock for the OKR facts (service/clock.py), which a setting
starts at a chosen instant and which then flows, as the wall clock does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from service import clock
from service.settings import Settings


@pytest.fixture(autouse=True)
def wall_clock_after() -> Iterator[None]:
    yield
    clock.start(None)


def test_the_clock_is_the_wall_clock_unless_started():
    before = datetime.now(UTC)
    assert before <= clock.now() <= datetime.now(UTC)


def test_a_started_clock_reads_its_instant_then_flows():
    at = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
    clock.start(at)
    first = clock.now()
    time.sleep(0.01)
    second = clock.now()
    assert at <= first < second < at + timedelta(seconds=5)


def test_a_naive_instant_is_utc_and_a_worker_lines_up_with_its_parent(monkeypatch):
    # Set, then removed: monkeypatch then puts back what was there (nothing) at the end,
    # so the variables start_for_children writes do not reach later tests' processes.
    for name in (clock.STARTED_AT_ENV, "OKR_CLOCK_START"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    clock.start_for_children(datetime(2027, 3, 31, 23, 0, tzinfo=UTC))
    parent = clock.now()
    # A worker starts later, with the setting and the parent's start in its environment.
    settings = Settings()
    assert settings.clock_start == datetime(2027, 3, 31, 23, 0, tzinfo=UTC)
    time.sleep(0.05)
    clock.start_from_environment(settings.clock_start)
    assert parent + timedelta(seconds=0.05) <= clock.now() < parent + timedelta(seconds=5)
    clock.start(datetime(2027, 1, 2, 9, 0))
    assert datetime(2027, 1, 2, 9, 0, tzinfo=UTC) <= clock.now()


async def test_a_mutation_reads_the_clock_once(org):
    """A check-in, its event and its key result's status read one instant: the
    mutation's (service/clock.py, `held`)."""
    from tests import factories as f

    cycle = await f.active_cycle(org)
    obj = await f.objective(org, cycle, "Ship it")
    kr = await f.key_result(org, obj)
    payload = await f.ok(
        org,
        "checkIn",
        {"keyResultId": kr, "value": 40},
        "checkIn { id measuredAt createdAt }",
    )
    data = await org.call(
        "{ events(last: 3) { edges { node { kind occurredAt } } } }",
    )
    occurred = {e["node"]["kind"]: e["node"]["occurredAt"] for e in data["events"]["edges"]}
    made = payload["checkIn"]
    assert made["measuredAt"] == made["createdAt"] == occurred["CHECK_IN"], (made, occurred)
