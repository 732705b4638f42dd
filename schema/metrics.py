"""The GraphQL face of metrics (service/usecases/metrics.py): the Metric and Measurement
types and the resolvers the Query root calls (its mutations: schema/mutations/metrics.py).

A metric is org-wide (everyone in the organization may read it); the key results bound
to it are shown by their objective's visibility, and so are the check-ins a batch of
measurements wrote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry import ID

from schema import ids
from schema.context import Info
from schema.inputs import instant
from schema.types.common import Connection, Node, connection, page_window
from schema.types.key_result import KeyResult
from schema.types.metric_source import MetricSource, source_of
from service.reads import lists
from service.reads.keyset import Slice

# --- types ---------------------------------------------------------------------------------


@strawberry.type(description="One value of a metric at an instant.")
class Measurement:
    value: float
    measured_at: datetime = strawberry.field(description="When the value was true.")
    source: str | None
    created_at: datetime
    retracted: bool = strawberry.field(
        description="Retracted (retractMeasurement): kept here, but not `latest` nor record."
    )
    retracted_at: datetime | None
    reason: str | None = strawberry.field(description="Why it was retracted.")

    @classmethod
    def of(cls, row: Any) -> Measurement:
        return cls(
            value=row.value,
            measured_at=row.measured_at,
            source=row.source,
            created_at=row.created_at,
            retracted=row.retracted_at is not None,
            retracted_at=row.retracted_at,
            reason=row.retraction_reason,
        )


@strawberry.type(
    description="A number another system owns (cost per order, on-time dispatch), posted "
    "once; every key result bound to it takes each value as a check-in."
)
class Metric(Node):
    row: strawberry.Private[Any]
    id: ID
    key: str = strawberry.field(description="Unique in the organization, e.g. cost_per_order.")
    name: str
    unit: str | None
    description: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: Any) -> Metric:
        return cls(
            row=row,
            id=ID(ids.encode("Metric", row.id)),
            key=row.key,
            name=row.name,
            unit=row.unit,
            description=row.description,
            created_at=row.created_at,
        )

    @strawberry.field(description="Archived: out of lists, bound to nothing; reads by id.")
    def archived(self) -> bool:
        return self.row.archived_at is not None

    @strawberry.field(description="The measurement measured last (not retracted).")
    async def latest(self, info: Info) -> Measurement | None:
        row = await info.context.loaders.latest_measurement.load(self.row.id)
        return Measurement.of(row) if row is not None else None

    @strawberry.field(
        description="Newest first (by measuredAt); `from` and `to` bound measuredAt, both "
        "inclusive."
    )
    async def measurements(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Measurement]:
        window = page_window(info, first, after, last, before, decode=_measured_position)
        return await _measurements(info, self.row.id, window, from_, to)

    @strawberry.field(description="Where it pulls its value from, if anywhere.")
    async def source(self, info: Info) -> MetricSource | None:
        return await source_of(info, self.row.id)

    @strawberry.field(description="The key results bound to it that the caller may see.")
    async def key_results(self, info: Info) -> list[KeyResult]:
        loaders = info.context.loaders
        shown = []
        for row in await loaders.key_results_of_metric.load(self.row.id):
            objective = await loaders.objective(row.objective_id)
            if objective is not None:
                shown.append(KeyResult.of(row, objective))
        return shown


def _bad(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(t: datetime) -> int:
    delta = t - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _measured_position(cursor: str) -> tuple[datetime, int]:
    """A measurement's cursor: (measuredAt in microseconds, id)."""
    micros, pk = ids.unpair_cursor(cursor)
    try:
        return EPOCH + timedelta(microseconds=micros), pk
    except OverflowError:
        raise ids.BadId("not a valid cursor") from None


async def _measurements(
    info: Info,
    metric_id: int,
    window: Slice,
    start: datetime | None,
    end: datetime | None,
) -> Connection[Measurement]:
    since = instant(start, "from") if start is not None else None
    until = instant(end, "to") if end is not None else None
    if since is not None and until is not None and until < since:
        raise _bad("`to` must not be before `from`")
    listing = lists.measurements(info.context.db, info.context.principal, metric_id, since, until)
    return connection(
        await listing.page(window),
        window,
        Measurement.of,
        listing.count,
        position=lambda r: ids.pair_cursor(_micros(r.measured_at), r.id),
    )


# --- the Query root's fields ----------------------------------------------------------------


async def list_metrics(
    info: Info,
    first: int | None,
    after: str | None,
    search: str | None,
    last: int | None = None,
    before: str | None = None,
) -> Connection[Metric]:
    window = page_window(info, first, after, last, before)
    term = search.strip() if search else None
    if term is not None and len(term) > lists.MAX_SEARCH:
        raise _bad(f"search is longer than {lists.MAX_SEARCH} characters")
    listing = lists.metrics(info.context.db, info.context.principal, term)
    return connection(await listing.page(window), window, Metric.of, listing.count)


async def metric_by_key(info: Info, key: str) -> Metric | None:
    if len(key) > 100:
        return None
    row = await lists.metric_by_key(info.context.db, info.context.principal, key)
    return Metric.of(row) if row is not None else None
