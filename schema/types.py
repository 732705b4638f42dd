"""The GraphQL object types. Each wraps a table row; relations read through loaders;
status, expected progress, staleness and forecast are computed at read time from the
stored progress by the pure rules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry import ID
from strawberry.scalars import JSON

from schema import ids, nodes
from schema.context import Info
from schema.enums import (
    CycleStatus,
    ErrorCode,
    EventKind,
    KeyResultType,
    Measure,
    ProgressStatus,
    Role,
    Visibility,
)
from schema.realism import Realism, realism_of
from service.domain import enums, rules
from service.domain.errors import Rejected

if TYPE_CHECKING:  # resolved lazily at run time (strawberry.lazy): no import circle
    from schema.metrics import Metric

T = TypeVar("T")


@strawberry.enum
class HistoryInterval(Enum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"


STEPS = {"HOUR": timedelta(hours=1), "DAY": timedelta(days=1), "WEEK": timedelta(weeks=1)}
MAX_POINTS = 400


@strawberry.type
class ProgressPoint:
    at: datetime
    progress: float


# --- Relay -------------------------------------------------------------------------


@strawberry.interface(description="An object with a global id.")
class Node:
    id: ID


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo
    counter: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="All items across pages (counted only when asked for).")
    async def total_count(self) -> int:
        return await self.counter()


def page_window(info: Info, first: int | None, after: str | None) -> tuple[int, int | None]:
    """Checked `first` and decoded `after`; out-of-range is a clear error, never a cut."""
    settings = info.context.settings
    if first is None:
        first = settings.default_page_size
    if first < 0 or first > settings.max_page_size:
        raise GraphQLError(
            f"first must be between 0 and {settings.max_page_size}",
            extensions={"code": "BAD_USER_INPUT"},
        )
    position = None
    if after is not None:
        try:
            position = ids.uncursor(after)
        except ids.BadId as exc:
            raise GraphQLError(str(exc), extensions={"code": "BAD_USER_INPUT"}) from None
    return first, position


def connection(
    rows: list[Any],
    first: int,
    after: int | None,
    wrap: Callable[[Any], Any],
    counter: Callable[[], Awaitable[int]],
    position: Callable[[Any], int] = lambda r: r.id,
) -> Connection[Any]:
    has_next = len(rows) > first
    rows = rows[:first]
    edges = [Edge(cursor=ids.cursor(position(r)), node=wrap(r)) for r in rows]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        counter=counter,
    )


# --- errors --------------------------------------------------------------------------


@strawberry.type(description="An input the caller can fix; the mutation changed nothing.")
class UserError:
    code: ErrorCode
    field: list[str] | None
    message: str

    @classmethod
    def of(cls, exc: Rejected) -> UserError:
        return cls(code=exc.code, field=exc.field, message=exc.message)


# --- shared computations -----------------------------------------------------------------


def _status(info: Info, progress: float, checked_in: bool, cycle: Any) -> enums.ProgressStatus:
    p = info.context.principal
    expected = rules.expected_progress(cycle.starts_on, cycle.ends_on, info.context.now)
    return rules.progress_status(progress, expected, checked_in, *p.thresholds)


async def _cadence(info: Info, team_id: int | None) -> int:
    if team_id is not None:
        team = await info.context.loaders.team.load(team_id)
        if team is not None and team.check_in_cadence_days:
            return team.check_in_cadence_days
    return info.context.principal.check_in_cadence_days


def _stale(info: Info, kr: Any, cycle: Any, cadence: int) -> bool:
    last = kr.last_check_in_at or kr.created_at
    return rules.is_stale(enums.CycleStatus(cycle.status), last, cadence, info.context.now)


def _with_cycle(info: Info, cycle_id: int, compute: Callable[[Any], Any]) -> Any:
    """`compute(cycle)` at once when the cycle is loaded already, else after loading it
    (a resolver that need not await stays cheap: no task per field)."""
    cycle = info.context.loaders.known_cycle(cycle_id)
    if cycle is not None:
        return compute(cycle)

    async def later() -> Any:
        return compute(await info.context.loaders.cycle.load(cycle_id))

    return later()


async def user_of(info: Info, pk: int | None) -> User | None:
    """A user by id through the request's loader (None for none, or one gone)."""
    if pk is None:
        return None
    row = await info.context.loaders.user.load(pk)
    return User.of(row) if row else None


async def check_in_of(info: Info, pk: int | None) -> CheckIn | None:
    """A check-in by id, or None when there is none or the caller may not see it."""
    if pk is None:
        return None
    row = await info.context.loaders.check_in(pk)
    return CheckIn.of(row) if row else None


