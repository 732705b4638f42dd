"""The GraphQL Cycle type. Each wraps a table row; relations read through loaders."""

from __future__ import annotations

from datetime import date
from typing import Any

import strawberry
from strawberry import ID

from schema import ids
from schema.context import Info
from schema.enums import (
    CycleStatus,
)
from schema.types.common import Connection, Node, connection, page_window
from schema.types.team import TeamProgress
from service.domain import enums, facts, rules
from service.reads import team_progress

# --- cycles -------------------------------------------------------------------------------


@strawberry.type
class Cycle(Node):
    row: strawberry.Private[Any]
    id: ID
    name: str
    starts_on: date
    ends_on: date
    status: CycleStatus

    @classmethod
    def of(cls, row: Any) -> Cycle:
        return cls(
            row=row,
            id=ID(ids.encode("Cycle", row.id)),
            name=row.name,
            starts_on=row.starts_on,
            ends_on=row.ends_on,
            status=enums.CycleStatus(row.status),
        )

    @strawberry.field(description="For updateCycle's expectedVersion.")
    def version(self) -> int:
        return int(self.row.version)

    @strawberry.field(description="Share of the cycle elapsed, now.")
    def expected_progress(self, info: Info) -> float:
        return facts.expected_progress(self.row, info.context.now)

    @strawberry.field(description="Ended (past the end of endsOn, UTC) and still ACTIVE.")
    def review_due(self, info: Info) -> bool:
        status = enums.CycleStatus(self.row.status)
        return rules.review_due(status, self.row.starts_on, self.row.ends_on, info.context.now)

    @strawberry.field(
        description="Each team with a top objective in this cycle that the caller may see, "
        "and how it is doing (Team.progress), by name then id."
    )
    async def teams(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[TeamProgress]:
        window = page_window(info, first, after, last, before, decode=ids.unname_cursor)
        ctx = info.context
        cycle_id = self.row.id
        async with ctx.db.connect() as conn:
            rows = await team_progress.teams_page(conn, ctx.principal, cycle_id, window)
        shown = [r for r in rows if not r.beyond_cursor]
        tops = await ctx.loaders.top_objectives.load_many([(cycle_id, r.id) for r in shown])
        top_of = {r.id: top for r, top in zip(shown, tops, strict=True)}

        async def count() -> int:
            async with ctx.db.connect() as conn:
                return await team_progress.teams_count(conn, ctx.principal, cycle_id)

        return connection(
            rows,
            window,
            lambda r: TeamProgress.of(info, r, self.row, top_of[r.id]),
            count,
            position=lambda r: ids.named_cursor(r.name, r.id),
        )
