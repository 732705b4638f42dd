"""Keeping stored objective progress exact: recompute a set of objectives and every
ancestor, bottom-up, inside the caller's transaction.

Concurrency: the rows are locked in id order (one global order, so two roll-ups
through a shared ancestor queue instead of deadlocking), then read again in a new
statement, which under READ COMMITTED sees every roll-up committed before the lock
was granted. No update is lost.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service import sql
from service.domain import rules
from service.domain.rules import Part
from service.events import Scope

_ANCESTRY = sql.walk(sql.ANCESTRY, "SELECT id FROM up")
# Find and lock the chain in one statement; the caller checks it did not move meanwhile.
_LOCK_ANCESTRY = sql.walk(
    sql.ANCESTRY,
    """
    SELECT o.id, o.parent_id FROM objective o WHERE o.id IN (SELECT id FROM up)
    ORDER BY o.id FOR UPDATE OF o
    """,
)
_OBJECTIVES = text(
    """
    SELECT o.id, o.parent_id, o.team_id, o.cycle_id, o.progress, o.has_check_in, o.score,
           c.starts_on, c.ends_on, c.status AS cycle_status
    FROM objective o JOIN cycle c ON c.id = o.cycle_id
    WHERE o.id = ANY(:ids) AND o.organization_id = :org
    """
)
_PARTS = text(
    """
    SELECT 'KeyResult' AS kind, id, objective_id AS owner, weight, progress,
           last_check_in_id IS NOT NULL AS checked_in, score, false AS archived
    FROM key_result WHERE objective_id = ANY(:ids) AND organization_id = :org
    UNION ALL
    SELECT 'Objective', id, parent_id, weight, progress, has_check_in, score,
           archived_at IS NOT NULL
    FROM objective WHERE parent_id = ANY(:ids) AND organization_id = :org
    """
)
_UPDATE = text(
    "UPDATE objective SET progress = :progress, has_check_in = :has_check_in, score = :score "
    "WHERE id = :id AND organization_id = :org"
)


@dataclass
class RollUp:
    """What a recomputation changed: progress changes leaf to root, and the scope."""

    changes: list[dict[str, Any]] = field(default_factory=list)
    objective_ids: list[int] = field(default_factory=list)
    team_ids: list[int] = field(default_factory=list)
    cycle_ids: list[int] = field(default_factory=list)
    # Each recomputed objective's parent, team and cycle, to split a batch's roll-up
    # into its chains (`chain`).
    parent_of: dict[int, int | None] = field(default_factory=dict)
    team_of: dict[int, int | None] = field(default_factory=dict)
    cycle_of: dict[int, int] = field(default_factory=dict)

    def chain(self, objective_id: int) -> RollUp:
        """The part of this roll-up from `objective_id` up to its root: what one key
        result's event reports when many were rolled up together."""
        up: list[int] = []
        i: int | None = objective_id
        while i is not None and i in self.parent_of and i not in up:
            up.append(i)
            i = self.parent_of[i]
        wanted = set(up)
        return RollUp(
            changes=[c for c in self.changes if c["id"] in wanted],
            objective_ids=[i for i in self.objective_ids if i in wanted],
            team_ids=sorted({t for i in up if (t := self.team_of[i]) is not None}),
            cycle_ids=sorted({self.cycle_of[i] for i in up}),
        )

    def scope(self) -> Scope:
        return Scope(tuple(self.objective_ids), tuple(self.team_ids), tuple(self.cycle_ids))


async def _lock_ancestry(session: AsyncSession, org: int, start: list[int]) -> list[int]:
    rows = (await session.execute(_LOCK_ANCESTRY, {"ids": start, "org": org})).all()
    locked = {r.id for r in rows}
    # The locked rows are read fresh: if a parent changed between the recursive scan and
    # the lock (a concurrent re-alignment), the chain they form differs; lock again.
    while True:
        parents = {r.parent_id for r in rows if r.parent_id is not None}
        if parents <= locked:
            return sorted(locked)
        ids = set((await session.execute(_ANCESTRY, {"ids": start, "org": org})).scalars())
        rows = (
            await session.execute(_LOCK_ANCESTRY, {"ids": sorted(ids | locked), "org": org})
        ).all()
        locked |= {r.id for r in rows}


def status_of(
    progress: float, checked_in: bool, starts_on, ends_on, thresholds, now: datetime
) -> str:
    expected = rules.expected_progress(starts_on, ends_on, now)
    return str(rules.progress_status(progress, expected, checked_in, *thresholds))


async def recompute(
    session: AsyncSession,
    org: int,
    start: list[int],
    *,
    thresholds: tuple[float, float],
    now: datetime,
) -> RollUp:
    """Recompute `start` and all their ancestors; write what differs."""
    start = [i for i in start if i is not None]
    if not start:
        return RollUp()
    ids = await _lock_ancestry(session, org, start)
    objectives = {
        r.id: r for r in (await session.execute(_OBJECTIVES, {"ids": ids, "org": org})).all()
    }
    parts_of: dict[int, list[Any]] = defaultdict(list)
    for r in (await session.execute(_PARTS, {"ids": ids, "org": org})).all():
        parts_of[r.owner].append(r)

    # Children before parents: post-order over the locked set.
    order: list[int] = []
    seen: set[int] = set()
    children: dict[int, list[int]] = defaultdict(list)
    for r in objectives.values():
        if r.parent_id in objectives:
            children[r.parent_id].append(r.id)

    def visit(i: int) -> None:
        if i in seen:
            return
        seen.add(i)
        for c in children[i]:
            visit(c)
        order.append(i)

    for i in sorted(objectives):
        visit(i)

    fresh: dict[int, tuple[float, bool, float | None]] = {}
    result = RollUp()
    updates = []
    for i in order:
        row = objectives[i]
        parts = []
        for p in parts_of[i]:
            progress, checked_in, score = p.progress, p.checked_in, p.score
            if p.kind == "Objective" and p.id in fresh:
                progress, checked_in, score = fresh[p.id]
            parts.append(Part(p.weight, progress, p.archived, checked_in, score))
        value = (rules.roll_up(parts), rules.rolled_checked_in(parts), rules.rolled_score(parts))
        fresh[i] = value
        if value != (row.progress, row.has_check_in, row.score):
            updates.append(
                {
                    "id": i,
                    "org": org,
                    "progress": value[0],
                    "has_check_in": value[1],
                    "score": value[2],
                }
            )
        result.changes.append(
            {
                "type": "Objective",
                "id": i,
                "previous": row.progress,
                "progress": value[0],
                "status": status_of(
                    value[0], value[1], row.starts_on, row.ends_on, thresholds, now
                ),
            }
        )
    if updates:
        await session.execute(_UPDATE, updates)
    result.objective_ids = order
    for r in objectives.values():
        result.parent_of[r.id] = r.parent_id
        result.team_of[r.id] = r.team_id
        result.cycle_of[r.id] = r.cycle_id
    result.team_ids = sorted({r.team_id for r in objectives.values() if r.team_id is not None})
    result.cycle_ids = sorted({r.cycle_id for r in objectives.values()})
    return result
