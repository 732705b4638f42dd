"""Mutations on people and teams: users, teams, memberships."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry import ID

from schema.context import Info
from schema.enums import Role
from schema.mutations.common import Payload, gid, mutate, required_gid
from schema.types.organization import User
from schema.types.team import Team
from service.domain import enums
from service.usecases import commands, organizations


@strawberry.input
class CreateTeamInput:
    name: str
    parent_id: ID | None = None

    def command(self) -> commands.CreateTeam:
        return commands.CreateTeam(self.name, gid(self.parent_id, "Team", "parentId"))


@strawberry.input
class AddTeamMemberInput:
    team_id: ID
    user_id: ID

    def command(self) -> commands.TeamMember:
        return team_member(self.team_id, self.user_id)


@strawberry.input
class RemoveTeamMemberInput:
    team_id: ID
    user_id: ID

    def command(self) -> commands.TeamMember:
        return team_member(self.team_id, self.user_id)


def team_member(team_id: ID, user_id: ID) -> commands.TeamMember:
    return commands.TeamMember(
        required_gid(team_id, "Team", "teamId"), required_gid(user_id, "User", "userId")
    )


@strawberry.input
class DeactivateUserInput:
    user_id: ID

    def command(self) -> commands.DeactivateUser:
        return commands.DeactivateUser(required_gid(self.user_id, "User", "userId"))


@strawberry.input
class CreateUserInput:
    name: str
    email: str
    role: Role = Role.MEMBER

    def command(self) -> commands.CreateUser:
        return commands.CreateUser(self.name, self.email, enums.Role(self.role.value))


@strawberry.type
class TeamPayload(Payload):
    team: Team | None = None

    @classmethod
    async def of(cls, info: Info, row: Any) -> TeamPayload:
        return cls(team=Team.of(row))


@strawberry.type
class UserPayload(Payload):
    user: User | None = None

    @classmethod
    async def of(cls, info: Info, row: Any) -> UserPayload:
        return cls(user=User.of(row))


# --- resolvers (the Mutation root, schema/mutations/__init__.py) ----------------------


async def create_team(info: Info, input: CreateTeamInput) -> TeamPayload:
    return await mutate(info, input.command, organizations.create_team, TeamPayload)


async def add_team_member(info: Info, input: AddTeamMemberInput) -> TeamPayload:
    return await mutate(info, input.command, organizations.add_team_member, TeamPayload)


async def remove_team_member(info: Info, input: RemoveTeamMemberInput) -> TeamPayload:
    return await mutate(info, input.command, organizations.remove_team_member, TeamPayload)


async def deactivate_user(info: Info, input: DeactivateUserInput) -> UserPayload:
    return await mutate(info, input.command, organizations.deactivate_user, UserPayload)


async def create_user(info: Info, input: CreateUserInput) -> UserPayload:
    return await mutate(info, input.command, organizations.create_user, UserPayload)
