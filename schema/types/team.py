"""The GraphQL Team type. Each wraps a table row; relations read through loaders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import ID

from schema import ids, nodes
from schema.context import Info
from schema.types.common import Connection, Node, connection, page_window

if TYPE_CHECKING:  # resolved lazily at run time (strawberry.lazy): no import circle
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
    ) -> Connection[Annotated[Objective, strawberry.lazy("schema.types.objective")]]:
        cycle_pk = ids.decode_filter_id(cycle_id, "Cycle", "cycleId")
        first_, position = page_window(info, first, after)
        loaders = info.context.loaders
        rows = await loaders.team_objectives_page(cycle_pk).load((self.row.id, first_, position))
        await loaders.prime_cycles(rows)
        team_id = self.row.id
        return connection(
            rows,
            first_,
            position,
            nodes.NODES["Objective"].type.of,
            lambda: loaders.team_objectives_count(cycle_pk).load(team_id),
        )
