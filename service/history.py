"""Progress as it stood at past instants, from the check-ins' `measured_at`.

A key result's value at t is the check-in measured last at or before t (its start
value before any), among those not retracted: a retraction changes the past as the
record tells it, whenever it was made. An objective's progress at t rolls up, by the
rules, the key results and aligned children that existed at t (created by then, not
archived by then), along today's alignment: the alignment's own history is not kept.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service import sql
from service.domain import rules
from service.domain.enums import KeyResultType
from service.domain.rules import Part

_SUBTREE = sql.walk(
    sql.SUBTREE,
    """
    SELECT o.id, o.parent_id, o.weight, o.created_at, o.archived_at FROM objective o
    WHERE o.id IN (SELECT id FROM down) AND o.organization_id = :org
    """,
)
_KEY_RESULTS = text(
    "SELECT id, objective_id, type, start_value, target_value, weight, created_at "
    "FROM key_result WHERE organization_id = :org AND objective_id = ANY(:ids)"
)
_CHECK_INS = text(
    "SELECT key_result_id, measured_at, value FROM check_in "
    "WHERE organization_id = :org AND key_result_id = ANY(:ids) AND measured_at <= :until "
    "AND retracted_at IS NULL "
    "ORDER BY key_result_id, measured_at, id"
)


class _Values:
    """Each key result's measured values in time order, for lookups at any instant."""

    def __init__(self, rows: Sequence[Any]) -> None:
        self.times: dict[int, list[datetime]] = defaultdict(list)
        self.values: dict[int, list[float]] = defaultdict(list)
        for r in rows:
            self.times[r.key_result_id].append(r.measured_at)
            self.values[r.key_result_id].append(r.value)

    def at(self, kr: int, t: datetime) -> float | None:
        i = bisect.bisect_right(self.times[kr], t)
        return self.values[kr][i - 1] if i else None


def _kr_progress(kr: Any, values: _Values, t: datetime) -> tuple[float, bool]:
    value = values.at(kr.id, t)
    current = kr.start_value if value is None else value
    kind = KeyResultType(kr.type)
    return rules.key_result_progress(
        kind, kr.start_value, kr.target_value, current
    ), value is not None


async def key_result_series(
    conn: AsyncConnection, org: int, kr: Any, instants: Sequence[datetime]
) -> list[float]:
    if not instants:
        return []
    rows = (
        await conn.execute(_CHECK_INS, {"org": org, "ids": [kr.id], "until": max(instants)})
    ).all()
    values = _Values(rows)
    return [_kr_progress(kr, values, t)[0] for t in instants]


async def objective_series(
    conn: AsyncConnection, org: int, objective_id: int, instants: Sequence[datetime]
) -> list[float]:
    if not instants:
        return []
    objectives = {
        r.id: r for r in (await conn.execute(_SUBTREE, {"id": objective_id, "org": org})).all()
    }
    krs = (await conn.execute(_KEY_RESULTS, {"org": org, "ids": list(objectives)})).all()
    rows = (
        await conn.execute(
            _CHECK_INS, {"org": org, "ids": [k.id for k in krs], "until": max(instants)}
        )
    ).all()
    values = _Values(rows)
    krs_of: dict[int, list[Any]] = defaultdict(list)
    for k in krs:
        krs_of[k.objective_id].append(k)
    children: dict[int, list[int]] = defaultdict(list)
    for o in objectives.values():
        if o.parent_id in objectives and o.id != objective_id:
            children[o.parent_id].append(o.id)

    def at(t: datetime) -> float:
        def roll(i: int, seen: frozenset[int]) -> tuple[float, bool]:
            parts = []
            for k in krs_of[i]:
                if k.created_at <= t:
                    progress, checked = _kr_progress(k, values, t)
                    parts.append(Part(k.weight, progress, False, checked))
            for c in children[i]:
                child = objectives[c]
                if child.created_at > t or c in seen:
                    continue
                progress, checked = roll(c, seen | {c})
                archived = child.archived_at is not None and child.archived_at <= t
                parts.append(Part(child.weight, progress, archived, checked))
            return rules.roll_up(parts), rules.rolled_checked_in(parts)

        return roll(objective_id, frozenset({objective_id}))[0]

    return [at(t) for t in instants]
