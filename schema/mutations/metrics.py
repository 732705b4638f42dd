"""Mutations on metrics: define one, record a batch of measurements (binding a key
result to a metric is in key_results.py)."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

import strawberry

from schema.context import Info
from schema.metrics import Measurement, Metric
from schema.mutations.common import Payload, mutate
from schema.types.check_in import CheckIn
from service.usecases import commands, metrics


@strawberry.input
class CreateMetricInput:
    key: str = strawberry.field(
        description="Unique in the organization: a lowercase letter, then up to 99 lowercase "
        "letters, digits, '_', '.' or '-'."
    )
    name: str
    unit: str | None = None
    description: str | None = None

    def command(self) -> commands.CreateMetric:
        return commands.CreateMetric(self.key, self.name, self.unit, self.description)


@strawberry.input
class MeasurementInput:
    metric_key: str
    value: float
    measured_at: datetime | None = strawberry.field(
        default=None, description="When the value was true: defaults to now; not in the future."
    )
    source: str | None = strawberry.field(
        default=None, description="Where the value comes from; the note of its check-ins."
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="The caller's own key, per metric: the same key with the same value and "
        "instant returns the first measurement; with another value or instant it is a "
        "CONFLICT.",
    )


@strawberry.input
class RecordMeasurementsInput:
    measurements: list[MeasurementInput] = strawberry.field(
        description=f"Up to {metrics.MAX_BATCH}, recorded all together or not at all."
    )

    def command(self) -> list[commands.MeasurementInput]:
        return [
            commands.MeasurementInput(
                metric_key=m.metric_key,
                value=m.value,
                measured_at=m.measured_at,
                source=m.source,
                idempotency_key=m.idempotency_key,
            )
            for m in self.measurements
        ]


@strawberry.type
class MetricPayload(Payload):
    metric: Metric | None = None

    @classmethod
    async def of(cls, info: Info, row: Any) -> MetricPayload:
        return cls(metric=Metric.of(row))


@strawberry.type
class RecordMeasurementsPayload(Payload):
    measurements: list[Measurement] = strawberry.field(
        default_factory=list, description="In the order sent; a retried one is the first."
    )
    check_ins: list[CheckIn] = strawberry.field(
        default_factory=list,
        description="The check-ins the batch made on bound key results the caller may see.",
    )
    check_ins_written: int = strawberry.field(
        default=0,
        description="How many check-ins the batch made, on every bound key result: those "
        "the caller may not see are counted here, never listed in checkIns.",
    )

    @classmethod
    async def of(cls, info: Info, recorded: metrics.Recorded) -> RecordMeasurementsPayload:
        loaders = info.context.loaders
        shown: dict[int, bool] = {}
        for kr_id in {c.key_result_id for c in recorded.check_ins}:
            shown[kr_id] = await loaders.key_result(kr_id) is not None
        return cls(
            measurements=[Measurement.of(r) for r in recorded.measurements],
            check_ins=[CheckIn.of(c) for c in recorded.check_ins if shown[c.key_result_id]],
            check_ins_written=len(recorded.check_ins),
        )


async def create_metric(info: Info, input: CreateMetricInput) -> MetricPayload:
    return await mutate(info, input.command, metrics.create_metric, MetricPayload)


async def record_measurements(
    info: Info, input: RecordMeasurementsInput
) -> RecordMeasurementsPayload:
    record = partial(
        metrics.record_measurements, max_check_ins=info.context.settings.max_batch_check_ins
    )
    return await mutate(info, input.command, record, RecordMeasurementsPayload)
