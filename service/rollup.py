"""Keeping stored objective progress exact: recompute a set of objectives and every
ancestor, bottom-up, inside the caller's transaction.

Concurrency: the rows are locked in id order (step 3 of the one lock order,
service/usecases/common.py: two roll-ups through a shared ancestor queue instead of
deadlocking, and under the organization's alignment lock the chain cannot move
meanwhile), then read again in a new statement, which under READ COMMITTED sees every
roll-up committed before the lock was granted. No update is lost. Both happen in one
round trip: the PL/pgSQL function `okr_lock_chain` (migration 0007) locks and reads; the
roll-up itself is computed here by the pure rules.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.domain import facts, rules
from service.domain.rules import Part
from service.events import Scope

# Lock `start` and every ancestor in id order and read them and their parts afresh, in
# one round trip (migration 0007: a loop that locks again should the chain have moved).
_LOCK_CHAIN = text("SELECT okr_lock_chain(:org, CAST(:ids AS bigint[]))")
_UPDATE = text(
    "UPDATE objective SET progress = :progress, has_check_in = :has_check_in, score = :score "
    "WHERE id = :id AND organization_id = :org"
)


@dataclass(frozen=True)
class ChainObjective:
    id: int
    parent_id: int | None
    team_id: int | None
    cycle_id: int
    progress: float
    has_check_in: bool
    score: float | None
    starts_on: date
    ends_on: date


@dataclass(frozen=True)
class ChainPart:
    kind: str  # "KeyResult" or "Objective"
    id: int
    owner: int
    weight: float
    progress: float
    checked_in: bool
    score: float | None
    archived: bool


@dataclass
class Chain:
    """The locked objectives and the parts of each, as `okr_lock_chain` read them."""

    objectives: dict[int, ChainObjective]
    parts_of: dict[int, list[ChainPart]]

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Chain:
        objectives: dict[int, ChainObjective] = {}
        parts_of: dict[int, list[ChainPart]] = defaultdict(list)
        if data:
            for i, parent, team, cycle, progress, has, score, starts, ends in data["objectives"]:
                objectives[i] = ChainObjective(
                    i,
                    parent,
                    team,
                    cycle,
                    float(progress),
                    has,
                    None if score is None else float(score),
                    date.fromisoformat(starts),
                    date.fromisoformat(ends),
                )
            for is_kr, i, owner, weight, progress, checked, score, archived in data["parts"]:
                parts_of[owner].append(
                    ChainPart(
                        "KeyResult" if is_kr else "Objective",
                        i,
                        owner,
                        float(weight),
                        float(progress),
                        checked,
                        None if score is None else float(score),
                        archived,
                    )
                )
        return cls(objectives, parts_of)


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


async def lock_chain(session: AsyncSession, org: int, start: list[int]) -> Chain:
    """Lock `start` and every ancestor (id order) and read them and their parts afresh:
    one statement, one round trip."""
    raw = (await session.execute(_LOCK_CHAIN, {"org": org, "ids": start})).scalar_one()
    return Chain.of(orjson.loads(raw) if isinstance(raw, str | bytes) else raw)


Values = tuple[float, bool, float | None]  # progress, checked in, score


def compute(
    chain: Chain,
    *,
    thresholds: tuple[float, float],
    now: datetime,
    fresh_parts: dict[tuple[str, int], Values] | None = None,
) -> tuple[RollUp, list[dict[str, Any]]]:
    """Recompute every locked objective bottom-up with the pure rules. `fresh_parts`
    holds parts this transaction changes but has not written yet (a check-in's key
    result). Returns what changed and the objective rows to write (those that differ)."""
    objectives = chain.objectives
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

    fresh: dict[tuple[str, int], Values] = dict(fresh_parts or {})
    result = RollUp()
    updates: list[dict[str, Any]] = []
    for i in order:
        row = objectives[i]
        parts = []
        for p in chain.parts_of.get(i, ()):
            progress, checked_in, score = fresh.get(
                (p.kind, p.id), (p.progress, p.checked_in, p.score)
            )
            parts.append(Part(p.weight, progress, p.archived, checked_in, score))
        value = (rules.roll_up(parts), rules.rolled_checked_in(parts), rules.rolled_score(parts))
        fresh[("Objective", i)] = value
        if value != (row.progress, row.has_check_in, row.score):
            updates.append(
                {"id": i, "progress": value[0], "has_check_in": value[1], "score": value[2]}
            )
        result.changes.append(
            {
                "type": "Objective",
                "id": i,
                "previous": row.progress,
                "progress": value[0],
                "status": str(facts.status(value[0], value[1], row, thresholds, now)),
            }
        )
    result.objective_ids = order
    for r in objectives.values():
        result.parent_of[r.id] = r.parent_id
        result.team_of[r.id] = r.team_id
        result.cycle_of[r.id] = r.cycle_id
    result.team_ids = sorted({r.team_id for r in objectives.values() if r.team_id is not None})
    result.cycle_ids = sorted({r.cycle_id for r in objectives.values()})
    return result, updates


async def recompute(
    session: AsyncSession,
    org: int,
    start: list[int],
    *,
    thresholds: tuple[float, float],
    now: datetime,
) -> RollUp:
    """Recompute `start` and all their ancestors; write what differs. Two statements:
    lock and read (`lock_chain`), then the objectives that changed."""
    start = [i for i in start if i is not None]
    if not start:
        return RollUp()
    chain = await lock_chain(session, org, start)
    result, updates = compute(chain, thresholds=thresholds, now=now)
    if updates:
        await session.execute(_UPDATE, [{**u, "org": org} for u in updates])
    return result
