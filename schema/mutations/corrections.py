"""Corrections (service/usecases/corrections.py): retract a check-in, correct one, retract a
measurement. Nothing committed is destroyed: what is retracted stays, marked."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry import ID, UNSET

from schema.context import Info
from schema.metrics import Measurement
from schema.mutations.common import Payload, keep, mutate, required_gid
from schema.mutations.key_results import CheckInPayload
from schema.types.check_in import CheckIn
from service.usecases import commands, corrections


def _check_in_id(value: ID) -> int:
    return required_gid(value, "CheckIn", "checkInId")


@strawberry.input
class RetractCheckInInput:
    check_in_id: ID
    reason: str = strawberry.field(description="Why: kept with the check-in.")

    def command(self) -> commands.RetractCheckIn:
        return commands.RetractCheckIn(_check_in_id(self.check_in_id), self.reason)


@strawberry.input
class CorrectCheckInInput:
    check_in_id: ID
    value: float
    confidence: float | None = strawberry.field(
        default=UNSET, description="Left out: the corrected check-in's."
    )
    note: str | None = strawberry.field(
        default=UNSET, description="Left out: the corrected check-in's."
    )
    reason: str = strawberry.field(description="Why: kept with the corrected check-in.")

    def command(self) -> commands.CorrectCheckIn:
        return commands.CorrectCheckIn(
            check_in_id=_check_in_id(self.check_in_id),
            value=self.value,
            reason=self.reason,
            confidence=keep(self.confidence),
            note=keep(self.note),
        )


@strawberry.input
class RetractMeasurementInput:
    metric_key: str
    measured_at: datetime = strawberry.field(description="Matched exactly.")
    reason: str

    def command(self) -> commands.RetractMeasurement:
        return commands.RetractMeasurement(self.metric_key, self.measured_at, self.reason)


@strawberry.type
class RetractMeasurementPayload(Payload):
    measurement: Measurement | None = None
    retracted_check_ins: list[CheckIn] = strawberry.field(
        default_factory=list,
        description="The check-ins it had made that were retracted with it, on the key "
        "results the caller may see.",
    )

    @classmethod
    async def of(
        cls, info: Info, result: corrections.RetractedMeasurement
    ) -> RetractMeasurementPayload:
        loaders = info.context.loaders
        shown = [c for c in result.check_ins if await loaders.key_result(c.key_result_id)]
        return cls(
            measurement=Measurement.of(result.measurement),
            retracted_check_ins=[CheckIn.of(c) for c in shown],
        )


# --- resolvers (the Mutation root, schema/mutations/__init__.py) ----------------------------


async def retract_check_in(info: Info, input: RetractCheckInInput) -> CheckInPayload:
    return await mutate(info, input.command, corrections.retract_check_in, CheckInPayload)


async def correct_check_in(info: Info, input: CorrectCheckInInput) -> CheckInPayload:
    return await mutate(info, input.command, corrections.correct_check_in, CheckInPayload)


async def retract_measurement(
    info: Info, input: RetractMeasurementInput
) -> RetractMeasurementPayload:
    return await mutate(
        info, input.command, corrections.retract_measurement, RetractMeasurementPayload
    )
