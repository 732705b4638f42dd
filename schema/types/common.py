"""What every node type shares: Relay (Node, connections), user errors, history series,
and the read-time rules (status, staleness)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

import strawberry
from graphql import GraphQLError
from strawberry import ID
from strawberry.federation.schema_directives import Shareable

from schema import ids, nodes
from schema.context import Info
from schema.enums import (
    ErrorCode,
    ProgressStatus,
)
from service.domain import enums, facts
from service.domain.errors import Rejected
from service.reads.keyset import Slice, split

if TYPE_CHECKING:  # resolved lazily at run time (strawberry.lazy): no import circle
    from schema.types.check_in import CheckIn
    from schema.types.event import Event
    from schema.types.organization import User

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


@strawberry.type(directives=[Shareable()])  # every Relay subgraph has one
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


def page_window(
    info: Info,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
    decode: Callable[[str], Any] = ids.uncursor,
) -> Slice:
    """The page a connection field asks for (`window`, with the request's settings)."""
    return window(info.context.settings, first, after, last, before, decode)


def window(
    settings: Any,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
    decode: Callable[[str], Any] = ids.uncursor,
) -> Slice:
    """The page asked for: `first` rows after `after`, or `last` rows before `before`
    (Relay). Checked: both sizes at once, a size out of range, a cursor that does not
    decode, or `after` and `before` mixed across directions is a clear error, never a
    cut. `decode` turns a cursor into its keyset position (an int, or a tuple). The one
    rule of page windows: the resolvers and the plan (schema/plan/) both ask it."""
    if first is not None and last is not None:
        raise bad_page("first and last cannot be used together")
    backward = last is not None or before is not None
    if (backward and (first is not None or after is not None)) or (
        after is not None and before is not None
    ):
        raise bad_page("page one way: first with after, or last with before")
    size = last if backward else first
    if size is None:
        size = settings.default_page_size
    if size < 0 or size > settings.max_page_size:
        name = "last" if backward else "first"
        raise bad_page(f"{name} must be between 0 and {settings.max_page_size}")
    cursor = before if backward else after
    position = None
    if cursor is not None:
        try:
            position = decode(cursor)
        except ids.BadId as exc:
            raise bad_page(str(exc)) from None
    if position is not None and not isinstance(position, tuple):
        position = (position,)
    return Slice(size, position, backward)


def bad_page(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


def connection(
    rows: list[Any],
    window: Slice,
    wrap: Callable[[Any], Any],
    counter: Callable[[], Awaitable[int]],
    position: Callable[[Any], str] = lambda r: ids.cursor(r.id),
) -> Connection[Any]:
    """The connection of a page fetched by service/reads/keyset.py (rows in the order
    fetched, with the probe of the cursor's other side); `position` is a row's cursor."""
    found, has_previous, has_next = split(rows, window)
    edges = [Edge(cursor=position(r), node=wrap(r)) for r in found]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next,
            has_previous_page=has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        counter=counter,
    )


@strawberry.type(description="How many objectives have a status.")
class StatusCount:
    status: ProgressStatus
    count: int


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
    return facts.status(
        progress, checked_in, cycle, info.context.principal.thresholds, info.context.now
    )


async def _cadence(info: Info, team_id: int | None) -> int:
    team = await info.context.loaders.team.load(team_id) if team_id is not None else None
    own = team.check_in_cadence_days if team is not None else None
    return facts.cadence(own, info.context.principal.check_in_cadence_days)


def _stale(info: Info, kr: Any, cycle: Any, cadence: int) -> bool:
    return facts.key_result_stale(kr, cycle, cadence, info.context.now)


def _with_cycle(info: Info, cycle_id: int, compute: Callable[[Any], Any]) -> Any:
    """`compute(cycle)` at once when the cycle is loaded already, else after loading it
    (a resolver that need not await stays cheap: no task per field)."""
    cycle = info.context.loaders.known_cycle(cycle_id)
    if cycle is not None:
        return compute(cycle)

    async def later() -> Any:
        return compute(await info.context.loaders.cycle.load(cycle_id))

    return later()


async def user_of(
    info: Info, pk: int | None
) -> Annotated[User, strawberry.lazy("schema.types.organization")] | None:
    """A user by id through the request's loader (None for none, or one gone)."""
    if pk is None:
        return None
    row = await info.context.loaders.user.load(pk)
    return nodes.NODES["User"].type.of(row) if row else None


async def check_in_of(
    info: Info, pk: int | None
) -> Annotated[CheckIn, strawberry.lazy("schema.types.check_in")] | None:
    """A check-in by id, or None when there is none or the caller may not see it."""
    if pk is None:
        return None
    row = await info.context.loaders.check_in(pk)
    return nodes.NODES["CheckIn"].type.of(row) if row else None


def _hidden(what: str) -> GraphQLError:
    """For a non-null relation whose row the caller may not see: the parent becomes null,
    and nothing of the row is shown. (Reached only if the parent itself was shown by a
    path that skipped the visibility rule.)"""
    return GraphQLError(f"{what}: not found", extensions={"code": "NOT_FOUND"})


# --- the change feed ---------------------------------------------------------------------------


@strawberry.type
class ProgressChange:
    node: Node
    previous_progress: float
    progress: float
    status: ProgressStatus


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
    info: Info,
    kind: str,
    pk: int,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
) -> Connection[Annotated[Event, strawberry.lazy("schema.types.event")]]:
    window = page_window(info, first, after, last, before)
    loaders = info.context.loaders
    rows = await loaders.history_page[kind].load((pk, window))
    return connection(
        rows,
        window,
        nodes.NODES["Event"].type.of,
        lambda: loaders.history_count[kind].load(pk),
        position=lambda r: ids.cursor(r.seq),
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