def _hidden(what: str) -> GraphQLError:
    """For a non-null relation whose row the caller may not see: the parent becomes null,
    and nothing of the row is shown. (Reached only if the parent itself was shown by a
    path that skipped the visibility rule.)"""
    return GraphQLError(f"{what}: not found", extensions={"code": "NOT_FOUND"})


# --- the organization and its people --------------------------------------------------------


@strawberry.type
class Organization(Node):
    row: strawberry.Private[Any]
    id: ID
    name: str
    slug: str
    check_in_cadence_days: int
    on_track_gap: float
    at_risk_gap: float

    @classmethod
    def of(cls, row: Any) -> Organization:
        return cls(
            row=row,
            id=ID(ids.encode("Organization", row.id)),
            name=row.name,
            slug=row.slug,
            check_in_cadence_days=row.check_in_cadence_days,
            on_track_gap=row.on_track_gap,
            at_risk_gap=row.at_risk_gap,
        )


@strawberry.type
class User(Node):
    row: strawberry.Private[Any]
    id: ID
    name: str
    email: str
    role: Role
    active: bool = strawberry.field(description="A deactivated user's tokens do not work.")

    @classmethod
    def of(cls, row: Any) -> User:
        return cls(
            row=row,
            id=ID(ids.encode("User", row.id)),
            name=row.name,
            email=row.email,
            role=Role(row.role),
            active=row.active,
        )

    @strawberry.field
    async def teams(self, info: Info) -> list[Team]:
        # Teams are few per user; read through the members loader's inverse.
        loaders = info.context.loaders
        rows = await loaders.teams_of_user.load(self.row.id)
        return [Team.of(r) for r in rows]


@strawberry.type
class Viewer:
    user: User | None
    organization: Organization
    role: Role


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
    async def members(self, info: Info) -> list[User]:
        return [User.of(r) for r in await info.context.loaders.members_of.load(self.row.id)]

    @strawberry.field(description="The team's objectives, optionally in one cycle.")
    async def objectives(
        self,
        info: Info,
        cycle_id: ID | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Objective]:
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
            Objective.of,
            lambda: loaders.team_objectives_count(cycle_pk).load(team_id),
        )


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

    @strawberry.field(description="Share of the cycle elapsed, now.")
    def expected_progress(self, info: Info) -> float:
        return rules.expected_progress(self.row.starts_on, self.row.ends_on, info.context.now)

    @strawberry.field(description="Ended (past the end of endsOn, UTC) and still ACTIVE.")
    def review_due(self, info: Info) -> bool:
        status = enums.CycleStatus(self.row.status)
        return rules.review_due(status, self.row.starts_on, self.row.ends_on, info.context.now)


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


