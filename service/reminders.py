"""Reminders, so that a notification service can nudge people:
- CHECK_IN_DUE: one event per overdue key result and stretch of silence;
- CYCLE_REVIEW_DUE: one event per cycle whose end passed while it was still ACTIVE
  (the seed's third pitfall, neglected reviews).
It is a periodic job of the job runner (service/jobs.py): queued once per
OKR_CHECK_IN_REMINDER_SECONDS slot whatever the number of replicas and workers, run by
one process. A transaction-scoped advisory lock still lets one sweep write at a time (a
job whose lease ran out may be taken again while its first run is ending). Under READ
COMMITTED each statement after the lock sees everything the previous holder committed,
so "no CYCLE_REVIEW_DUE event for this cycle yet" read inside the lock is the once-only
guard: no column needed."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service import clock, events, sql
from service.db import Database
from service.domain.enums import EventKind
from service.jobs import Job

log = logging.getLogger(__name__)

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


KIND = "reminders"


def handler(db: Database) -> Callable[[Job], Awaitable[None]]:
    """The job: write whatever reminders are due now."""

    async def run(_job: Job) -> None:
        written = await db.transaction(lambda s: write_due_reminders(s, clock.now()))
        if written:
            log.info("wrote %d reminders", written)

    return run
