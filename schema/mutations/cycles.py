"""Mutations on cycles."""

from __future__ import annotations

from datetime import date
from typing import Any

import strawberry
from strawberry import ID

from schema.context import Info
from schema.mutations.common import Payload, mutate, required_gid
from schema.types.cycle import Cycle
from service.domain import enums
from service.usecases import commands, cycles


@strawberry.input
class CreateCycleInput:
    name: str
    starts_on: date
    ends_on: date

    def command(self) -> commands.CreateCycle:
        return commands.CreateCycle(self.name, self.starts_on, self.ends_on)


@strawberry.input
class SetCycleStatusInput:
    cycle_id: ID
    status: enums.CycleStatus

    def command(self) -> commands.SetCycleStatus:
        return commands.SetCycleStatus(
            required_gid(self.cycle_id, "Cycle", "cycleId"), enums.CycleStatus(self.status)
        )


@strawberry.type
class CyclePayload(Payload):
    cycle: Cycle | None = None

    @classmethod
    async def of(cls, info: Info, row: Any) -> CyclePayload:
        return cls(cycle=Cycle.of(row))


# --- resolvers (the Mutation root, schema/mutations/__init__.py) ----------------------


async def create_cycle(info: Info, input: CreateCycleInput) -> CyclePayload:
    return await mutate(info, input.command, cycles.create_cycle, CyclePayload)


async def set_cycle_status(info: Info, input: SetCycleStatusInput) -> CyclePayload:
    return await mutate(info, input.command, cycles.set_cycle_status, CyclePayload)
