"""The GraphQL Team type. Each wraps a table row; relations read through loaders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry import ID

from schema import ids, nodes
from schema.context import Info
from schema.types.common import Connection, Node, StatusCount, connection, page_window
from service.domain import enums, facts
from service.reads.team_progress import TeamFigures, figures

if TYPE_CHECKING:  # resolved lazily at run time (strawberry.lazy): no import circle
    from schema.types.cycle import Cycle
    from schema.types.objective import Objective
    from schema.types.organization import User


@strawberry.type
class Team(Node):
    row: strawberry.Private[Any]
    id: ID
    name: str
    check_in_cadence_days: int | None

    @classmethod
    def of(cls, row: Any) -> Team:
        return cls(
            row=row,
            id=ID(ids.encode("Team", row.id)),
            name=row.name,
            check_in_cadence_days=row.check_in_cadence_days,
        )

    @strawberry.field(description="Archived: out of lists, takes no new objectives; reads by id.")
    def archived(self) -> bool:
        return self.row.archived_at is not None

    @strawberry.field
    async def parent(self, info: Info) -> Team | None:
        if self.row.parent_id is None:
            return None
        row = await info.context.loaders.team.load(self.row.parent_id)
        return Team.of(row) if row else None

    @strawberry.field
    async def children(self, info: Info) -> list[Team]:
        return [Team.of(r) for r in await info.context.loaders.team_children.load(self.row.id)]

    @strawberry.field
    async def members(
        self, info: Info
    ) -> list[Annotated[User, strawberry.lazy("schema.types.organization")]]:
        return [
            nodes.NODES["User"].type.of(r)
            for r in await info.context.loaders.members_of.load(self.row.id)
        ]

    @strawberry.field(description="The team's objectives, optionally in one cycle.")
    async def objectives(
        self,
        info: Info,
        cycle_id: ID | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Annotated[Objective, strawberry.lazy("schema.types.objective")]]:
        cycle_pk = ids.decode_filter_id(cycle_id, "Cycle", "cycleId")
        window = page_window(info, first, after, last, before)
        loaders = info.context.loaders
        rows = await loaders.team_objectives_page(cycle_pk).load((self.row.id, window))
        await loaders.prime_cycles(rows)
        team_id = self.row.id
        return connection(
            rows,
            window,
            nodes.NODES["Objective"].type.of,
            lambda: loaders.team_objectives_count(cycle_pk).load(team_id),
        )

    @strawberry.field(
        description="How the team is doing in a cycle: its top objectives there (those not "
        "aligned under another of its objectives) that the caller may see."
    )
    async def progress(self, info: Info, cycle_id: ID) -> TeamProgress:
        cycle = await _cycle_or_error(info, cycle_id)
        top = await info.context.loaders.top_objectives.load((cycle.id, self.row.id))
        return TeamProgress.of(info, self.row, cycle, top)


@strawberry.type(
    description="A team in a cycle: the weighted mean of its top objectives there that the "
    "caller may see (progress null when there are none), their statuses and how many are "
    "stale. Archived objectives are left out."
)
class TeamProgress:
    team: Team
    cycle: Annotated[Cycle, strawberry.lazy("schema.types.cycle")]
    objectives: int = strawberry.field(description="Top objectives the caller may see.")
    progress: float | None
    expected_progress: float
    by_status: list[StatusCount]
    stale: int = strawberry.field(description="How many of them are stale.")

    @classmethod
    def of(cls, info: Info, team: Any, cycle: Any, top: list[Any]) -> TeamProgress:
        ctx = info.context
        cadence = facts.cadence(team.check_in_cadence_days, ctx.principal.check_in_cadence_days)
        f: TeamFigures = figures(top, cycle, cadence, ctx.principal, ctx.now)
        return cls(
            team=Team.of(team),
            cycle=nodes.NODES["Cycle"].type.of(cycle),
            objectives=f.objectives,
            progress=f.progress,
            expected_progress=f.expected,
            by_status=[
                StatusCount(status=enums.ProgressStatus(k), count=v)
                for k, v in sorted(f.by_status.items(), key=lambda kv: str(kv[0]))
            ],
            stale=f.stale,
        )


async def _cycle_or_error(info: Info, gid: ID) -> Any:
    """The cycle row an argument names (a cycle of another organization is not found)."""
    pk = ids.decode_filter_id(gid, "Cycle", "cycleId")
    row = await info.context.loaders.cycle.load(pk)
    if row is None:
        raise GraphQLError("cycle not found", extensions={"code": "NOT_FOUND"})
    return row
