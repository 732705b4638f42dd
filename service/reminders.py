"""Reminders, so that a notification service can nudge people:
- CHECK_IN_DUE: one event per overdue key result and stretch of silence;
- CYCLE_REVIEW_DUE: one event per cycle whose end passed while it was still ACTIVE
  (the seed's third pitfall, neglected reviews).
The job runs in every replica and worker on a timer, but a transaction-scoped advisory
lock lets exactly one of them write at a time. Under READ COMMITTED each statement after
the lock sees everything the previous holder committed, so "no CYCLE_REVIEW_DUE event
for this cycle yet" read inside the lock is the once-only guard: no column needed."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service import clock, events, sql
from service.db import Database
from service.domain.enums import EventKind

log = logging.getLogger(__name__)

# A failing job (the database away, say) logs its stack at most this often.
ERROR_LOG_SECONDS = 60.0

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
    WHERE o.archived_at IS NULL AND k.archived_at IS NULL
      AND coalesce(k.last_check_in_at, k.created_at)
          + make_interval(days => coalesce(t.check_in_cadence_days, g.check_in_cadence_days))
          < :now
      AND k.due_notice_for IS DISTINCT FROM coalesce(k.last_check_in_at, k.created_at)
    ORDER BY k.organization_id, k.id
    FOR UPDATE OF k SKIP LOCKED
    """
)

# ACTIVE cycles past the end of their last day (UTC) with no CYCLE_REVIEW_DUE event yet.
# A cycle being moved on right now (its row locked) is skipped: if it became REVIEW,
# nothing is due; if not, the next run sees it.
_REVIEWS_DUE = text(
    """
    SELECT c.id, c.organization_id AS org, c.name, c.ends_on
    FROM cycle c
    WHERE c.status = 'ACTIVE' AND c.ends_on < :today
      AND NOT EXISTS (
          SELECT 1 FROM event e
          WHERE e.organization_id = c.organization_id AND e.subject_type = 'Cycle'
            AND e.subject_id = c.id AND e.kind = :kind
      )
    ORDER BY c.organization_id, c.id
    FOR NO KEY UPDATE OF c SKIP LOCKED
    """
)


async def write_due_reminders(session: AsyncSession, now: datetime) -> int:
    """Write the reminders that are due (both kinds); 0 when another replica holds the
    lock. Returns how many events were written."""
    got = await session.scalar(
        text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": sql.REMINDER_LOCK}
    )
    if not got:
        return 0
    return await _check_ins_due(session, now) + await _reviews_due(session, now)


async def _check_ins_due(session: AsyncSession, now: datetime) -> int:
    rows = (await session.execute(_OVERDUE, {"now": now})).all()
    for r in rows:
        await session.execute(
            text("UPDATE key_result SET due_notice_for = :at WHERE id = :id"),
            {"at": r.last_activity, "id": r.id},
        )
        scope = events.Scope.of_objective(r.objective_id, r.team_id, r.cycle_id)
        await events.record(
            session, None, r.org, events.check_in_due(r.id, r.due.isoformat(), scope)
        )
    return len(rows)


async def _reviews_due(session: AsyncSession, now: datetime) -> int:
    # The end of endsOn has passed when `now`'s UTC date is later than endsOn.
    today = now.astimezone(UTC).date()
    kind = str(EventKind.CYCLE_REVIEW_DUE)
    rows = (await session.execute(_REVIEWS_DUE, {"today": today, "kind": kind})).all()
    for r in rows:
        due = events.cycle_review_due(r.id, r.name, r.ends_on.isoformat())
        await events.record(session, None, r.org, due)
    return len(rows)


async def run_forever(db: Database, interval: float) -> None:
    last_logged = -math.inf
    unlogged = 0
    loop = asyncio.get_running_loop()
    while True:
        try:
            written = await db.transaction(lambda s: write_due_reminders(s, clock.now()))
            if written:
                log.info("wrote %d reminders", written)
        except Exception:
            # Never silent, never a flood: the stack once a minute at most, with a count
            # of the failures in between.
            if loop.time() - last_logged >= ERROR_LOG_SECONDS:
                log.exception(
                    "the reminders job failed (%d more failures since the last logged)", unlogged
                )
                last_logged, unlogged = loop.time(), 0
            else:
                unlogged += 1
        await asyncio.sleep(interval)