@strawberry.type
class Objective(Node):
    row: strawberry.Private[Any]
    id: ID
    title: str
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
    async def cycle(self, info: Info) -> Cycle:
        return Cycle.of(await info.context.loaders.cycle.load(self.row.cycle_id))

    @strawberry.field
    async def team(self, info: Info) -> Team | None:
        if self.row.team_id is None:
            return None
        row = await info.context.loaders.team.load(self.row.team_id)
        return Team.of(row) if row else None

    @strawberry.field
    async def owner(self, info: Info) -> User | None:
        return await user_of(info, self.row.owner_id)

    @strawberry.field(description="Alignment: what this contributes to.")
    async def parent(self, info: Info) -> Objective | None:
        if self.row.parent_id is None:
            return None
        row = await info.context.loaders.objective(self.row.parent_id)
        return Objective.of(row) if row else None

    @strawberry.field
    async def children(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Objective]:
        first_, position = page_window(info, first, after)
        loaders = info.context.loaders
        rows = await loaders.children_page.load((self.row.id, first_, position))
        await loaders.prime_cycles(rows)
        pk = self.row.id
        return connection(
            rows, first_, position, Objective.of, lambda: loaders.children_count.load(pk)
        )

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
    async def key_results(self, info: Info) -> list[KeyResult]:
        return [
            KeyResult.of(r) for r in await info.context.loaders.key_results_of.load(self.row.id)
        ]

    @strawberry.field
    def expected_progress(self, info: Info) -> float:
        return _with_cycle(
            info,
            self.row.cycle_id,
            lambda cycle: rules.expected_progress(cycle.starts_on, cycle.ends_on, info.context.now),
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
            return False
        cadence = await _cadence(info, self.row.team_id)
        krs = await loaders.key_results_of.load(self.row.id)
        return any(_stale(info, kr, cycle, cadence) for kr in krs)

    @strawberry.field(description="Why the progress is what it is.")
    async def contributions(self, info: Info) -> list[Contribution]:
        loaders = info.context.loaders
        krs = await loaders.key_results_of.load(self.row.id)
        children = await loaders.children_raw.load(self.row.id)
        items: list[tuple[Any, rules.Part]] = [
            (KeyResult.of(k), rules.Part(k.weight, k.progress)) for k in krs
        ] + [
            (
                Objective.of(c) if loaders.sees(c) else None,
                rules.Part(c.weight, c.progress, c.archived_at is not None),
            )
            for c in children
        ]
        live = [(node, part) for node, part in items if not part.archived]
        shares = rules.shares([part for _, part in live])
        return [
            Contribution(node=node, weight=s.weight, progress=s.progress, share=s.share)
            for (node, _), s in zip(live, shares, strict=True)
            if node is not None  # counted in the roll-up, never shown
        ]

    @strawberry.field(
        description="Stored progress; with asOf, as it stood then (from the check-ins' measuredAt)."
    )
    def progress(self, info: Info, as_of: datetime | None = None) -> float:
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
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Event]:
        return await _history(info, "Objective", self.row.id, first, after)

    @strawberry.field
    def reflection(self) -> Reflection | None:
        r = self.row
        if r.went_well is None and r.challenges is None and r.lessons is None:
            return None
        return Reflection(went_well=r.went_well, challenges=r.challenges, lessons=r.lessons)

    @strawberry.field
    async def comments(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Comment]:
        first_, position = page_window(info, first, after)
        loaders = info.context.loaders
        rows = await loaders.objective_comments_page.load((self.row.id, first_, position))
        pk = self.row.id
        return connection(
            rows, first_, position, Comment.of, lambda: loaders.objective_comments_count.load(pk)
        )


# --- key results and check-ins ------------------------------------------------------------------


@strawberry.type
class Forecast:
    value: float
    progress: float
    status: ProgressStatus


