"""How each team is doing in a cycle (`Team.progress`, `Cycle.teams`), in bulk.

A team's top objectives in a cycle are its objectives there, not archived, that are
not aligned under another objective of the same team in that cycle (a parent that is
archived counts as none: its children rise to the top rather than vanish). Top is
decided on the data, whoever asks: an objective under a parent the caller may not see
is still not top. Of those, only the ones the caller may see are counted (the one rule,
service/reads/visibility.py): the team's progress is their mean weighted by
`Objective.weight` (the roll-up rule: zero total weight gives 0), null when there are
none; status and staleness are the pure rules of service/domain/rules.py over each, on
the request's clock. An objective is stale when one of its key results is, so its oldest
key-result activity decides (`is_stale` is monotone in the instant).

Statements: one for the top objectives of any number of teams in one cycle; one for a
page of the teams that have any (ordered by name then id, keyset both ways).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service import models
from service.domain import facts, rules
from service.domain.enums import ProgressStatus
from service.domain.principal import Principal
from service.reads import keyset
from service.reads.visibility import visible_objectives

OBJECTIVE = models.table(models.Objective)
KEY_RESULT = models.table(models.KeyResult)
TEAM = models.table(models.Team)


def _top_in_cycle(p: Principal, cycle_id: int, o: Any = OBJECTIVE) -> ColumnElement[bool]:
    """`o` is a top objective of its team in the cycle, and the caller may see it."""
    parent = OBJECTIVE.alias("same_team_parent")
    under_same_team = exists(
        select(1)
        .select_from(parent)
        .where(
            parent.c.id == o.c.parent_id,
            parent.c.organization_id == o.c.organization_id,
            parent.c.team_id == o.c.team_id,
            parent.c.cycle_id == o.c.cycle_id,
            parent.c.archived_at.is_(None),
        )
    )
    return and_(
        o.c.organization_id == p.organization_id,
        o.c.cycle_id == cycle_id,
        o.c.team_id.is_not(None),
        o.c.archived_at.is_(None),
        ~under_same_team,  # EXISTS is never NULL: its negation cannot fail open
        visible_objectives(p, o),
    )


async def top_objectives(
    conn: AsyncConnection, p: Principal, cycle_id: int, team_ids: list[int]
) -> dict[int, list[Any]]:
    """Each team's top objectives in the cycle that the caller may see, by id, with the
    oldest activity (last check-in, else creation) among their key results."""
    oldest = (
        select(func.min(func.coalesce(KEY_RESULT.c.last_check_in_at, KEY_RESULT.c.created_at)))
        .where(
            KEY_RESULT.c.objective_id == OBJECTIVE.c.id,
            KEY_RESULT.c.organization_id == OBJECTIVE.c.organization_id,
            KEY_RESULT.c.archived_at.is_(None),  # an archived key result left the objective
        )
        .scalar_subquery()
    )
    stmt = (
        select(
            OBJECTIVE.c.id,
            OBJECTIVE.c.team_id,
            OBJECTIVE.c.weight,
            OBJECTIVE.c.progress,
            OBJECTIVE.c.has_check_in,
            oldest.label("oldest_activity"),
        )
        .where(_top_in_cycle(p, cycle_id), OBJECTIVE.c.team_id.in_(sorted(set(team_ids))))
        .order_by(OBJECTIVE.c.team_id, OBJECTIVE.c.id)
    )
    groups: dict[int, list[Any]] = defaultdict(list)
    for r in (await conn.execute(stmt)).all():
        groups[r.team_id].append(r)
    return groups


def teams_in_cycle(p: Principal, cycle_id: int) -> Select:
    """The teams with at least one top objective in the cycle that the caller may see."""
    o = OBJECTIVE.alias("team_objective")
    return select(TEAM).where(
        TEAM.c.organization_id == p.organization_id,
        TEAM.c.archived_at.is_(None),  # archived teams leave lists
        exists(
            select(1).select_from(o).where(o.c.team_id == TEAM.c.id, _top_in_cycle(p, cycle_id, o))
        ),
    )


async def teams_page(
    conn: AsyncConnection, p: Principal, cycle_id: int, window: keyset.Slice
) -> list[Any]:
    """A page of `teams_in_cycle` by name then id (keyset.split makes it the page)."""
    stmt = keyset.page(teams_in_cycle(p, cycle_id), [TEAM.c.name, TEAM.c.id], False, window)
    return list((await conn.execute(stmt)).all())


async def teams_count(conn: AsyncConnection, p: Principal, cycle_id: int) -> int:
    stmt = select(func.count()).select_from(teams_in_cycle(p, cycle_id).subquery())
    return int((await conn.execute(stmt)).scalar_one())


@dataclass(frozen=True)
class TeamFigures:
    objectives: int
    progress: float | None
    expected: float
    by_status: dict[ProgressStatus, int]
    stale: int


def figures(
    top: list[Any], cycle: Any, cadence_days: int, p: Principal, now: datetime
) -> TeamFigures:
    """A team's figures from its top objectives (as `top_objectives` reads them)."""
    expected = facts.expected_progress(cycle, now)
    status = Counter(
        facts.statuses(((o.progress, o.has_check_in) for o in top), cycle, p.thresholds, now)
    )
    stale = sum(
        1
        for o in top
        if o.oldest_activity is not None
        and facts.stale(cycle, o.oldest_activity, cadence_days, now)
    )
    progress = rules.roll_up([rules.Part(o.weight, o.progress) for o in top]) if top else None
    return TeamFigures(len(top), progress, expected, dict(status), stale)
