"""The record a key result's realism is judged by (docs/design.md, "Realism"), read for many
key results in one statement: the points (instant, value) of each inside its trailing
window, ending now, counted and fitted by least squares in the database (a metric that
posts every minute has a hundred thousand points a quarter: they are not shipped).

The record of a key result is its own check-ins and the check-ins of the key results
it was carried over from, up the chain (the cycle before rarely reaches into the
window, but when it does it is the record a planning review needs), and the
measurements of the metric each of them is bound to, from before the cycle as well as
during it. A measurement and the check-in made from it are one point, so the points are
distinct by (instant, value) per key result. Retracted check-ins and measurements are
not record.

A carried-from key result may sit in an objective the caller cannot see: its points
count in the judgement, as a roll-up counts what a reader may not see, and are never
shown one by one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.domain import enums, rules

# How far up a chain of carry-overs the record reaches (a guard: chains are acyclic).
MAX_CARRY_DEPTH = 20


_RECORD = text(
    """
    WITH RECURSIVE source(owner, key_result_id, since, depth) AS (
        SELECT w.owner, w.owner, w.since, 0
        FROM unnest(CAST(:owners AS bigint[]), CAST(:since AS timestamptz[])) AS w(owner, since)
      UNION
        SELECT s.owner, k.carried_from_id, s.since, s.depth + 1
        FROM source s
        JOIN key_result k ON k.id = s.key_result_id AND k.organization_id = :org
        WHERE k.carried_from_id IS NOT NULL AND s.depth < :max_depth
    ), point(owner, measured_at, value) AS (
        SELECT s.owner, ci.measured_at, ci.value
        FROM source s
        JOIN check_in ci ON ci.key_result_id = s.key_result_id AND ci.organization_id = :org
        WHERE ci.measured_at >= s.since AND ci.measured_at <= :now
          AND ci.retracted_at IS NULL
      UNION ALL
        SELECT s.owner, m.measured_at, m.value
        FROM source s
        JOIN key_result k ON k.id = s.key_result_id AND k.organization_id = :org
        JOIN measurement m ON m.metric_id = k.metric_id AND m.organization_id = :org
        WHERE m.measured_at >= s.since AND m.measured_at <= :now
          AND m.retracted_at IS NULL
    )
    SELECT owner, count(*) AS basis,
           regr_slope(value, extract(epoch FROM measured_at)) * 604800.0 AS slope
    FROM (SELECT DISTINCT owner, measured_at, value FROM point) AS distinct_point
    GROUP BY owner
    """
)


@dataclass(frozen=True)
class Fit:
    """A key result's record, reduced where it lies: how many distinct points are in the
    window, and the least-squares slope through them in units per week (None when they
    share one instant). The points themselves never leave the database, however many a
    metric posted."""

    basis: int = 0
    slope_per_week: float | None = None


async def record_points(
    conn: AsyncConnection,
    org: int,
    key_result_ids: Iterable[int],
    window_start: datetime | Mapping[int, datetime],
    now: datetime,
) -> dict[int, Fit]:
    """Each key result's record from `window_start` (one instant for all, or one per key
    result id) to `now`, fitted; every id asked for has an entry. One statement."""
    ids = list(dict.fromkeys(key_result_ids))
    found: dict[int, Fit] = {pk: Fit() for pk in ids}
    if not ids:
        return found
    if isinstance(window_start, Mapping):
        since = [window_start[pk] for pk in ids]
    else:
        since = [window_start] * len(ids)
    rows = await conn.execute(
        _RECORD,
        {"owners": ids, "since": since, "org": org, "now": now, "max_depth": MAX_CARRY_DEPTH},
    )
    for r in rows:
        found[r.owner] = Fit(r.basis, r.slope)
    return found


def judge(
    key_result: Any, fit: Fit, cycle_start: datetime, cycle_end: datetime, now: datetime
) -> rules.Realism:
    """The rule over a key_result row and its fitted record."""
    return rules.realism_from_fit(
        enums.KeyResultType(key_result.type),
        key_result.start_value,
        key_result.target_value,
        key_result.current_value,
        fit.basis,
        fit.slope_per_week,
        cycle_start,
        cycle_end,
        now,
    )
