"""The Query root: node lookups, lists with keyset pagination, the change feed."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry import ID

from schema import ids, nodes
from schema.context import Info
from schema.enums import CycleStatus, ProgressStatus, Role
from schema.ids import decode_filter_id
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
from service.domain.enums import ProgressStatus as Status
from service.reads import lists


def bad_input(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


async def node_by_id(info: Info, gid: str) -> Node | None:
    try:
        type_name, pk = ids.decode(gid)
    except ids.BadId:
        return None  # an id that names nothing names nothing we have
    return await nodes.resolve(info, type_name, pk)


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


def objective_filter(f: ObjectiveFilter | None) -> lists.ObjectiveFilter:
    """The filter with its ids decoded and its search checked (a clear error each)."""
    f = f or ObjectiveFilter()
    search = f.search.strip() if f.search else None
    if search is not None and len(search) > lists.MAX_SEARCH:
        raise bad_input(f"search is longer than {lists.MAX_SEARCH} characters")
    return lists.ObjectiveFilter(
        cycle_id=decode_filter_id(f.cycle_id, "Cycle", "cycleId"),
        team_id=decode_filter_id(f.team_id, "Team", "teamId"),
        owner_id=decode_filter_id(f.owner_id, "User", "ownerId"),
        parent_id=decode_filter_id(f.parent_id, "Objective", "parentId"),
        roots_only=bool(f.roots_only),
        statuses=None if f.status is None else [str(s.value) for s in f.status],
        search=search,
        include_archived=bool(f.include_archived),
    )


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
        listing = lists.teams(info.context.db, info.context.principal)
        return connection(await listing.page(window), window, Team.of, listing.count)

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
        wanted = None if status is None else str(status.value)
        listing = lists.cycles(info.context.db, info.context.principal, wanted)
        return connection(await listing.page(window), window, Cycle.of, listing.count)

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
        ctx = info.context
        listing = lists.objectives(ctx.db, ctx.principal, objective_filter(filter), ctx.now)
        rows = await listing.page(window)
        await ctx.loaders.prime_cycles(rows)
        return connection(rows, window, Objective.of, listing.count)

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
        listing = lists.events(info.context.db, info.context.principal)
        return connection(
            await listing.page(window),
            window,
            Event.of,
            listing.count,
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
