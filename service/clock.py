"""The one clock of the OKR facts: status and expected progress, staleness, due dates,
forecasts, and the instants of check-ins, measurements and events all read `now()`.

It is the wall clock unless `OKR_CLOCK_START` sets it: then it reads that instant when
the process starts and flows from there, so instants stay distinct and increasing. The
demo sets it to its own date (`okr serve --demo`, service/demo.py), so the tour in the
README answers the same whatever day it is run. Authentication (token expiry, an API
key's last use) keeps the real clock: a credential's lifetime is not an OKR fact.

Nothing on the database side may stand in for this clock where an OKR fact is written
(`now()` in SQL, a column's server default): pass the instant from here.

One instant per operation: a mutation takes `now()` once and runs under `held(it)`
(schema/mutations/common.py), so that everything it writes (the check-in, the roll-up's
stamps, its events) and the payload's derived facts (status, stale) read one instant,
as a query's facts read its context's."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta

# `okr serve --workers N` puts the real instant its clock started at here, so that every
# worker reads the same time (each starts a little later than the parent).
STARTED_AT_ENV = "OKR_CLOCK_STARTED_AT"

_offset = timedelta(0)
# The instant of the operation running in this task (see `held`), if any.
_held: ContextVar[datetime | None] = ContextVar("okr_clock_held", default=None)


def now() -> datetime:
    """The OKR facts' current instant (UTC): the running operation's, if one holds it."""
    instant = _held.get()
    return instant if instant is not None else datetime.now(UTC) + _offset


@contextmanager
def held(instant: datetime) -> Iterator[datetime]:
    """Within this block (and the tasks it starts), `now()` is `instant`."""
    token = _held.set(instant)
    try:
        yield instant
    finally:
        _held.reset(token)


def start(at: datetime | None, since: datetime | None = None) -> None:
    """Make the clock read `at` at the real instant `since` (this moment when None) and
    flow from there; `at` None is the wall clock again."""
    global _offset
    if at is None:
        _offset = timedelta(0)
        return
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    _offset = at - (since or datetime.now(UTC))


def start_for_children(at: datetime | None) -> None:
    """Start the clock at `at` here and for every process this one starts afterwards
    (workers read `OKR_CLOCK_START` and the instant it started at from the environment)."""
    if at is None:
        start(None)
        return
    since = datetime.now(UTC)
    start(at, since)
    os.environ["OKR_CLOCK_START"] = at.isoformat()
    os.environ[STARTED_AT_ENV] = since.isoformat()


def start_from_environment(at: datetime | None) -> None:
    """A process's start: `at` is the setting; a parent's start instant, when there is
    one, lines this process's clock up with its parent's."""
    since = os.environ.get(STARTED_AT_ENV)
    start(at, datetime.fromisoformat(since) if since and at is not None else None)
