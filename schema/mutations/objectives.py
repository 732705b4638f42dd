"""Mutations on objectives: create, update, align, archive, reflect."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry import ID, UNSET

from schema.context import Info
from schema.enums import Visibility
from schema.mutations.common import (
    Payload,
    gid,
    keep,
    keep_as,
    mutate,
    required_gid,
    shown_objective,
)
from schema.types.objective import Objective
from service.domain import enums
from service.usecases import commands, objectives


@strawberry.input
class CreateObjectiveInput:
    cycle_id: ID
    title: str
    description: str | None = None
    team_id: ID | None = None
    owner_id: ID | None = strawberry.field(
        default=None, description="Defaults to the caller: every objective has an owner."
    )
    parent_id: ID | None = None
    weight: float = 1.0
    visibility: Visibility = Visibility.PUBLIC

    def command(self) -> commands.CreateObjective:
        return commands.CreateObjective(
            cycle_id=required_gid(self.cycle_id, "Cycle", "cycleId"),
            team_id=gid(self.team_id, "Team", "teamId"),
            owner_id=gid(self.owner_id, "User", "ownerId"),
            parent_id=gid(self.parent_id, "Objective", "parentId"),
            title=self.title,
            description=self.description,
            weight=self.weight,
            visibility=enums.Visibility(self.visibility.value),
        )


@strawberry.input
class UpdateObjectiveInput:
    objective_id: ID
    expected_version: int | None = None
    title: str | None = UNSET
    description: str | None = UNSET
    owner_id: ID | None = UNSET
    weight: float | None = UNSET
    visibility: Visibility | None = UNSET

    def command(self) -> commands.UpdateObjective:
        return commands.UpdateObjective(
            objective_id=required_gid(self.objective_id, "Objective", "objectiveId"),
            expected_version=self.expected_version,
            title=keep(self.title),
            description=keep(self.description),
            owner_id=keep_as(self.owner_id, lambda v: required_gid(v, "User", "ownerId")),
            weight=keep(self.weight),
            visibility=keep_as(self.visibility, lambda v: enums.Visibility(v.value)),
        )


@strawberry.input
class AlignObjectiveInput:
    objective_id: ID
    parent_id: ID | None = strawberry.field(default=None, description="null unaligns.")

    def command(self) -> commands.AlignObjective:
        return commands.AlignObjective(
            required_gid(self.objective_id, "Objective", "objectiveId"),
            gid(self.parent_id, "Objective", "parentId"),
        )


@strawberry.input
class ArchiveObjectiveInput:
    objective_id: ID

    def command(self) -> commands.ArchiveObjective:
        return commands.ArchiveObjective(
            required_gid(self.objective_id, "Objective", "objectiveId")
        )


@strawberry.input
class ReflectInput:
    objective_id: ID
    went_well: str | None = UNSET
    challenges: str | None = UNSET
    lessons: str | None = UNSET

    def command(self) -> commands.Reflect:
        return commands.Reflect(
            required_gid(self.objective_id, "Objective", "objectiveId"),
            went_well=keep(self.went_well),
            challenges=keep(self.challenges),
            lessons=keep(self.lessons),
        )


@strawberry.type
class ObjectivePayload(Payload):
    objective: Objective | None = None

    @classmethod
    async def of(cls, info: Info, row: Any) -> ObjectivePayload:
        return cls(objective=shown_objective(info, row))


# --- resolvers (the Mutation root, schema/mutations/__init__.py) ----------------------------


async def create_objective(info: Info, input: CreateObjectiveInput) -> ObjectivePayload:
    return await mutate(info, input.command, objectives.create_objective, ObjectivePayload)


async def update_objective(info: Info, input: UpdateObjectiveInput) -> ObjectivePayload:
    return await mutate(info, input.command, objectives.update_objective, ObjectivePayload)


async def align_objective(info: Info, input: AlignObjectiveInput) -> ObjectivePayload:
    return await mutate(info, input.command, objectives.align_objective, ObjectivePayload)


async def archive_objective(info: Info, input: ArchiveObjectiveInput) -> ObjectivePayload:
    return await mutate(info, input.command, objectives.archive_objective, ObjectivePayload)


async def reflect_on_objective(info: Info, input: ReflectInput) -> ObjectivePayload:
    return await mutate(info, input.command, objectives.reflect_on_objective, ObjectivePayload)
