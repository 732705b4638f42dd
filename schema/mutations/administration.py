"""Administration mutations (README, "Corrections" and "Administration"): change and
archive teams, change cycles, people and metrics, archive key results, bring back
archived objectives. Each runs through the one funnel (common.py) and reuses the
payload of the entity it changes."""

from __future__ import annotations

from datetime import date

import strawberry
from strawberry import ID, UNSET

from schema.context import Info
from schema.enums import Role
from schema.mutations.common import keep, keep_as, mutate, required_gid
from schema.mutations.cycles import CyclePayload
from schema.mutations.key_results import KeyResultPayload
from schema.mutations.metrics import MetricPayload
from schema.mutations.objectives import ObjectivePayload
from schema.mutations.organizations import TeamPayload, UserPayload
from service.domain import enums
from service.usecases import (
    commands,
    cycles,
    key_result_archive,
    metric_definitions,
    objectives,
    organizations,
    people,
)


@strawberry.input
class UpdateTeamInput:
    team_id: ID
    name: str | None = UNSET
    parent_id: ID | None = strawberry.field(
        default=UNSET, description="null: a top-level team; left out: where it is."
    )

    def command(self) -> commands.UpdateTeam:
        return commands.UpdateTeam(
            team_id=required_gid(self.team_id, "Team", "teamId"),
            name=keep(self.name),
            parent_id=keep_as(self.parent_id, lambda v: required_gid(v, "Team", "parentId")),
        )


@strawberry.input
class ArchiveTeamInput:
    team_id: ID

    def command(self) -> commands.ArchiveTeam:
        return commands.ArchiveTeam(required_gid(self.team_id, "Team", "teamId"))


@strawberry.input
class UpdateCycleInput:
    cycle_id: ID
    expected_version: int | None = None
    name: str | None = UNSET
    starts_on: date | None = UNSET
    ends_on: date | None = UNSET

    def command(self) -> commands.UpdateCycle:
        return commands.UpdateCycle(
            cycle_id=required_gid(self.cycle_id, "Cycle", "cycleId"),
            expected_version=self.expected_version,
            name=keep(self.name),
            starts_on=keep(self.starts_on),
            ends_on=keep(self.ends_on),
        )


@strawberry.input
class UpdateUserInput:
    user_id: ID
    name: str | None = UNSET
    email: str | None = UNSET
    role: Role | None = UNSET

    def command(self) -> commands.UpdateUser:
        return commands.UpdateUser(
            user_id=required_gid(self.user_id, "User", "userId"),
            name=keep(self.name),
            email=keep(self.email),
            role=keep_as(self.role, lambda v: enums.Role(v.value)),
        )


@strawberry.input
class ReactivateUserInput:
    user_id: ID

    def command(self) -> commands.UserId:
        return commands.UserId(required_gid(self.user_id, "User", "userId"))


@strawberry.input
class AnonymizeUserInput:
    user_id: ID

    def command(self) -> commands.UserId:
        return commands.UserId(required_gid(self.user_id, "User", "userId"))


@strawberry.input
class ArchiveKeyResultInput:
    key_result_id: ID

    def command(self) -> commands.ArchiveKeyResult:
        return commands.ArchiveKeyResult(
            required_gid(self.key_result_id, "KeyResult", "keyResultId")
        )


@strawberry.input
class UnarchiveObjectiveInput:
    objective_id: ID

    def command(self) -> commands.UnarchiveObjective:
        return commands.UnarchiveObjective(
            required_gid(self.objective_id, "Objective", "objectiveId")
        )


@strawberry.input
class UpdateMetricInput:
    metric_id: ID
    name: str | None = UNSET
    unit: str | None = UNSET
    description: str | None = UNSET

    def command(self) -> commands.UpdateMetric:
        return commands.UpdateMetric(
            metric_id=required_gid(self.metric_id, "Metric", "metricId"),
            name=keep(self.name),
            unit=keep(self.unit),
            description=keep(self.description),
        )


@strawberry.input
class ArchiveMetricInput:
    metric_id: ID

    def command(self) -> commands.ArchiveMetric:
        return commands.ArchiveMetric(required_gid(self.metric_id, "Metric", "metricId"))


# --- resolvers (the Mutation root, schema/mutations/__init__.py) ----------------------


async def update_team(info: Info, input: UpdateTeamInput) -> TeamPayload:
    return await mutate(info, input.command, organizations.update_team, TeamPayload)


async def archive_team(info: Info, input: ArchiveTeamInput) -> TeamPayload:
    return await mutate(info, input.command, organizations.archive_team, TeamPayload)


async def update_cycle(info: Info, input: UpdateCycleInput) -> CyclePayload:
    return await mutate(info, input.command, cycles.update_cycle, CyclePayload)


async def update_user(info: Info, input: UpdateUserInput) -> UserPayload:
    return await mutate(info, input.command, people.update_user, UserPayload)


async def reactivate_user(info: Info, input: ReactivateUserInput) -> UserPayload:
    return await mutate(info, input.command, people.reactivate_user, UserPayload)


async def anonymize_user(info: Info, input: AnonymizeUserInput) -> UserPayload:
    return await mutate(info, input.command, people.anonymize_user, UserPayload)


async def archive_key_result(info: Info, input: ArchiveKeyResultInput) -> KeyResultPayload:
    return await mutate(
        info, input.command, key_result_archive.archive_key_result, KeyResultPayload
    )


async def unarchive_objective(info: Info, input: UnarchiveObjectiveInput) -> ObjectivePayload:
    return await mutate(info, input.command, objectives.unarchive_objective, ObjectivePayload)


async def update_metric(info: Info, input: UpdateMetricInput) -> MetricPayload:
    return await mutate(info, input.command, metric_definitions.update_metric, MetricPayload)


async def archive_metric(info: Info, input: ArchiveMetricInput) -> MetricPayload:
    return await mutate(info, input.command, metric_definitions.archive_metric, MetricPayload)
