"""The GraphQL Forecast, KeyResult types. Each wraps a table row; relations read through loaders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import ID

from schema import ids, nodes
from schema.context import Info
from schema.enums import (
    KeyResultType,
    Measure,
    ProgressStatus,
)
from schema.realism import Realism, realism_of
from schema.types.common import (
    Connection,
    HistoryInterval,
    Node,
    ProgressPoint,
    _cadence,
    _hidden,
    _history,
    _series,
    _series_one,
    _stale,
    _status,
    _with_cycle,
    check_in_of,
    connection,
    page_window,
    user_of,
)
from service.domain import enums, facts

if TYPE_CHECKING:  # resolved lazily at run time (strawberry.lazy): no import circle
    from schema.metrics import Metric
    from schema.types.check_in import CheckIn
    from schema.types.event import Event
    from schema.types.objective import Objective
    from schema.types.organization import User


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
    external_key: str | None = strawberry.field(
        description="Its stable key in a plan file (`okr apply`), unique in its objective; "
        "null for key results made otherwise."
    )
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
            external_key=row.external_key,
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

    @strawberry.field(
        description="Archived: out of lists and of its objective's roll-up; its check-ins "
        "and history stay, and it reads by id."
    )
    def archived(self) -> bool:
        return self.row.archived_at is not None

    async def _objective_and_cycle(self, info: Info) -> tuple[Any, Any]:
        """The raw objective and its cycle, for computations that never show the row."""
        loaders = info.context.loaders
        objective = await loaders.objective_raw.load(self.row.objective_id)
        return objective, await loaders.cycle.load(objective.cycle_id)

    @strawberry.field
    async def objective(
        self, info: Info
    ) -> Annotated[Objective, strawberry.lazy("schema.types.objective")]:
        row = await info.context.loaders.objective(self.row.objective_id)
        if row is None:
            raise _hidden("objective")
        return nodes.NODES["Objective"].type.of(row)

    @strawberry.field
    async def owner(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("schema.types.organization")] | None:
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
            lambda cycle: facts.expected_progress(cycle, info.context.now),
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
        return facts.next_check_in_due(self.row, cycle, await _cadence(info, objective.team_id))

    @strawberry.field
    async def last_check_in(
        self, info: Info
    ) -> Annotated[CheckIn, strawberry.lazy("schema.types.check_in")] | None:
        return await check_in_of(info, self.row.last_check_in_id)

    @strawberry.field(description="Newest first.")
    async def check_ins(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Annotated[CheckIn, strawberry.lazy("schema.types.check_in")]]:
        window = page_window(info, first, after, last, before)
        loaders = info.context.loaders
        rows = await loaders.check_ins_page.load((self.row.id, window))
        pk = self.row.id
        return connection(
            rows,
            window,
            nodes.NODES["CheckIn"].type.of,
            lambda: loaders.check_ins_count.load(pk),
        )

    @strawberry.field(
        graphql_type=float,  # stays sync when it can: the stored value needs no await
        description="Stored progress; with asOf, as it stood then "
        "(from the check-ins' measuredAt).",
    )
    def progress(self, info: Info, as_of: datetime | None = None) -> float | Awaitable[float]:
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
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Annotated[Event, strawberry.lazy("schema.types.event")]]:
        return await _history(info, "KeyResult", self.row.id, first, after, last, before)

    @strawberry.field(description="Is the target realistic, judged by the record.")
    async def realism(self, info: Info) -> Realism:
        _, cycle = await self._objective_and_cycle(info)
        return await realism_of(info, self.row, cycle)

    @strawberry.field(
        description="Least squares through the check-ins not retracted, read at the "
        "cycle's end; null with fewer than two of them."
    )
    async def forecast(self, info: Info) -> Forecast | None:
        _, cycle = await self._objective_and_cycle(info)
        rows = await info.context.loaders.check_ins_of.load(self.row.id)
        got = facts.forecast(self.row, rows, cycle, info.context.principal.thresholds)
        if got is None:
            return None
        return Forecast(value=got.value, progress=got.progress, status=got.status)
