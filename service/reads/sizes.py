"""What a read will walk, as best known before it runs: the few statistics the query
cost (schema/limits.py) and the CSV export price their fields by.

- A `descendants` walks its objective's subtree: priced as the mean tree under a root,
  the objectives the caller may see divided by the roots among them (the deepest a walk
  usually goes: it overestimates below the roots, where a walk is smaller).
- A `forecast` reads every check-in of its key result: priced as the mean check-ins per
  key result over a sample of the newest key results the caller may see (SAMPLE of
  them, so the statement stays cheap however large the organization).
- A cycle report (and its CSV export) builds a row per objective and key result of the
  cycle the caller may see: priced as that count.

Counted over what the caller may see only, so that a price hints at nothing hidden;
the walk itself may read more (hidden descendants), which the response budget and the
deadline bound while it runs. Each statement runs only when the document asks for the
field it prices, on one pooled connection, and nothing is cached between requests."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service import models
from service.domain.principal import Principal
from service.reads.visibility import visible_objectives

OBJ = models.table(models.Objective)
K = models.table(models.KeyResult)
CI = models.table(models.CheckIn)

SAMPLE = 100


@dataclass(frozen=True)
class Sizes:
    tree: int | None = None  # objectives one `descendants` walks
    check_ins: int | None = None  # check-ins one `forecast` reads
    cycles: dict[int, int] = field(default_factory=dict)  # rows of each cycle's report


async def tree_size(conn: AsyncConnection, p: Principal) -> int:
    """The mean number of objectives under a root, the root left out."""
    shown = (OBJ.c.organization_id == p.organization_id, OBJ.c.archived_at.is_(None))
    row = (
        await conn.execute(
            select(func.count(), func.count().filter(OBJ.c.parent_id.is_(None))).where(
                *shown, visible_objectives(p, OBJ)
            )
        )
    ).one()
    objectives, roots = int(row[0]), int(row[1])
    return math.ceil(max(objectives - roots, 0) / max(roots, 1))


async def check_ins_per_key_result(conn: AsyncConnection, p: Principal) -> int:
    """The mean check-ins of the SAMPLE newest key results the caller may see."""
    sample = (
        select(K.c.id)
        .join(OBJ, OBJ.c.id == K.c.objective_id)
        .where(K.c.organization_id == p.organization_id, visible_objectives(p, OBJ))
        .order_by(K.c.id.desc())
        .limit(SAMPLE)
    ).subquery()
    row = (
        await conn.execute(
            select(func.count(distinct(sample.c.id)), func.count(CI.c.id))
            .select_from(sample)
            .outerjoin(CI, CI.c.key_result_id == sample.c.id)
        )
    ).one()
    key_results, check_ins = int(row[0]), int(row[1])
    return math.ceil(check_ins / max(key_results, 1))


async def cycle_rows(
    conn: AsyncConnection, p: Principal, cycle_ids: Iterable[int]
) -> dict[int, int]:
    """Per cycle: the objectives of it the caller may see, and their key results (what
    its report reads and builds a row for); a cycle not found has none."""
    wanted = sorted(set(cycle_ids))
    found = {pk: 0 for pk in wanted}
    if not wanted:
        return found
    rows = await conn.execute(
        select(OBJ.c.cycle_id, func.count(distinct(OBJ.c.id)), func.count(K.c.id))
        .select_from(OBJ)
        .outerjoin(K, K.c.objective_id == OBJ.c.id)
        .where(
            OBJ.c.organization_id == p.organization_id,
            OBJ.c.cycle_id.in_(wanted),
            OBJ.c.archived_at.is_(None),
            visible_objectives(p, OBJ),
        )
        .group_by(OBJ.c.cycle_id)
    )
    for cycle_id, objectives, key_results in rows:
        found[cycle_id] = int(objectives) + int(key_results)
    return found


async def sizes(
    conn: AsyncConnection,
    p: Principal,
    *,
    tree: bool = False,
    check_ins: bool = False,
    cycle_ids: Iterable[int] = (),
) -> Sizes:
    """The statistics asked for (each one statement), for this caller."""
    cycles = list(cycle_ids)
    return Sizes(
        tree=await tree_size(conn, p) if tree else None,
        check_ins=await check_ins_per_key_result(conn, p) if check_ins else None,
        cycles=await cycle_rows(conn, p, cycles) if cycles else {},
    )
