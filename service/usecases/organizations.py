"""Organizations, users, teams, memberships and API keys."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import events, sql
from service.access import require_admin
from service.domain.credentials import new_api_key
from service.domain.enums import Role
from service.domain.errors import ErrorCode, Rejected, forbidden, invalid, not_found
from service.domain.principal import Principal
from service.models import ApiKey, ApiKeyTeam, Organization, Team, TeamMembership, User
from service.usecases import commands, common
from service.usecases.common import EMAIL, MAX_NAME, required_text

GRANTABLE = (Role.ADMIN, Role.MEMBER, Role.VIEWER)  # a SERVICE is an API key, not a user


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64] or "org"


def email_address(value: str | None) -> str:
    email = required_text(value, "email", 320).lower()
    if not EMAIL.match(email):
        raise invalid("email is not an email address", "email")
    return email


async def create_organization(
    session: AsyncSession,
    name: str,
    admin_email: str,
    admin_name: str | None = None,
    slug: str | None = None,
) -> tuple[Organization, User]:
    name = required_text(name, "name", MAX_NAME)
    slug = slugify(slug or name)
    email = email_address(admin_email)
    exists = await session.scalar(
        select(col(Organization.id)).where(col(Organization.slug) == slug)
    )
    if exists:
        raise Rejected(ErrorCode.CONFLICT, f"an organization with slug {slug!r} exists", ["slug"])
    org = Organization(name=name, slug=slug)
    session.add(org)
    await session.flush()
    admin = User(
        organization_id=common.id_of(org),
        name=(admin_name or email.split("@")[0]),
        email=email,
        role="ADMIN",
    )
    session.add(admin)
    await session.flush()
    await events.record(
        session,
        None,
        common.id_of(org),
        events.organization_created(common.id_of(org), name, slug, common.id_of(admin)),
    )
    return org, admin


async def create_user(session: AsyncSession, p: Principal, cmd: commands.CreateUser) -> User:
    require_admin(p)
    name = required_text(cmd.name, "name", MAX_NAME)
    email = email_address(cmd.email)
    role = cmd.role
    if role not in GRANTABLE:
        raise invalid(f"role must be one of {', '.join(GRANTABLE)}", "role")
    taken = await session.scalar(
        select(col(User.id)).where(
            col(User.organization_id) == p.organization_id, col(User.email) == email
        )
    )
    if taken:
        raise Rejected(ErrorCode.CONFLICT, f"{email} is already a user here", ["email"])
    row = User(organization_id=p.organization_id, name=name, email=email, role=str(role))
    session.add(row)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Rejected(ErrorCode.CONFLICT, f"{email} is already a user here", ["email"]) from None
    await events.record(
        session, p, p.organization_id, events.user_created(common.id_of(row), email, str(role))
    )
    return row


async def create_team(session: AsyncSession, p: Principal, cmd: commands.CreateTeam) -> Team:
    require_admin(p)
    name = required_text(cmd.name, "name", MAX_NAME)
    parent_id = cmd.parent_id
    if parent_id is not None:
        await common.team(session, p, parent_id, "parentId", live=True)
    row = Team(organization_id=p.organization_id, name=name, parent_id=parent_id)
    session.add(row)
    await session.flush()
    await events.record(
        session, p, p.organization_id, events.team_created(common.id_of(row), name, parent_id)
    )
    return row


async def add_team_member(session: AsyncSession, p: Principal, cmd: commands.TeamMember) -> Team:
    require_admin(p)
    team_id, user_id = cmd.team_id, cmd.user_id
    team = await common.team(session, p, team_id, lock=True, live=True)
    member = await common.user(session, p, user_id)
    if member.anonymized_at is not None:
        raise Rejected(ErrorCode.CONFLICT, "this person was anonymized", ["userId"])
    existing = await session.get(TeamMembership, (team_id, user_id))
    if existing is not None:
        return team  # already a member: nothing to write
    session.add(TeamMembership(organization_id=p.organization_id, team_id=team_id, user_id=user_id))
    await session.flush()
    await events.record(session, p, p.organization_id, events.team_member_added(team_id, user_id))
    return team


async def remove_team_member(session: AsyncSession, p: Principal, cmd: commands.TeamMember) -> Team:
    """The user no longer sees the team's TEAM objectives; their open WebSockets are
    closed (the event tells every replica)."""
    require_admin(p)
    team_id, user_id = cmd.team_id, cmd.user_id
    team = await common.team(session, p, team_id)
    await common.user(session, p, user_id)
    removed = await session.scalar(
        delete(TeamMembership)
        .where(col(TeamMembership.team_id) == team_id, col(TeamMembership.user_id) == user_id)
        .returning(col(TeamMembership.user_id))
    )
    if removed is None:
        raise not_found("a membership of this user in this team", "userId")
    await events.record(session, p, p.organization_id, events.team_member_removed(team_id, user_id))
    return team


async def deactivate_user(
    session: AsyncSession, p: Principal, cmd: commands.DeactivateUser
) -> User:
    """Take access away from a person: their tokens stop working at once, over HTTP and
    on open WebSockets (the event tells every replica). Their history stays."""
    require_admin(p)
    target = await common.user(session, p, cmd.user_id)
    if target.id == p.user_id:
        raise forbidden("an admin may not deactivate themselves", "userId")
    admins = await locked_admins(session, p)
    await session.refresh(target, with_for_update=True)
    if not target.active:
        return target  # already deactivated: nothing to write
    if not admins - {target.id}:
        raise Rejected(ErrorCode.CONFLICT, "the last admin may not be deactivated", ["userId"])
    target.active = False
    await session.flush()
    await events.record(
        session, p, p.organization_id, events.user_deactivated(common.id_of(target), target.email)
    )
    return target


async def locked_admins(session: AsyncSession, p: Principal) -> set[int]:
    """The organization's active admins, locked in id order: two admins demoting or
    deactivating each other at once queue here, and the second sees the first's change
    (the caller must still be one of them), so the organization keeps an admin."""
    admins = set(
        (
            await session.execute(
                select(col(User.id))
                .where(
                    col(User.organization_id) == p.organization_id,
                    col(User.role) == "ADMIN",
                    col(User.active).is_(True),
                )
                .order_by(col(User.id))
                .with_for_update()
            )
        )
        .scalars()
        .all()
    )
    # An ADMIN principal without a user is the operator at the database (`okr user`).
    if p.user_id is not None and p.user_id not in admins:
        raise forbidden("only an active organization admin may do this")
    return {i for i in admins if i is not None}


async def update_team(session: AsyncSession, p: Principal, cmd: commands.UpdateTeam) -> Team:
    """Rename a team, or move it in the team tree (never under itself or its own
    subtree: INVALID on parentId). Moves in one organization run one at a time, so two
    at once cannot together close a loop that neither sees alone."""
    require_admin(p)
    clean: dict[str, Any] = {}
    if cmd.name is not commands.KEEP:
        clean["name"] = required_text(cmd.name, "name", MAX_NAME)
    if cmd.parent_id is not commands.KEEP:
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:k)"),
            {"k": sql.TEAM_TREE_LOCK + p.organization_id},
        )
    team = await common.team(session, p, cmd.team_id, lock=True)
    if team.archived_at is not None:
        raise invalid(f"team {team.name!r} is archived", "teamId")
    if cmd.parent_id is not commands.KEEP:
        parent_id = cmd.parent_id
        if parent_id is not None:
            await common.team(session, p, parent_id, "parentId", live=True)
            if await session.scalar(
                sql.TEAM_LOOP, {"org": p.organization_id, "team": team.id, "parent": parent_id}
            ):
                raise invalid(
                    "a team cannot be moved under itself or one of its own teams", "parentId"
                )
        clean["parent_id"] = parent_id
    before = {k: getattr(team, k) for k in clean}
    changed = {k: v for k, v in clean.items() if before[k] != v}
    if not changed:
        return team
    for key, value in changed.items():
        setattr(team, key, value)
    await session.flush()
    before = {k: before[k] for k in changed}
    await events.record(
        session, p, p.organization_id, events.team_updated(common.id_of(team), before, changed)
    )
    return team


_TEAM_BUSY = text(
    """
    SELECT
      (SELECT count(*) FROM team_membership m
       WHERE m.team_id = :team AND m.organization_id = :org) AS members,
      (SELECT count(*) FROM objective o JOIN cycle c ON c.id = o.cycle_id
       WHERE o.team_id = :team AND o.organization_id = :org AND o.archived_at IS NULL
         AND c.status = 'ACTIVE') AS objectives,
      (SELECT count(*) FROM team t
       WHERE t.parent_id = :team AND t.organization_id = :org AND t.archived_at IS NULL)
         AS children
    """
)


async def archive_team(session: AsyncSession, p: Principal, cmd: commands.ArchiveTeam) -> Team:
    """Take a team out of lists (it keeps its history and reads by id). A team that
    still has members, objectives not archived in an ACTIVE cycle, or teams under it
    that are not archived, is a CONFLICT. The team's row lock keeps new members and
    objectives out meanwhile."""
    require_admin(p)
    team = await common.team(session, p, cmd.team_id, lock=True)
    if team.archived_at is not None:
        return team  # archived already
    busy = (await session.execute(_TEAM_BUSY, {"team": team.id, "org": p.organization_id})).one()
    if busy.members:
        raise Rejected(
            ErrorCode.CONFLICT,
            f"the team still has {busy.members} member(s); remove them first",
            ["teamId"],
        )
    if busy.objectives:
        raise Rejected(
            ErrorCode.CONFLICT,
            f"the team still has {busy.objectives} objective(s) not archived in an ACTIVE "
            "cycle; archive or move them first",
            ["teamId"],
        )
    if busy.children:
        raise Rejected(
            ErrorCode.CONFLICT,
            f"{busy.children} team(s) not archived still sit under this one; move or "
            "archive them first",
            ["teamId"],
        )
    team.archived_at = common.now()
    await session.flush()
    await events.record(
        session, p, p.organization_id, events.team_archived(common.id_of(team), team.name)
    )
    return team


async def organization_by_slug(session: AsyncSession, slug: str) -> Organization:
    org = await session.scalar(select(Organization).where(col(Organization.slug) == slug))
    if org is None:
        raise not_found(f"organization {slug!r}", "org")
    return org


async def user_by_email(session: AsyncSession, organization_id: int, email: str) -> User:
    row = await session.scalar(
        select(User).where(
            col(User.organization_id) == organization_id, col(User.email) == email.strip().lower()
        )
    )
    if row is None:
        raise not_found(f"user {email!r}", "email")
    return row


async def create_api_key(
    session: AsyncSession, organization_id: int, name: str, teams: Sequence[str] = ()
) -> tuple[ApiKey, str]:
    """A SERVICE key. With `teams` (team names of the organization), the key is limited to
    them: it reads and writes only what a member of those teams could."""
    name = required_text(name, "name", MAX_NAME)
    team_ids = [await _team_named(session, organization_id, team) for team in teams]
    key, key_hash = new_api_key()
    row = ApiKey(
        organization_id=organization_id, name=name, key_hash=key_hash, team_limited=bool(teams)
    )
    session.add(row)
    await session.flush()
    for team_id in sorted(set(team_ids)):
        session.add(
            ApiKeyTeam(
                organization_id=organization_id, api_key_id=common.id_of(row), team_id=team_id
            )
        )
    await session.flush()
    await events.record(
        session, None, organization_id, events.api_key_created(common.id_of(row), name)
    )
    return row, key


async def _team_named(session: AsyncSession, organization_id: int, name: str) -> int:
    """The id of the one team of the organization called `name`."""
    ids: list[int | None] = list(
        await session.scalars(
            select(col(Team.id)).where(
                col(Team.organization_id) == organization_id, col(Team.name) == name.strip()
            )
        )
    )
    if not ids:
        raise not_found(f"team {name.strip()!r}", "team")
    if len(ids) > 1:
        raise invalid(f"several teams are called {name.strip()!r}", "team")
    found = ids[0]
    assert found is not None  # a stored row's id
    return found


async def api_keys(session: AsyncSession, organization_id: int) -> list[ApiKey]:
    """Every key of the organization, revoked ones included, oldest first."""
    rows = await session.scalars(
        select(ApiKey)
        .where(col(ApiKey.organization_id) == organization_id)
        .order_by(col(ApiKey.id))
    )
    return list(rows)


async def revoke_api_key(session: AsyncSession, organization_id: int, name: str) -> int:
    ids = (
        (
            await session.execute(
                update(ApiKey)
                .where(
                    col(ApiKey.organization_id) == organization_id,
                    col(ApiKey.name) == name,
                    col(ApiKey.revoked_at).is_(None),
                )
                .values(revoked_at=common.now())
                .returning(col(ApiKey.id))
            )
        )
        .scalars()
        .all()
    )
    if not ids:
        raise not_found(f"active API key {name!r}", "name")
    for key_id in ids:
        assert key_id is not None
        await events.record(session, None, organization_id, events.api_key_revoked(key_id, name))
    return len(ids)


async def create_user_from_identity(
    session: AsyncSession, organization_id: int, email: str, name: str
) -> User:
    """A user first seen in an identity provider's token (when that is allowed)."""
    email = email_address(email)
    name = required_text(name, "name", MAX_NAME)
    existing = await session.scalar(
        select(User).where(col(User.organization_id) == organization_id, col(User.email) == email)
    )
    if existing is not None:
        return existing
    row = User(organization_id=organization_id, name=name, email=email, role="MEMBER")
    session.add(row)
    await session.flush()
    created = events.user_created(common.id_of(row), email, "MEMBER", source="identity provider")
    await events.record(session, None, organization_id, created)
    return row