@strawberry.type
class KeyResult(Node):
    row: strawberry.Private[Any]
    objective_row: strawberry.Private[Any]
    id: ID
    title: str
    type: KeyResultType
    measure: Measure
    unit: str | None
    start_value: float
    target_value: float
    current_value: float
    weight: float
    confidence: float | None = strawberry.field(description="From the latest check-in.")
    score: float | None
    score_reason: str | None
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Any, objective: Any = None) -> KeyResult:
        return cls(
            row=row,
            objective_row=objective,
            id=ID(ids.encode("KeyResult", row.id)),
            title=row.title,
            type=enums.KeyResultType(row.type),
            measure=Measure(row.measure),
            unit=row.unit,
            start_value=row.start_value,
            target_value=row.target_value,
            current_value=row.current_value,
            weight=row.weight,
            confidence=row.confidence,
            score=row.score,
            score_reason=row.score_reason,
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    async def _objective_and_cycle(self, info: Info) -> tuple[Any, Any]:
        """The raw objective and its cycle, for computations that never show the row."""
        loaders = info.context.loaders
        objective = await loaders.objective_raw.load(self.row.objective_id)
        return objective, await loaders.cycle.load(objective.cycle_id)

    @strawberry.field
    async def objective(self, info: Info) -> Objective:
        row = await info.context.loaders.objective(self.row.objective_id)
        if row is None:
            raise _hidden("objective")
        return Objective.of(row)

    @strawberry.field
    async def owner(self, info: Info) -> User | None:
        return await user_of(info, self.row.owner_id)

    def _with_own_cycle(self, info: Info, compute: Callable[[Any], Any]) -> Any:
        """`compute(cycle)` without awaiting when the objective (and so the cycle) is known."""
        if self.objective_row is not None:
            return _with_cycle(info, self.objective_row.cycle_id, compute)

        async def later() -> Any:
            return compute((await self._objective_and_cycle(info))[1])

        return later()

    @strawberry.field
    def expected_progress(self, info: Info) -> float:
        return self._with_own_cycle(
            info,
            lambda cycle: rules.expected_progress(cycle.starts_on, cycle.ends_on, info.context.now),
        )

    @strawberry.field
    def status(self, info: Info) -> ProgressStatus:
        return self._with_own_cycle(
            info,
            lambda cycle: _status(
                info, self.row.progress, self.row.last_check_in_id is not None, cycle
            ),
        )

    @strawberry.field(description="No check-in within the cadence plus a grace day.")
    async def stale(self, info: Info) -> bool:
        objective, cycle = await self._objective_and_cycle(info)
        return _stale(info, self.row, cycle, await _cadence(info, objective.team_id))

    @strawberry.field(description="When the next check-in is due (None outside ACTIVE).")
    async def next_check_in_due(self, info: Info) -> datetime | None:
        objective, cycle = await self._objective_and_cycle(info)
        if cycle.status != enums.CycleStatus.ACTIVE:
            return None
        last = self.row.last_check_in_at or self.row.created_at
        return last + timedelta(days=await _cadence(info, objective.team_id))

    @strawberry.field
    async def last_check_in(self, info: Info) -> CheckIn | None:
        return await check_in_of(info, self.row.last_check_in_id)

    @strawberry.field(description="Newest first.")
    async def check_ins(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[CheckIn]:
        first_, position = page_window(info, first, after)
        loaders = info.context.loaders
        rows = await loaders.check_ins_page.load((self.row.id, first_, position))
        pk = self.row.id
        return connection(
            rows, first_, position, CheckIn.of, lambda: loaders.check_ins_count.load(pk)
        )

    @strawberry.field(
        description="Stored progress; with asOf, as it stood then (from the check-ins' measuredAt)."
    )
    def progress(self, info: Info, as_of: datetime | None = None) -> float:
        if as_of is None:
            return self.row.progress
        return _series_one(info, "KeyResult", self.row, as_of)

    @strawberry.field(description="Progress at each instant from `from` to `to`, for charts.")
    async def progress_history(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        interval: HistoryInterval = HistoryInterval.DAY,
    ) -> list[ProgressPoint]:
        return await _series(info, "KeyResult", self.row, from_, to, interval)

    @strawberry.field(description="Bound: its check-ins come from the metric.")
    async def metric(
        self, info: Info
    ) -> Annotated[Metric, strawberry.lazy("schema.metrics")] | None:
        if self.row.metric_id is None:
            return None
        return await nodes.resolve(info, "Metric", self.row.metric_id)

    @strawberry.field(description="The key result of an earlier cycle this continues.")
    async def carried_from(self, info: Info) -> KeyResult | None:
        if self.row.carried_from_id is None:
            return None
        row = await info.context.loaders.key_result(self.row.carried_from_id)
        return KeyResult.of(row) if row else None

    @strawberry.field(description="Who changed what, newest first, from the event log.")
    async def history(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Event]:
        return await _history(info, "KeyResult", self.row.id, first, after)

    @strawberry.field(description="Is the target realistic, judged by the record.")
    async def realism(self, info: Info) -> Realism:
        _, cycle = await self._objective_and_cycle(info)
        return await realism_of(info, self.row, cycle)

    @strawberry.field(
        description="Least squares through the check-ins, read at the cycle's "
        "end; null with fewer than two check-ins."
    )
    async def forecast(self, info: Info) -> Forecast | None:
        _, cycle = await self._objective_and_cycle(info)
        start, end = rules.cycle_bounds(cycle.starts_on, cycle.ends_on)
        rows = await info.context.loaders.check_ins_of.load(self.row.id)
        points = sorted((r.measured_at, r.value) for r in rows if start <= r.measured_at < end)
        p = info.context.principal
        got = rules.forecast(
            enums.KeyResultType(self.row.type),
            self.row.start_value,
            self.row.target_value,
            points,
            end,
            p.on_track_gap,
            p.at_risk_gap,
        )
        if got is None:
            return None
        return Forecast(value=got.value, progress=got.progress, status=got.status)


@strawberry.type
class CheckIn(Node):
    row: strawberry.Private[Any]
    id: ID
    value: float
    confidence: float | None
    note: str | None
    progress: float
    measured_at: datetime = strawberry.field(description="When the value was true.")
    created_at: datetime

    @classmethod
    def of(cls, row: Any) -> CheckIn:
        return cls(
            row=row,
            id=ID(ids.encode("CheckIn", row.id)),
            value=row.value,
            confidence=row.confidence,
            note=row.note,
            progress=row.progress,
            measured_at=row.measured_at,
            created_at=row.created_at,
        )

    @strawberry.field
    async def key_result(self, info: Info) -> KeyResult:
        row = await info.context.loaders.key_result(self.row.key_result_id)
        if row is None:
            raise _hidden("keyResult")
        return KeyResult.of(row)

    @strawberry.field
    async def author(self, info: Info) -> User | None:
        return await user_of(info, self.row.author_id)


@strawberry.type
class Comment(Node):
    row: strawberry.Private[Any]
    id: ID
    body: str
    created_at: datetime

    @classmethod
    def of(cls, row: Any) -> Comment:
        return cls(
            row=row, id=ID(ids.encode("Comment", row.id)), body=row.body, created_at=row.created_at
        )

    @strawberry.field
    async def author(self, info: Info) -> User | None:
        return await user_of(info, self.row.author_id)


# --- the change feed ---------------------------------------------------------------------------


@strawberry.type
class ProgressChange:
    node: Node
    previous_progress: float
    progress: float
    status: ProgressStatus


@strawberry.type(description="One committed change, from the outbox.")
class Event(Node):
    row: strawberry.Private[Any]
    id: ID
    cursor: str
    sequence: int
    kind: EventKind
    occurred_at: datetime

    @classmethod
    def of(cls, row: Any) -> Event:
        return cls(
            row=row,
            id=ID(ids.encode("Event", row.id)),
            cursor=ids.cursor(row.seq),
            sequence=row.seq,
            kind=row.kind,
            occurred_at=row.occurred_at,
        )

    @strawberry.field
    async def actor(self, info: Info) -> User | None:
        return await user_of(info, self.row.actor_user_id)

    @strawberry.field(description="For edits: the changed fields as they were.")
    def before(self) -> JSON | None:
        return self.row.payload.get("before")

    @strawberry.field(description="For edits: the changed fields as they became.")
    def after(self) -> JSON | None:
        return self.row.payload.get("after")

    @strawberry.field(description="What the event is about (null when hidden or deleted).")
    async def subject(self, info: Info) -> Node | None:
        return await nodes.resolve(info, self.row.subject_type, self.row.subject_id)

    @strawberry.field
    async def check_in(self, info: Info) -> CheckIn | None:
        return await check_in_of(info, self.row.check_in_id)

    @strawberry.field(description="For progress: the key result and every objective up the chain.")
    async def changes(self, info: Info) -> list[ProgressChange]:
        return await progress_changes(info, self.row.payload.get("changes", []))


def _aware(t: datetime, name: str) -> datetime:
    from schema.inputs import instant

    # Near year 1 or 9999 the arithmetic on it would overflow: a clear error instead.
    return instant(t if t.tzinfo else t.replace(tzinfo=UTC), name)


async def _series_values(info: Info, kind: str, row: Any, instants: list[datetime]) -> list[float]:
    from service import history

    org = info.context.principal.organization_id
    async with info.context.db.connect() as conn:
        if kind == "Objective":
            return await history.objective_series(conn, org, row.id, instants)
        return await history.key_result_series(conn, org, row, instants)


def _series_one(info: Info, kind: str, row: Any, as_of: datetime) -> Awaitable[float]:
    async def compute() -> float:
        return (await _series_values(info, kind, row, [_aware(as_of, "asOf")]))[0]

    return compute()


async def _series(
    info: Info, kind: str, row: Any, start: datetime, end: datetime, interval: HistoryInterval
) -> list[ProgressPoint]:
    start, end = _aware(start, "from"), _aware(end, "to")
    step = STEPS[interval.value]
    if end < start:
        raise GraphQLError("`to` must not be before `from`", extensions={"code": "BAD_USER_INPUT"})
    if (end - start) / step + 1 > MAX_POINTS:
        raise GraphQLError(
            f"at most {MAX_POINTS} points; widen the interval",
            extensions={"code": "BAD_USER_INPUT"},
        )
    instants = []
    t = start
    while t <= end:
        instants.append(t)
        t += step
    values = await _series_values(info, kind, row, instants)
    return [ProgressPoint(at=t, progress=v) for t, v in zip(instants, values, strict=True)]


async def _history(
    info: Info, kind: str, pk: int, first: int | None, after: str | None
) -> Connection[Event]:
    first_, position = page_window(info, first, after)
    loaders = info.context.loaders
    rows = await loaders.history_page[kind].load((pk, first_, position))
    return connection(
        rows,
        first_,
        position,
        Event.of,
        lambda: loaders.history_count[kind].load(pk),
        position=lambda r: r.seq,
    )


async def progress_changes(info: Info, changes: list[dict[str, Any]]) -> list[ProgressChange]:
    out = []
    for change in changes:
        node = await nodes.resolve(info, change["type"], change["id"])
        if node is None:
            continue  # hidden from this caller, or gone
        out.append(
            ProgressChange(
                node=node,
                previous_progress=change["previous"],
                progress=change["progress"],
                status=enums.ProgressStatus(change["status"]),
            )
        )
    return out
