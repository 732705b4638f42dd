"""People, administered: name, email and role (`updateUser`), bringing a deactivated
person back (`reactivateUser`), and erasure on request (`anonymizeUser`). Role changes
and erasures take the organization's admins' locks (organizations.locked_admins), so two
admins demoting each other at once leave one admin."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import events
from service.access import require_admin
from service.domain.errors import ErrorCode, Rejected, forbidden, invalid
from service.domain.principal import Principal
from service.models import TeamMembership, User
from service.usecases import commands, common, organizations
from service.usecases.common import MAX_NAME, required_text


async def _locked_user(session: AsyncSession, p: Principal, user_id: int) -> User:
    target = await common.user(session, p, user_id)
    await session.refresh(target, with_for_update=True)
    return target


def _not_anonymized(target: User) -> None:
    if target.anonymized_at is not None:
        raise Rejected(
            ErrorCode.CONFLICT, "this person was anonymized; that cannot be undone", ["userId"]
        )


async def update_user(session: AsyncSession, p: Principal, cmd: commands.UpdateUser) -> User:
    """Name, email and role. The last active admin cannot be demoted; a role change
    reaches the person's open sockets at once (USER_UPDATED closes them: schema/ws.py)."""
    require_admin(p)
    clean: dict[str, str] = {}
    if cmd.name is not commands.KEEP:
        clean["name"] = required_text(cmd.name, "name", MAX_NAME)
    if cmd.email is not commands.KEEP:
        clean["email"] = organizations.email_address(cmd.email)
    if cmd.role is not commands.KEEP:
        if cmd.role is None or cmd.role not in organizations.GRANTABLE:
            raise invalid(f"role must be one of {', '.join(organizations.GRANTABLE)}", "role")
        clean["role"] = str(cmd.role)
    target = await common.user(session, p, cmd.user_id)
    admins = await organizations.locked_admins(session, p) if "role" in clean else set()
    await session.refresh(target, with_for_update=True)
    _not_anonymized(target)
    before = {k: getattr(target, k) for k in clean}
    changed = {k: v for k, v in clean.items() if before[k] != v}
    if not changed:
        return target  # nothing to change, nothing to write
    if changed.get("role", "ADMIN") != "ADMIN" and target.id in admins and not admins - {target.id}:
        raise Rejected(ErrorCode.CONFLICT, "the last active admin may not be demoted", ["role"])
    if "email" in changed:
        taken = await session.scalar(
            select(col(User.id)).where(
                col(User.organization_id) == p.organization_id,
                col(User.email) == changed["email"],
                col(User.id) != target.id,
            )
        )
        if taken:
            raise Rejected(
                ErrorCode.CONFLICT, f"{changed['email']} is already a user here", ["email"]
            )
    for key, value in changed.items():
        setattr(target, key, value)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Rejected(ErrorCode.CONFLICT, "that email is already a user here", ["email"]) from None
    before = {k: before[k] for k in changed}
    updated = events.user_updated(common.id_of(target), before, changed)
    await events.record(session, p, p.organization_id, updated)
    return target


async def reactivate_user(session: AsyncSession, p: Principal, cmd: commands.UserId) -> User:
    """Bring back a deactivated person (not an anonymized one: that cannot be undone)."""
    require_admin(p)
    target = await _locked_user(session, p, cmd.user_id)
    _not_anonymized(target)
    if target.active:
        return target  # active already: nothing to write
    target.active = True
    await session.flush()
    await events.record(
        session, p, p.organization_id, events.user_reactivated(common.id_of(target), target.email)
    )
    return target


ANONYMIZED_NAME = "Anonymized user"


def anonymized_email(user_id: int) -> str:
    """Unique in the organization, as emails are, and naming no one."""
    return f"anonymized-{user_id}@anonymized.invalid"


async def anonymize_user(session: AsyncSession, p: Principal, cmd: commands.UserId) -> User:
    """Erasure on request, for good: name and email become a placeholder, the person is
    deactivated (their tokens stop, their sockets close) and leaves their teams; their id
    stays in history (check-ins, comments, events name the id, not the person). The name
    and email are also erased from the copies the service keeps: the events' values."""
    require_admin(p)
    target = await common.user(session, p, cmd.user_id)
    if target.id == p.user_id:
        raise forbidden("an admin may not anonymize themselves", "userId")
    admins = await organizations.locked_admins(session, p)
    await session.refresh(target, with_for_update=True)
    if target.anonymized_at is not None:
        return target  # anonymized already: nothing to write
    if target.id in admins and not admins - {target.id}:
        raise Rejected(
            ErrorCode.CONFLICT, "the last active admin may not be anonymized", ["userId"]
        )
    user_id = common.id_of(target)
    old_name, old_email = target.name, target.email
    target.name = ANONYMIZED_NAME
    target.email = anonymized_email(user_id)
    target.active = False
    target.anonymized_at = common.now()
    await session.flush()
    await session.execute(
        delete(TeamMembership).where(
            col(TeamMembership.user_id) == user_id,
            col(TeamMembership.organization_id) == p.organization_id,
        )
    )
    await _erase_from_events(session, p.organization_id, user_id, old_name, old_email)
    await events.record(session, p, p.organization_id, events.user_anonymized(user_id))
    return target


_EVENTS_ABOUT = text(
    """
    SELECT id, payload FROM event
    WHERE organization_id = :org AND subject_type = 'User' AND subject_id = :user
    """
)
_EVENTS_HOLDING = text(
    """
    SELECT id, payload FROM event
    WHERE organization_id = :org AND NOT (subject_type = 'User' AND subject_id = :user)
      AND EXISTS (SELECT 1 FROM unnest(CAST(:emails AS text[])) AS e(v)
                  WHERE strpos(payload::text, e.v) > 0)
    """
)
_EVENT_PAYLOAD = text("UPDATE event SET payload = CAST(:payload AS jsonb) WHERE id = :id")


async def _erase_from_events(
    session: AsyncSession, org: int, user_id: int, name: str, email: str
) -> None:
    """In the events about the person, every `name` and `email` value (before and after
    included: every name and email they ever had) becomes the placeholder; in any other
    event of the organization, a string equal to one of those values does too."""
    placeholder = {"name": ANONYMIZED_NAME, "email": anonymized_email(user_id)}
    known: dict[str, str] = {name: ANONYMIZED_NAME, email: placeholder["email"]}

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k in placeholder and isinstance(v, str):
                    known[v] = placeholder[k]
                collect(v)
        elif isinstance(value, list):
            for v in value:
                collect(v)

    def scrub(value: Any, about: bool) -> Any:
        if isinstance(value, dict):
            return {
                k: placeholder[k]
                if about and k in placeholder and isinstance(v, str)
                else scrub(v, about)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [scrub(v, about) for v in value]
        if isinstance(value, str):
            return known.get(value, value)
        return value

    about = (await session.execute(_EVENTS_ABOUT, {"org": org, "user": user_id})).all()
    for row in about:
        collect(row.payload)
    emails = sorted(v for v, p in known.items() if p == placeholder["email"] and "@" in v)
    holding = await session.execute(
        _EVENTS_HOLDING, {"org": org, "user": user_id, "emails": emails}
    )
    for row, is_about in [(r, True) for r in about] + [(r, False) for r in holding.all()]:
        cleaned = scrub(row.payload, is_about)
        if cleaned != row.payload:
            await session.execute(_EVENT_PAYLOAD, {"id": row.id, "payload": json.dumps(cleaned)})
