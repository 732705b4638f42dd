"""Mutations on key results: define, redefine, check in, score, bind to a metric."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

import strawberry
from strawberry import ID, UNSET

from schema.context import Info
from schema.enums import Measure
from schema.mutations.common import (
    Payload,
    gid,
    keep,
    keep_as,
    mutate,
    required_gid,
    shown_key_result,
)
from schema.types.check_in import CheckIn
from schema.types.key_result import KeyResult
from service.domain import enums
from service.usecases import commands, key_results, metrics


def _kr_id(value: ID) -> int:
    return required_gid(value, "KeyResult", "keyResultId")


@strawberry.input
class CreateKeyResultInput:
    objective_id: ID
    title: str
    type: enums.KeyResultType
    measure: Measure = Measure.NUMBER
    unit: str | None = None
    start_value: float | None = strawberry.field(
        default=None, description="Required but for MILESTONE (0)."
    )
    target_value: float | None = strawberry.field(
        default=None, description="Required but for MILESTONE (1)."
    )
    weight: float = 1.0
    owner_id: ID | None = None

    def command(self) -> commands.CreateKeyResult:
        return commands.CreateKeyResult(
            objective_id=required_gid(self.objective_id, "Objective", "objectiveId"),
            owner_id=gid(self.owner_id, "User", "ownerId"),
            title=self.title,
            type=enums.KeyResultType(self.type),
            measure=enums.Measure(self.measure.value),
            unit=self.unit,
            start_value=self.start_value,
            target_value=self.target_value,
            weight=self.weight,
        )


@strawberry.input
class UpdateKeyResultInput:
    key_result_id: ID
    expected_version: int | None = None
    title: str | None = UNSET
    owner_id: ID | None = UNSET
    measure: Measure | None = UNSET
    unit: str | None = UNSET
    start_value: float | None = UNSET
    target_value: float | None = UNSET
    weight: float | None = UNSET

    def command(self) -> commands.UpdateKeyResult:
        return commands.UpdateKeyResult(
            key_result_id=_kr_id(self.key_result_id),
            expected_version=self.expected_version,
            title=keep(self.title),
            owner_id=keep_as(self.owner_id, lambda v: required_gid(v, "User", "ownerId")),
            measure=keep_as(self.measure, lambda v: enums.Measure(v.value)),
            unit=keep(self.unit),
            start_value=keep(self.start_value),
            target_value=keep(self.target_value),
            weight=keep(self.weight),
        )


@strawberry.input
class CheckInInput:
    key_result_id: ID
    value: float
    confidence: float | None = None
    note: str | None = None
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="The caller's own key, per key result: the same key with the same value "
        "and instant returns the first check-in; with another value or instant it is a "
        "CONFLICT.",
    )
    measured_at: datetime | None = strawberry.field(
        default=None,
        description="When the value was true: defaults to now; may be backdated inside the cycle.",
    )

    def command(self) -> commands.CheckIn:
        return commands.CheckIn(
            key_result_id=_kr_id(self.key_result_id),
            value=self.value,
            confidence=self.confidence,
            note=self.note,
            idempotency_key=self.idempotency_key,
            measured_at=self.measured_at,
        )


@strawberry.input
class ScoreKeyResultInput:
    key_result_id: ID
    score: float
    reason: str | None = None

    def command(self) -> commands.ScoreKeyResult:
        return commands.ScoreKeyResult(_kr_id(self.key_result_id), self.score, self.reason)


@strawberry.input
class BindKeyResultInput:
    key_result_id: ID
    metric_id: ID | None = strawberry.field(default=None, description="null unbinds.")

    def command(self) -> commands.BindKeyResult:
        return commands.BindKeyResult(
            _kr_id(self.key_result_id), gid(self.metric_id, "Metric", "metricId")
        )


@strawberry.type
class KeyResultPayload(Payload):
    key_result: KeyResult | None = None

    @classmethod
    async def of(cls, info: Info, row: Any) -> KeyResultPayload:
        return cls(key_result=await shown_key_result(info, row))


@strawberry.type
class CheckInPayload(Payload):
    check_in: CheckIn | None = None
    key_result: KeyResult | None = None

    @classmethod
    async def of(cls, info: Info, result: tuple[Any, Any]) -> CheckInPayload:
        row, kr = result
        shown = await shown_key_result(info, kr)
        return cls(check_in=CheckIn.of(row) if shown is not None else None, key_result=shown)


# --- resolvers (the Mutation root, schema/mutations/__init__.py) ----------------------------


async def create_key_result(info: Info, input: CreateKeyResultInput) -> KeyResultPayload:
    return await mutate(info, input.command, key_results.create_key_result, KeyResultPayload)


async def update_key_result(info: Info, input: UpdateKeyResultInput) -> KeyResultPayload:
    return await mutate(info, input.command, key_results.update_key_result, KeyResultPayload)


async def check_in(info: Info, input: CheckInInput) -> CheckInPayload:
    return await mutate(info, input.command, key_results.check_in, CheckInPayload)


async def score_key_result(info: Info, input: ScoreKeyResultInput) -> KeyResultPayload:
    return await mutate(info, input.command, key_results.score_key_result, KeyResultPayload)


async def bind_key_result(info: Info, input: BindKeyResultInput) -> KeyResultPayload:
    bind = partial(
        metrics.bind_key_result, max_bound=info.context.settings.max_key_results_per_metric
    )
    return await mutate(info, input.command, bind, KeyResultPayload)
