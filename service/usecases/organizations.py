"""Organizations, users, teams, memberships and API keys."""

from __future__ import annotations

import re

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service import events
from service.access import require_admin
from service.auth import Principal, new_api_key
from service.errors import ErrorCode, Rejected, invalid, not_found
from service.events import EventKind
from service.models import ApiKey, Organization, Team, TeamMembership, User
from service.usecases import common
from service.usecases.common import EMAIL, MAX_NAME, required_text

ROLES = ("ADMIN", "MEMBER", "VIEWER")


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64] or "org"


def _email(value: str) -> str:
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
    email = _email(admin_email)
    exists = await session.scalar(select(Organization.id).where(Organization.slug == slug))
    if exists:
        raise Rejected(ErrorCode.CONFLICT, f"an organization with slug {slug!r} exists", ["slug"])
    org = Organization(name=name, slug=slug)
    session.add(org)
    await session.flush()
    admin = User(
        organization_id=org.id,
        name=(admin_name or email.split("@")[0]),
        email=email,
        role="ADMIN",
    )
    session.add(admin)
    await session.flush()
    await events.record(
        session,
        None,
        org.id,
        EventKind.ORGANIZATION_CREATED,
        "Organization",
        org.id,
        {"name": name, "slug": slug, "admin_user_id": admin.id},
    )
    return org, admin


async def create_user(
    session: AsyncSession, p: Principal, name: str, email: str, role: str
) -> User:
    require_admin(p)
    name = required_text(name, "name", MAX_NAME)
    email = _email(email)
    if role not in ROLES:
        raise invalid(f"role must be one of {', '.join(ROLES)}", "role")
    taken = await session.scalar(
        select(User.id).where(User.organization_id == p.organization_id, User.email == email)
    )
    if taken:
        raise Rejected(ErrorCode.CONFLICT, f"{email} is already a user here", ["email"])
    row = User(organization_id=p.organization_id, name=name, email=email, role=role)
    session.add(row)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Rejected(ErrorCode.CONFLICT, f"{email} is already a user here", ["email"]) from None
    await events.record(
        session,
        p,
        p.organization_id,
        EventKind.USER_CREATED,
        "User",
        row.id,
        {"email": email, "role": role},
    )
    return row


async def create_team(
    session: AsyncSession, p: Principal, name: str, parent_id: int | None
) -> Team:
    require_admin(p)
    name = required_text(name, "name", MAX_NAME)
    if parent_id is not None:
        await common.team(session, p, parent_id, "parentId")
    row = Team(organization_id=p.organization_id, name=name, parent_id=parent_id)
    session.add(row)
    await session.flush()
    await events.record(
        session,
        p,
        p.organization_id,
        EventKind.TEAM_CREATED,
        "Team",
        row.id,
        {"name": name, "parent_id": parent_id, "team_ids": [row.id]},
    )
    return row


async def add_team_member(session: AsyncSession, p: Principal, team_id: int, user_id: int) -> Team:
    require_admin(p)
    team = await common.team(session, p, team_id)
    await common.user(session, p, user_id)
    existing = await session.get(TeamMembership, (team_id, user_id))
    if existing is not None:
        return team  # already a member: nothing to write
    session.add(TeamMembership(organization_id=p.organization_id, team_id=team_id, user_id=user_id))
    await session.flush()
    await events.record(
        session,
        p,
        p.organization_id,
        EventKind.TEAM_MEMBER_ADDED,
        "Team",
        team_id,
        {"user_id": user_id, "team_ids": [team_id]},
    )
    return team


async def organization_by_slug(session: AsyncSession, slug: str) -> Organization:
    org = await session.scalar(select(Organization).where(Organization.slug == slug))
    if org is None:
        raise not_found(f"organization {slug!r}", "org")
    return org


async def user_by_email(session: AsyncSession, organization_id: int, email: str) -> User:
    row = await session.scalar(
        select(User).where(
            User.organization_id == organization_id, User.email == email.strip().lower()
        )
    )
    if row is None:
        raise not_found(f"user {email!r}", "email")
    return row


async def create_api_key(
    session: AsyncSession, organization_id: int, name: str
) -> tuple[ApiKey, str]:
    name = required_text(name, "name", MAX_NAME)
    key, key_hash = new_api_key()
    row = ApiKey(organization_id=organization_id, name=name, key_hash=key_hash)
    session.add(row)
    await session.flush()
    await events.record(
        session, None, organization_id, EventKind.API_KEY_CREATED, "ApiKey", row.id, {"name": name}
    )
    return row, key


async def revoke_api_key(session: AsyncSession, organization_id: int, name: str) -> int:
    ids = (
        (
            await session.execute(
                update(ApiKey)
                .where(
                    ApiKey.organization_id == organization_id,
                    ApiKey.name == name,
                    ApiKey.revoked_at.is_(None),
                )
                .values(revoked_at=common.now())
                .returning(ApiKey.id)
            )
        )
        .scalars()
        .all()
    )
    if not ids:
        raise not_found(f"active API key {name!r}", "name")
    for key_id in ids:
        await events.record(
            session,
            None,
            organization_id,
            EventKind.API_KEY_REVOKED,
            "ApiKey",
            key_id,
            {"name": name},
        )
    return len(ids)


async def create_user_from_identity(
    session: AsyncSession, organization_id: int, email: str, name: str
) -> User:
    """A user first seen in an identity provider's token (when that is allowed)."""
    email = _email(email)
    name = required_text(name, "name", MAX_NAME)
    existing = await session.scalar(
        select(User).where(User.organization_id == organization_id, User.email == email)
    )
    if existing is not None:
        return existing
    row = User(organization_id=organization_id, name=name, email=email, role="MEMBER")
    session.add(row)
    await session.flush()
    await events.record(
        session,
        None,
        organization_id,
        EventKind.USER_CREATED,
        "User",
        row.id,
        {"email": email, "role": "MEMBER", "source": "identity provider"},
    )
    return row
