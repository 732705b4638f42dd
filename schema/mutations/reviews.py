"""Mutations at the end of a cycle and between cycles: carrying an objective over, and
the check-in cadence."""

from __future__ import annotations

from functools import partial
from typing import Any

import strawberry
from strawberry import ID

from schema.context import Info
from schema.mutations.common import Payload, gid, mutate, required_gid, shown_objective
from schema.types.key_result import KeyResult
from schema.types.objective import Objective
from schema.types.team import Team
from service.usecases import commands, reviews


@strawberry.input
class CarryOverObjectiveInput:
    objective_id: ID
    to_cycle_id: ID
    key_result_ids: list[ID] = strawberry.field(
        default_factory=list,
        description="The key results to carry; each starts from its last current value.",
    )

    def command(self) -> commands.CarryOver:
        return commands.CarryOver(
            required_gid(self.objective_id, "Objective", "objectiveId"),
            required_gid(self.to_cycle_id, "Cycle", "toCycleId"),
            tuple(required_gid(k, "KeyResult", "keyResultIds") for k in self.key_result_ids),
        )


@strawberry.input
class SetCheckInCadenceInput:
    team_id: ID | None = strawberry.field(
        default=None, description="null: the organization's cadence."
    )
    days: int | None = strawberry.field(
        default=None, description="For a team, null falls back to the organization's."
    )

    def command(self) -> commands.SetCheckInCadence:
        return commands.SetCheckInCadence(gid(self.team_id, "Team", "teamId"), self.days)


@strawberry.type
class CarryOverPayload(Payload):
    objective: Objective | None = None
    carried_from: Objective | None = None
    key_results: list[KeyResult] = strawberry.field(default_factory=list)

    @classmethod
    async def of(cls, info: Info, result: tuple[Any, list[Any]]) -> CarryOverPayload:
        new, created = result
        old = await info.context.loaders.objective(new.carried_from_id)
        shown = shown_objective(info, new)
        return cls(
            objective=shown,
            carried_from=shown_objective(info, old),
            key_results=[KeyResult.of(k, new) for k in created] if shown is not None else [],
        )


@strawberry.type
class CheckInCadencePayload(Payload):
    team: Team | None = None
    days: int | None = None

    @classmethod
    async def of(cls, info: Info, cmd: commands.SetCheckInCadence) -> CheckInCadencePayload:
        team = cmd.team_id
        row = await info.context.loaders.team.load(team) if team else None
        return cls(team=Team.of(row) if row else None, days=cmd.days)


async def carry_over_objective(info: Info, input: CarryOverObjectiveInput) -> CarryOverPayload:
    carry = partial(
        reviews.carry_over_objective,
        max_bound=info.context.settings.max_key_results_per_metric,
    )
    return await mutate(info, input.command, carry, CarryOverPayload)


async def set_check_in_cadence(info: Info, input: SetCheckInCadenceInput) -> CheckInCadencePayload:
    return await mutate(info, input.command, reviews.set_check_in_cadence, CheckInCadencePayload)
