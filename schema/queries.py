"""The Query root: node lookups, lists with keyset pagination, the change feed."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from sqlalchemy import Select, exists, func, literal, select
from strawberry import ID

from schema import ids, nodes
from schema.context import Info
from schema.enums import CycleStatus, ProgressStatus, Role
from schema.ids import decode_filter_id
from schema.loaders import CYCLE, EVENT, OBJECTIVE, TEAM
from schema.metrics import Metric, list_metrics, metric_by_key
from schema.realism import RealismCount, realism_counts
from schema.types.common import (
    Connection,
    Node,
    StatusCount,
    connection,
    page_window,
    user_of,
)
from schema.types.cycle import Cycle
from schema.types.event import Event
from schema.types.objective import Objective
from schema.types.organization import Organization, Viewer
from schema.types.team import Team
from schema.types.webhook import WebhookEndpoint, webhook_endpoints
from service import sql
from service.domain.enums import ProgressStatus as Status
from service.reads import keyset
from service.reads.keyset import Slice
from service.reads.visibility import visible_events, visible_objectives


def bad_input(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


async def node_by_id(info: Info, gid: str) -> Node | None:
    try:
        type_name, pk = ids.decode(gid)
    except ids.BadId:
        return None  # an id that names nothing names nothing we have
    return await nodes.resolve(info, type_name, pk)


def status_sql(now: Any, thresholds: tuple[float, float]) -> Any:
    """The status rule in SQL, over objective joined with cycle, for filtering."""
    o, c = OBJECTIVE.c, CYCLE.c
    return sql.status(now, thresholds, o.progress, o.has_check_in, c.starts_on, c.ends_on)


@strawberry.input
class ObjectiveFilter:
    cycle_id: ID | None = None
    team_id: ID | None = None
    owner_id: ID | None = None
    parent_id: ID | None = None
    roots_only: bool | None = None
    status: list[ProgressStatus] | None = None
    search: str | None = None
    include_archived: bool | None = strawberry.field(
        default=None, description="Archived objectives are left out unless this is true."
    )


def _objective_query(info: Info, f: ObjectiveFilter | None) -> Select:
    p = info.context.principal
    stmt = (
        select(OBJECTIVE)
        .join(CYCLE, CYCLE.c.id == OBJECTIVE.c.cycle_id)
        .where(OBJECTIVE.c.organization_id == p.organization_id, visible_objectives(p, OBJECTIVE))
    )
    f = f or ObjectiveFilter()
    for gid, type_name, name, column in (
        (f.cycle_id, "Cycle", "cycleId", OBJECTIVE.c.cycle_id),
        (f.team_id, "Team", "teamId", OBJECTIVE.c.team_id),
        (f.owner_id, "User", "ownerId", OBJECTIVE.c.owner_id),
        (f.parent_id, "Objective", "parentId", OBJECTIVE.c.parent_id),
    ):
        pk = decode_filter_id(gid, type_name, name)
        if pk is not None:
            stmt = stmt.where(column == pk)
    parent_pk = decode_filter_id(f.parent_id, "Objective", "parentId")
    if parent_pk is not None:
        # Children of a parent the caller may not see are not listed by it: the answer
        # would tell a hidden parent from one that does not exist.
        parent = OBJECTIVE.alias("filter_parent")
        stmt = stmt.where(
            exists(
                select(literal(1))
                .select_from(parent)
                .where(
                    parent.c.id == parent_pk,
                    parent.c.organization_id == p.organization_id,
                    visible_objectives(p, parent),
                )
            )
        )
    if f.roots_only:
        stmt = stmt.where(OBJECTIVE.c.parent_id.is_(None))
    if not f.include_archived:
        stmt = stmt.where(OBJECTIVE.c.archived_at.is_(None))
    if f.search:
        term = f.search.strip()
        if len(term) > 200:
            raise bad_input("search is longer than 200 characters")
        escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(OBJECTIVE.c.title.ilike(f"%{escaped}%", escape="\\"))
    if f.status is not None:
        wanted = [str(s.value) for s in f.status]
        stmt = stmt.where(status_sql(info.context.now, p.thresholds).in_(wanted))
    return stmt


async def _fetch(info: Info, stmt: Select) -> list[Any]:
    async with info.context.db.connect() as conn:
        return list((await conn.execute(stmt)).all())


async def _keyset_page(info: Info, base: Select, column: Any, window: Slice) -> list[Any]:
    """One page of `base` in `column` order, either way, with what tells whether pages
    lie before and after it (service/reads/keyset.py): one statement."""
    return await _fetch(info, keyset.page(base, [column], False, window))


async def _count(info: Info, stmt: Select) -> int:
    async with info.context.db.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()


@strawberry.type
class Query:
    @strawberry.field
    async def node(self, info: Info, id: ID) -> Node | None:
        return await node_by_id(info, id)

    @strawberry.field
    async def nodes(self, info: Info, ids: list[ID]) -> list[Node | None]:
        if len(ids) > info.context.settings.max_page_size:
            raise bad_input(f"at most {info.context.settings.max_page_size} ids at once")
        import asyncio

        return list(await asyncio.gather(*(node_by_id(info, gid) for gid in ids)))

    @strawberry.field(description="Who is calling, and their organization.")
    async def viewer(self, info: Info) -> Viewer:
        p = info.context.principal
        org = await info.context.loaders.organization.load(p.organization_id)
        return Viewer(
            user=await user_of(info, p.user_id),
            organization=Organization.of(org),
            role=Role(p.role),
        )

    @strawberry.field
    async def teams(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Team]:
        window = page_window(info, first, after, last, before)
        base = select(TEAM).where(
            TEAM.c.organization_id == info.context.principal.organization_id,
            TEAM.c.archived_at.is_(None),  # archived teams leave lists
        )
        rows = await _keyset_page(info, base, TEAM.c.id, window)
        return connection(rows, window, Team.of, lambda: _count(info, base))

    @strawberry.field
    async def cycles(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: CycleStatus | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Cycle]:
        window = page_window(info, first, after, last, before)
        base = select(CYCLE).where(
            CYCLE.c.organization_id == info.context.principal.organization_id
        )
        if status is not None:
            base = base.where(CYCLE.c.status == str(status.value))
        rows = await _keyset_page(info, base, CYCLE.c.id, window)
        return connection(rows, window, Cycle.of, lambda: _count(info, base))

    @strawberry.field
    async def objectives(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        filter: ObjectiveFilter | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Objective]:
        window = page_window(info, first, after, last, before)
        base = _objective_query(info, filter)
        rows = await _keyset_page(info, base, OBJECTIVE.c.id, window)
        await info.context.loaders.prime_cycles(rows)
        return connection(rows, window, Objective.of, lambda: _count(info, base))

    @strawberry.field(
        description="Per team: objectives by status, mean progress and score, "
        "stale key results, objectives aligned to nothing, check-in rhythm, realism mix, "
        "scores not yet set or confirmed by hand."
    )
    async def cycle_report(self, info: Info, cycle_id: ID) -> CycleReport | None:
        from service.domain.errors import Rejected
        from service.reports import cycle_report

        pk = decode_filter_id(cycle_id, "Cycle", "cycleId")
        try:
            async with info.context.one_scan_at_a_time, info.context.db.connect() as conn:
                report = await cycle_report(conn, info.context.principal, pk, info.context.now)
        except Rejected:
            return None
        loaders = info.context.loaders
        teams = []
        for t in report.teams:
            row = await loaders.team.load(t.team_id) if t.team_id else None
            teams.append(
                TeamCycleReport(
                    team=Team.of(row) if row else None,
                    objectives=t.objectives,
                    by_status=[
                        StatusCount(status=Status(k), count=v)
                        for k, v in sorted(t.by_status.items())
                    ],
                    mean_progress=t.mean_progress,
                    mean_score=t.mean_score,
                    stale_key_results=t.stale_key_results,
                    unaligned_objectives=t.unaligned_objectives,
                    check_in_rhythm=t.check_in_rhythm,
                    realism=realism_counts(t.realism),
                    unconfirmed_scores=t.unconfirmed_scores,
                )
            )
        return CycleReport(
            cycle=Cycle.of(report.cycle),
            teams=teams,
            realism=realism_counts(report.realism),
            unconfirmed_scores=report.unconfirmed_scores,
        )

    @strawberry.field(description="The organization's metrics, by key or name with `search`.")
    async def metrics(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        search: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Metric]:
        return await list_metrics(info, first, after, search, last, before)

    @strawberry.field(description="ADMIN only: the organization's webhook endpoints.")
    async def webhook_endpoints(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[WebhookEndpoint]:
        return await webhook_endpoints(info, first, after, last, before)

    @strawberry.field(description="A metric by its key: services know keys, not ids.")
    async def metric(self, info: Info, key: str) -> Metric | None:
        return await metric_by_key(info, key)

    @strawberry.field(
        description="The change feed, for polling: events after a cursor, in commit order."
    )
    async def events(
        self,
        info: Info,
        after: str | None = None,
        first: int | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Event]:
        window = page_window(info, first, after, last, before)
        p = info.context.principal
        base = select(EVENT).where(
            EVENT.c.organization_id == p.organization_id, visible_events(p, EVENT)
        )
        rows = await _keyset_page(info, base, EVENT.c.seq, window)
        return connection(
            rows,
            window,
            Event.of,
            lambda: _count(info, base),
            position=lambda r: ids.cursor(r.seq),
        )


REALISM_MIX = "How many key results are judged REALISTIC, STRETCH, UNLIKELY, UNKNOWN, now."
UNCONFIRMED = (
    "From REVIEW on: key results whose score nobody set or confirmed by hand "
    "(scoreKeyResult); null before REVIEW."
)


@strawberry.type(description="One team's part of a cycle (team null: objectives of no team).")
class TeamCycleReport:
    team: Team | None
    objectives: int
    by_status: list[StatusCount]
    mean_progress: float | None
    mean_score: float | None
    stale_key_results: int
    unaligned_objectives: int = strawberry.field(description="Objectives aligned to nothing.")
    check_in_rhythm: float | None = strawberry.field(
        description="The share of key results checked in within their cadence."
    )
    realism: list[RealismCount] = strawberry.field(description=REALISM_MIX)
    unconfirmed_scores: int | None = strawberry.field(description=UNCONFIRMED)


@strawberry.type
class CycleReport:
    cycle: Cycle
    teams: list[TeamCycleReport]
    realism: list[RealismCount] = strawberry.field(description=REALISM_MIX)
    unconfirmed_scores: int | None = strawberry.field(description=UNCONFIRMED)
