"""The lists a caller pages through (the Query root's connections, a metric's
measurements, an endpoint's deliveries): each is one base statement of what the caller
may see, read a page at a time either way (service/reads/keyset.py) and counted on
demand. The GraphQL face (schema/) decodes ids and windows and shapes connections; the
SQL lives here.

Every list is bounded by its window (the page size, checked by the caller) and costs one
statement per page plus one for a count that is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, func, literal, select

from service import models, sql
from service.db import Database
from service.domain.principal import Principal
from service.reads import keyset
from service.reads.keyset import Slice
from service.reads.visibility import visible_events, visible_objectives

OBJECTIVE = models.table(models.Objective)
CYCLE = models.table(models.Cycle)
TEAM = models.table(models.Team)
EVENT = models.table(models.Event)
METRIC = models.table(models.Metric)
MEASUREMENT = models.table(models.Measurement)
ENDPOINT = models.table(models.WebhookEndpoint)
DELIVERY = models.table(models.WebhookDelivery)

MAX_SEARCH = 200  # characters of a search term


@dataclass(frozen=True)
class Listing:
    """What a list holds, as one statement, and the columns it is ordered by."""

    db: Database
    base: Select
    order: Sequence[Any]
    descending: bool = False

    async def page(self, window: Slice) -> list[Any]:
        """One page either way, with the probe of the cursor's other side: one statement."""
        statement = keyset.page(self.base, list(self.order), self.descending, window)
        async with self.db.connect() as conn:
            return list((await conn.execute(statement)).all())

    def counting(self) -> Select:
        return select(func.count()).select_from(self.base.subquery())

    async def count(self) -> int:
        async with self.db.connect() as conn:
            return int((await conn.execute(self.counting())).scalar_one())

    def any_beyond(self, position: int, backward: bool) -> Select:
        """Whether any row lies on a cursor's other side (at or past `position` against
        the direction read), in one order column: a count of at most one row."""
        column = self.order[0]
        side = column >= position if backward else column <= position
        return select(func.count()).select_from(self.base.where(side).limit(1).subquery())


def _contains(column: Any, term: str) -> Any:
    """`column` contains `term` (case-insensitive), LIKE's wildcards taken literally."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{escaped}%", escape="\\")


def teams(db: Database, p: Principal) -> Listing:
    """The organization's teams; archived ones leave lists."""
    base = select(TEAM).where(
        TEAM.c.organization_id == p.organization_id, TEAM.c.archived_at.is_(None)
    )
    return Listing(db, base, [TEAM.c.id])


def cycles(db: Database, p: Principal, status: str | None) -> Listing:
    base = select(CYCLE).where(CYCLE.c.organization_id == p.organization_id)
    if status is not None:
        base = base.where(CYCLE.c.status == status)
    return Listing(db, base, [CYCLE.c.id])


@dataclass(frozen=True)
class ObjectiveFilter:
    """The objectives list's filter, ids decoded (None: not filtered on)."""

    cycle_id: int | None = None
    team_id: int | None = None
    owner_id: int | None = None
    parent_id: int | None = None
    roots_only: bool = False
    statuses: Sequence[str] | None = None
    search: str | None = None  # stripped, at most MAX_SEARCH characters
    include_archived: bool = False


def status_sql(now: datetime, thresholds: tuple[float, float]) -> Any:
    """The status rule in SQL (service/sql.py), over objective joined with cycle."""
    o, c = OBJECTIVE.c, CYCLE.c
    return sql.status(now, thresholds, o.progress, o.has_check_in, c.starts_on, c.ends_on)


