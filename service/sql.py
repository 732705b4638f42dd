"""The SQL more than one module needs, written once: the walks of the objective tree
(and the team tree's loop check), the advisory lock keys, and the status rule for
filtering in the database.

The walks all bind `:org` (the organization: a walk never leaves it). Each is a CTE
that a caller finishes with its own SELECT (`walk`)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import DateTime, TextClause, case, cast, func, literal, text
from sqlalchemy.sql.elements import ColumnElement

from service.domain import rules
from service.domain.enums import ProgressStatus

# Advisory lock keys (pg_advisory_xact_lock). Distinct high words keep them apart.
ALIGNMENT_LOCK = 7_461_002 << 32  # + organization id: one alignment change at a time
REMINDER_LOCK = 7_461_003  # one reminder sweep at a time, across every replica
METRIC_BIND_LOCK = 7_461_004 << 32  # + metric id: one bind to a metric at a time
TEAM_TREE_LOCK = 7_461_010 << 32  # + organization id: one move in the team tree at a time

# up(id, parent_id): the objectives :ids and every ancestor, each once.
ANCESTRY = """
    WITH RECURSIVE up(id, parent_id) AS (
        SELECT id, parent_id FROM objective WHERE id = ANY(:ids) AND organization_id = :org
        UNION
        SELECT o.id, o.parent_id FROM objective o JOIN up ON o.id = up.parent_id
        WHERE o.organization_id = :org
    )
"""

# down(id): the objective :id and every descendant, each once.
SUBTREE = """
    WITH RECURSIVE down(id) AS (
        SELECT CAST(:id AS bigint)
        UNION
        SELECT o.id FROM objective o JOIN down ON o.parent_id = down.id
        WHERE o.organization_id = :org
    )
"""

# up(start, id, parent_id, depth): for each of :ids (start), its chain to the root, in
# order (depth 0 is the start itself).
ANCESTORS_BY_START = """
    WITH RECURSIVE up(start, id, parent_id, depth) AS (
        SELECT o.id, o.id, o.parent_id, 0 FROM objective o
        WHERE o.id = ANY(:ids) AND o.organization_id = :org
        UNION ALL
        SELECT up.start, p.id, p.parent_id, up.depth + 1
        FROM objective p JOIN up ON p.id = up.parent_id
        WHERE p.organization_id = :org AND up.depth < 1000
    )
"""

# down(start, id, depth): for each of :ids (start), its descendants to :max_depth.
DESCENDANTS_BY_START = """
    WITH RECURSIVE down(start, id, depth) AS (
        SELECT o.id, o.id, 0 FROM objective o WHERE o.id = ANY(:ids) AND o.organization_id = :org
        UNION ALL
        SELECT down.start, c.id, down.depth + 1
        FROM objective c JOIN down ON c.parent_id = down.id
        WHERE c.organization_id = :org AND down.depth < :max_depth
    )
"""


# Whether :parent is :team or lies below it in the team tree: walking up from :parent
# reaches :team (a move of :team under :parent would make a loop).
TEAM_LOOP = text(
    """
    WITH RECURSIVE up(id, parent_id, depth) AS (
        SELECT id, parent_id, 0 FROM team WHERE id = :parent AND organization_id = :org
        UNION ALL
        SELECT t.id, t.parent_id, up.depth + 1 FROM team t JOIN up ON t.id = up.parent_id
        WHERE t.organization_id = :org AND up.depth < 10000
    )
    SELECT EXISTS (SELECT 1 FROM up WHERE id = :team)
    """
)


def positional(cte: str, names: tuple[str, ...], casts: dict[str, str] | None = None) -> str:
    """One of the walks above with asyncpg's numbered parameters ($1 for names[0], ...),
    for the planned reads that send their statements past SQLAlchemy."""
    for number, name in enumerate(names, 1):
        suffix = f"::{casts[name]}" if casts and name in casts else ""
        cte = re.sub(rf":{name}\b", f"${number}{suffix}", cte)
    return cte


def walk(cte: str, select: str) -> TextClause:
    """One of the walks above, finished by the caller's SELECT over it."""
    return text(cte + select)


def status(
    now: Any,
    thresholds: tuple[float, float],
    progress: ColumnElement[Any],
    has_check_in: ColumnElement[Any],
    starts_on: ColumnElement[Any],
    ends_on: ColumnElement[Any],
) -> ColumnElement[str]:
    """`rules.progress_status` in SQL, for filtering in the database; a property test
    (tests/domain/test_shared_sql.py) holds the two equal."""
    start = cast(starts_on, DateTime(timezone=False)).op("AT TIME ZONE")(literal("UTC"))
    end = cast(ends_on + 1, DateTime(timezone=False)).op("AT TIME ZONE")(literal("UTC"))
    elapsed = func.extract("epoch", literal(now) - start) / func.extract("epoch", end - start)
    expected = func.least(func.greatest(elapsed, 0.0), 1.0)
    gap = expected - progress
    on_track, at_risk = thresholds
    return case(
        (progress >= 1, literal(ProgressStatus.ACHIEVED.value)),
        (has_check_in.is_(False), literal(ProgressStatus.NOT_STARTED.value)),
        (gap <= on_track + rules.STATUS_TOLERANCE, literal(ProgressStatus.ON_TRACK.value)),
        (gap <= at_risk + rules.STATUS_TOLERANCE, literal(ProgressStatus.AT_RISK.value)),
        else_=literal(ProgressStatus.OFF_TRACK.value),
    )
