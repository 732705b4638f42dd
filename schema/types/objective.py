"""The GraphQL Reflection, Contribution, HiddenContributions, Objective types. Each wraps
a table row; relations read through loaders.

A roll-up counts what its reader may not see, never names it, and always explains it:
`contributions` names what the reader may see, `hiddenContributions` counts the rest as
one aggregate (how many, their weight, their share), so the shares a reader is shown
sum to 1. The planned reads (schema/plan/) do not cover either field: the executor
answers them."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry import ID

from schema import ids, nodes
from schema.context import Info
from schema.enums import (
    ProgressStatus,
    Visibility,
)
from schema.types.common import (
    Connection,
    HistoryInterval,
    Node,
    ProgressPoint,
    _cadence,
    _history,
    _series,
    _series_one,
    _status,
    _with_cycle,
    connection,
    page_window,
    user_of,
)
from service.domain import enums, facts, rules

if TYPE_CHECKING:  # resolved lazily at run time (strawberry.lazy): no import circle
    from schema.types.comment import Comment
    from schema.types.cycle import Cycle
    from schema.types.event import Event
    from schema.types.key_result import KeyResult
    from schema.types.organization import User
    from schema.types.team import Team


# --- objectives ------------------------------------------------------------------------------


@strawberry.type
class Reflection:
    went_well: str | None
    challenges: str | None
    lessons: str | None


@strawberry.type(description="One key result or aligned child, and its part in the progress.")
class Contribution:
    node: Node
    weight: float
    progress: float
    share: float


@strawberry.type(
    description="The aligned children a reader may not see, counted in the roll-up as one: "
    "how many, their total weight and their share of the total. With the shares in "
    "`contributions`, the shares sum to 1."
)
class HiddenContributions:
    count: int
    weight: float
    share: float


async def _explained(info: Info, row: Any) -> tuple[list[Contribution], HiddenContributions | None]:
    """The objective's counted parts: those the caller may see, named, and the rest as
    one aggregate (None when nothing is hidden)."""
    loaders = info.context.loaders
    krs = await loaders.key_results_of.load(row.id)
    children = await loaders.children_raw.load(row.id)
    items: list[tuple[Any, rules.Part]] = [
        (nodes.NODES["KeyResult"].type.of(k), rules.Part(k.weight, k.progress)) for k in krs
    ] + [
        (
            Objective.of(c) if loaders.sees(c) else None,
            rules.Part(c.weight, c.progress, c.archived_at is not None),
        )
        for c in children
    ]
    live = [(node, part) for node, part in items if not part.archived]
    shares = rules.shares([part for _, part in live])
    named: list[Contribution] = []
    hidden: list[rules.Share] = []
    for (node, _), s in zip(live, shares, strict=True):
        if node is None:  # counted in the roll-up, never named
            hidden.append(s)
        else:
            named.append(
                Contribution(node=node, weight=s.weight, progress=s.progress, share=s.share)
            )
    if not hidden:
        return named, None
    return named, HiddenContributions(
        count=len(hidden),
        weight=sum(s.weight for s in hidden),
        share=sum(s.share for s in hidden),
    )


@strawberry.type
class Objective(Node):
    row: strawberry.Private[Any]
    id: ID
    title: str
    external_key: str | None = strawberry.field(
        description="Its stable key in a plan file (`okr apply`), unique in its cycle; null "
        "for objectives made otherwise."
    )
    description: str | None
    visibility: Visibility
    weight: float = strawberry.field(description="Its weight in the parent's roll-up.")
    score: float | None
    version: int
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> Objective:
        return cls(
            row=row,
            id=ID(ids.encode("Objective", row.id)),
            title=row.title,
            external_key=row.external_key,
            description=row.description,
            visibility=Visibility(row.visibility),
            weight=row.weight,
            score=row.score,
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            archived_at=row.archived_at,
        )

    @strawberry.field
    async def cycle(self, info: Info) -> Annotated[Cycle, strawberry.lazy("schema.types.cycle")]:
        return nodes.NODES["Cycle"].type.of(
            await info.context.loaders.cycle.load(self.row.cycle_id)
        )

    @strawberry.field
    async def team(
        self, info: Info
    ) -> Annotated[Team, strawberry.lazy("schema.types.team")] | None:
        if self.row.team_id is None:
            return None
        row = await info.context.loaders.team.load(self.row.team_id)
        return nodes.NODES["Team"].type.of(row) if row else None

    @strawberry.field
    async def owner(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("schema.types.organization")] | None:
        return await user_of(info, self.row.owner_id)

    @strawberry.field(description="Alignment: what this contributes to.")
    async def parent(self, info: Info) -> Objective | None:
        if self.row.parent_id is None:
            return None
        row = await info.context.loaders.objective(self.row.parent_id)
        return Objective.of(row) if row else None

    @strawberry.field
    async def children(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Objective]:
        window = page_window(info, first, after, last, before)
        loaders = info.context.loaders
        rows = await loaders.children_page.load((self.row.id, window))
        await loaders.prime_cycles(rows)
        pk = self.row.id
        return connection(rows, window, Objective.of, lambda: loaders.children_count.load(pk))

    @strawberry.field(description="Nearest first, up to the root (those the caller may see).")
    async def ancestors(self, info: Info) -> list[Objective]:
        loaders = info.context.loaders
        rows = await loaders.ancestors_of.load(self.row.id)
        await loaders.prime_cycles(rows)
        return [Objective.of(r) for r in rows if loaders.sees(r)]

    @strawberry.field(description="The whole subtree, parents before children.")
    async def descendants(self, info: Info, max_depth: int | None = None) -> list[Objective]:
        if max_depth is not None and max_depth < 0:
            raise GraphQLError(
                "maxDepth must be zero or more", extensions={"code": "BAD_USER_INPUT"}
            )
        loaders = info.context.loaders
        depth = min(max_depth if max_depth is not None else 1000, 1000)
        rows = await loaders.descendants_of.load((self.row.id, depth))
        await loaders.prime_cycles(rows)
        return [Objective.of(r) for r in rows if loaders.sees(r)]

    @strawberry.field
    async def key_results(
        self, info: Info
    ) -> list[Annotated[KeyResult, strawberry.lazy("schema.types.key_result")]]:
        return [
            nodes.NODES["KeyResult"].type.of(r)
            for r in await info.context.loaders.key_results_of.load(self.row.id)
        ]

    @strawberry.field
    def expected_progress(self, info: Info) -> float:
        return _with_cycle(
            info,
            self.row.cycle_id,
            lambda cycle: facts.expected_progress(cycle, info.context.now),
        )

    @strawberry.field
    def status(self, info: Info) -> ProgressStatus:
        return _with_cycle(
            info,
            self.row.cycle_id,
            lambda cycle: _status(info, self.row.progress, self.row.has_check_in, cycle),
        )

    @strawberry.field(description="A key result of it has gone unchecked past the cadence.")
    async def stale(self, info: Info) -> bool:
        loaders = info.context.loaders
        cycle = await loaders.cycle.load(self.row.cycle_id)
        if cycle.status != enums.CycleStatus.ACTIVE:
            return False  # without reading its key results
        cadence = await _cadence(info, self.row.team_id)
        krs = await loaders.key_results_of.load(self.row.id)
        return facts.objective_stale(krs, cycle, cadence, info.context.now)

    @strawberry.field(
        description="Why the progress is what it is: each key result and aligned child the "
        "caller may see; what it may not see is counted in `hiddenContributions`."
    )
    async def contributions(self, info: Info) -> list[Contribution]:
        return (await _explained(info, self.row))[0]

    @strawberry.field(
        description="The aligned children the caller may not see, as one aggregate (null "
        "when it may see every contributor)."
    )
    async def hidden_contributions(self, info: Info) -> HiddenContributions | None:
        return (await _explained(info, self.row))[1]

    @strawberry.field(
        graphql_type=float,  # stays sync when it can: the stored value needs no await
        description="Stored progress; with asOf, as it stood then "
        "(from the check-ins' measuredAt).",
    )
    def progress(self, info: Info, as_of: datetime | None = None) -> float | Awaitable[float]:
        if as_of is None:
            return self.row.progress
        return _series_one(info, "Objective", self.row, as_of)

    @strawberry.field(description="Progress at each instant from `from` to `to`, for charts.")
    async def progress_history(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        interval: HistoryInterval = HistoryInterval.DAY,
    ) -> list[ProgressPoint]:
        return await _series(info, "Objective", self.row, from_, to, interval)

    @strawberry.field(description="The objective of an earlier cycle this was carried over from.")
    async def carried_from(self, info: Info) -> Objective | None:
        if self.row.carried_from_id is None:
            return None
        row = await info.context.loaders.objective(self.row.carried_from_id)
        return Objective.of(row) if row else None

    @strawberry.field(description="Who changed what, newest first, from the event log.")
    async def history(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Annotated[Event, strawberry.lazy("schema.types.event")]]:
        return await _history(info, "Objective", self.row.id, first, after, last, before)

    @strawberry.field
    def reflection(self) -> Reflection | None:
        r = self.row
        if r.went_well is None and r.challenges is None and r.lessons is None:
            return None
        return Reflection(went_well=r.went_well, challenges=r.challenges, lessons=r.lessons)

    @strawberry.field
    async def comments(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Annotated[Comment, strawberry.lazy("schema.types.comment")]]:
        window = page_window(info, first, after, last, before)
        loaders = info.context.loaders
        rows = await loaders.objective_comments_page.load((self.row.id, window))
        pk = self.row.id
        return connection(
            rows,
            window,
            nodes.NODES["Comment"].type.of,
            lambda: loaders.objective_comments_count.load(pk),
        )
