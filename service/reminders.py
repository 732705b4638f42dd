"""CHECK_IN_DUE: one event per overdue key result, so that a notification service can
remind people. Runs in every replica on a timer, but a transaction-scoped advisory lock
lets exactly one of them write at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service import events
from service.db import Database
from service.events import EventKind

log = logging.getLogger(__name__)

REMINDER_LOCK = 7_461_003

# Key results of ACTIVE cycles whose next check-in was due before :now, and whose
# current stretch of silence has had no reminder yet.
_OVERDUE = text(
    """
    SELECT k.id, k.organization_id AS org, o.id AS objective_id, o.team_id, o.cycle_id,
           coalesce(k.last_check_in_at, k.created_at) AS last_activity,
           coalesce(k.last_check_in_at, k.created_at)
             + make_interval(days => coalesce(t.check_in_cadence_days,
                                              g.check_in_cadence_days)) AS due
    FROM key_result k
    JOIN objective o ON o.id = k.objective_id
    JOIN cycle c ON c.id = o.cycle_id AND c.status = 'ACTIVE'
    JOIN organization g ON g.id = k.organization_id
    LEFT JOIN team t ON t.id = o.team_id
    WHERE o.archived_at IS NULL
      AND coalesce(k.last_check_in_at, k.created_at)
          + make_interval(days => coalesce(t.check_in_cadence_days, g.check_in_cadence_days))
          < :now
      AND k.due_notice_for IS DISTINCT FROM coalesce(k.last_check_in_at, k.created_at)
    ORDER BY k.organization_id, k.id
    FOR UPDATE OF k SKIP LOCKED
    """
)


async def write_due_reminders(session: AsyncSession, now: datetime) -> int:
    """Write the reminders that are due; 0 when another replica holds the lock."""
    got = await session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": REMINDER_LOCK})
    if not got:
        return 0
    rows = (await session.execute(_OVERDUE, {"now": now})).all()
    for r in rows:
        await session.execute(
            text("UPDATE key_result SET due_notice_for = :at WHERE id = :id"),
            {"at": r.last_activity, "id": r.id},
        )
        await events.record(
            session,
            None,
            r.org,
            EventKind.CHECK_IN_DUE,
            "KeyResult",
            r.id,
            {
                "due": r.due.isoformat(),
                "objective_ids": [r.objective_id],
                "team_ids": [r.team_id] if r.team_id else [],
                "cycle_ids": [r.cycle_id],
            },
        )
    return len(rows)


async def run_forever(db: Database, interval: float) -> None:
    from service.usecases.common import now

    while True:
        with contextlib.suppress(Exception):
            written = await db.transaction(lambda s: write_due_reminders(s, now()))
            if written:
                log.info("wrote %d check-in reminders", written)
        await asyncio.sleep(interval)