def objectives(db: Database, p: Principal, f: ObjectiveFilter, now: datetime) -> Listing:
    """The objectives the caller may see, filtered."""
    base = (
        select(OBJECTIVE)
        .join(CYCLE, CYCLE.c.id == OBJECTIVE.c.cycle_id)
        .where(OBJECTIVE.c.organization_id == p.organization_id, visible_objectives(p, OBJECTIVE))
    )
    for pk, column in (
        (f.cycle_id, OBJECTIVE.c.cycle_id),
        (f.team_id, OBJECTIVE.c.team_id),
        (f.owner_id, OBJECTIVE.c.owner_id),
        (f.parent_id, OBJECTIVE.c.parent_id),
    ):
        if pk is not None:
            base = base.where(column == pk)
    if f.parent_id is not None:
        # Children of a parent the caller may not see are not listed by it: the answer
        # would tell a hidden parent from one that does not exist.
        parent = OBJECTIVE.alias("filter_parent")
        base = base.where(
            exists(
                select(literal(1))
                .select_from(parent)
                .where(
                    parent.c.id == f.parent_id,
                    parent.c.organization_id == p.organization_id,
                    visible_objectives(p, parent),
                )
            )
        )
    if f.roots_only:
        base = base.where(OBJECTIVE.c.parent_id.is_(None))
    if not f.include_archived:
        base = base.where(OBJECTIVE.c.archived_at.is_(None))
    if f.search:
        base = base.where(_contains(OBJECTIVE.c.title, f.search))
    if f.statuses is not None:
        base = base.where(status_sql(now, p.thresholds).in_(list(f.statuses)))
    return Listing(db, base, [OBJECTIVE.c.id])


def events(db: Database, p: Principal) -> Listing:
    """The change feed the caller may see, in commit order."""
    base = select(EVENT).where(
        EVENT.c.organization_id == p.organization_id, visible_events(p, EVENT)
    )
    return Listing(db, base, [EVENT.c.seq])


def metrics(db: Database, p: Principal, search: str | None) -> Listing:
    """The organization's metrics (archived ones leave lists), by key or name."""
    base = select(METRIC).where(
        METRIC.c.organization_id == p.organization_id, METRIC.c.archived_at.is_(None)
    )
    if search:
        base = base.where(_contains(METRIC.c.key, search) | _contains(METRIC.c.name, search))
    return Listing(db, base, [METRIC.c.id])


async def metric_by_key(db: Database, p: Principal, key: str) -> Any:
    async with db.connect() as conn:
        return (
            await conn.execute(
                select(METRIC).where(
                    METRIC.c.organization_id == p.organization_id, METRIC.c.key == key
                )
            )
        ).one_or_none()


def measurements(
    db: Database, p: Principal, metric_id: int, start: datetime | None, end: datetime | None
) -> Listing:
    """A metric's measurements, newest first, between two instants (either open)."""
    base = select(MEASUREMENT).where(
        MEASUREMENT.c.organization_id == p.organization_id, MEASUREMENT.c.metric_id == metric_id
    )
    if start is not None:
        base = base.where(MEASUREMENT.c.measured_at >= start)
    if end is not None:
        base = base.where(MEASUREMENT.c.measured_at <= end)
    return Listing(db, base, [MEASUREMENT.c.measured_at, MEASUREMENT.c.id], descending=True)


async def admin_row(db: Database, p: Principal, table: Any, pk: int) -> Any:
    """One row of the caller's organization, for admins only (else None)."""
    if not p.is_admin:
        return None
    async with db.connect() as conn:
        statement = select(table).where(
            table.c.id == pk, table.c.organization_id == p.organization_id
        )
        return (await conn.execute(statement)).one_or_none()


def webhook_endpoints(db: Database, p: Principal) -> Listing:
    base = select(ENDPOINT).where(ENDPOINT.c.organization_id == p.organization_id)
    return Listing(db, base, [ENDPOINT.c.id])


def deliveries(
    db: Database, p: Principal, endpoint_id: int, statuses: Sequence[str] | None
) -> Listing:
    """An endpoint's delivery log (admins read it; the caller checks)."""
    base = select(DELIVERY).where(
        DELIVERY.c.organization_id == p.organization_id, DELIVERY.c.endpoint_id == endpoint_id
    )
    if statuses:
        base = base.where(DELIVERY.c.status.in_(list(statuses)))
    return Listing(db, base, [DELIVERY.c.id])
