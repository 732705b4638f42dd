"""Objectives: create, update, align, archive, reflect."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service import events, sql
from service.access import (
    require_create_objective,
    require_edit_objective,
    require_weight_under,
)
from service.domain.enums import CycleStatus, Visibility
from service.domain.errors import ErrorCode, Rejected, invalid
from service.domain.principal import Principal
from service.models import Cycle, Objective
from service.usecases import commands, common
from service.usecases.commands import KEEP
from service.usecases.common import MAX_TEXT, MAX_TITLE, optional_text, required_text

_SUBTREE = sql.walk(sql.SUBTREE, "SELECT EXISTS (SELECT 1 FROM down WHERE id = :parent)")


def _overlap(a: Cycle, b: Cycle) -> bool:
    return a.starts_on <= b.ends_on and b.starts_on <= a.ends_on


async def _parent(
    session: AsyncSession, p: Principal, parent_id: int, own_cycle: Cycle, weight: float
) -> Objective:
    """The parent to align under: any objective the caller sees, but a weight other
    than 1 under it needs the right to edit it (it moves the parent's number)."""
    parent, parent_cycle = await common.objective(session, p, parent_id, "parentId")
    common.writable(parent_cycle)
    if parent.archived_at is not None:
        raise invalid("cannot align to an archived objective", "parentId")
    if not _overlap(own_cycle, parent_cycle):
        raise invalid("the parent objective's cycle must overlap this one's", "parentId")
    require_weight_under(p, weight, parent.visibility, parent.team_id, parent.owner_id)
    return parent


def _visibility(value: Visibility | None) -> str:
    if value is None:
        raise invalid(f"visibility must be one of {', '.join(Visibility)}", "visibility")
    return str(value)


async def create_objective(
    session: AsyncSession, p: Principal, cmd: commands.CreateObjective
) -> Objective:
    title = required_text(cmd.title, "title", MAX_TITLE)
    description = optional_text(cmd.description, "description", MAX_TEXT)
    weight = common.weight(cmd.weight)
    visibility = str(cmd.visibility)
    cycle_id, team_id, owner_id, parent_id = cmd.cycle_id, cmd.team_id, cmd.owner_id, cmd.parent_id
    # The lock order (common.py): the new row's insert holds its parent's key, and the
    # roll-up its chain: the chain first, in id order.
    await common.lock_alignment(session, p.organization_id, shared=True)
    if parent_id is not None:
        await common.lock_chain(session, p.organization_id, [parent_id])
    cycle = await common.cycle(session, p, cycle_id)
    common.writable(cycle)
    if team_id is not None:
        await common.team(session, p, team_id, share=True, live=True)
    if owner_id is None:
        owner_id = p.user_id  # every objective has someone accountable: its creator
    if owner_id is not None:
        await common.user(session, p, owner_id, "ownerId")
    require_create_objective(p, team_id, owner_id)
    if parent_id is not None:
        await _parent(session, p, parent_id, cycle, weight)
    row = Objective(
        organization_id=p.organization_id,
        cycle_id=cycle_id,
        title=title,
        description=description,
        team_id=team_id,
        owner_id=owner_id,
        parent_id=parent_id,
        weight=weight,
        visibility=visibility,
        external_key=cmd.external_key,
    )
    session.add(row)
    await session.flush()
    rolled = await common.roll_up(session, p, [common.id_of(row)])
    created = events.objective_created(common.id_of(row), title, rolled.changes, rolled.scope())
    await events.record(session, p, p.organization_id, created)
    return row


async def _editable(
    session: AsyncSession,
    p: Principal,
    objective_id: int,
    *,
    review_only: bool = False,
    chain: bool = False,
) -> tuple[Objective, Cycle]:
    """The objective, locked in the lock order (common.py): with `chain`, for a write
    that rolls its chain up, the objective and its ancestors in id order first."""
    await common.lock_alignment(session, p.organization_id, shared=True)
    if chain:
        await common.lock_chain(session, p.organization_id, [objective_id])
    row, cycle = await common.objective(session, p, objective_id, lock=True)
    common.writable(cycle)
    require_edit_objective(p, row.visibility, row.team_id, row.owner_id)
    if review_only and cycle.status != CycleStatus.REVIEW:
        raise invalid(
            f"reflection happens while the cycle is in REVIEW (it is {cycle.status})", "objectiveId"
        )
    return row, cycle


def _snapshot(row: Objective, fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: getattr(row, f) for f in fields}


async def update_objective(
    session: AsyncSession, p: Principal, cmd: commands.UpdateObjective
) -> Objective:
    row, _cycle = await _editable(session, p, cmd.objective_id, chain=cmd.weight is not KEEP)
    common.check_version(row.version, cmd.expected_version)
    clean: dict[str, Any] = {}
    if cmd.title is not KEEP:
        clean["title"] = required_text(cmd.title, "title", MAX_TITLE)
    if cmd.description is not KEEP:
        clean["description"] = optional_text(cmd.description, "description", MAX_TEXT)
    if cmd.weight is not KEEP:
        clean["weight"] = common.weight(cmd.weight)
        if row.parent_id is not None and clean["weight"] != row.weight:
            parent = await session.get(Objective, row.parent_id)  # same organization
            assert parent is not None
            require_weight_under(
                p, clean["weight"], parent.visibility, parent.team_id, parent.owner_id
            )
    if cmd.visibility is not KEEP:
        clean["visibility"] = _visibility(cmd.visibility)
    if cmd.owner_id is not KEEP:
        if cmd.owner_id is None:
            raise invalid("every objective has an owner: name the new one", "ownerId")
        await common.user(session, p, cmd.owner_id, "ownerId")
        clean["owner_id"] = cmd.owner_id
    before = _snapshot(row, tuple(clean))
    if before == clean:
        return row  # nothing to change, nothing to write
    for key, value in clean.items():
        setattr(row, key, value)
    row.version += 1
    row.updated_at = common.now()
    await session.flush()
    updated = events.objective_updated(
        common.id_of(row),
        before,
        clean,
        events.Scope.of_objective(common.id_of(row), row.team_id, row.cycle_id),
    )
    if "weight" in clean and row.parent_id is not None:
        rolled = await common.roll_up(session, p, [row.parent_id])
        updated = events.objective_updated(
            common.id_of(row), before, clean, rolled.scope(), rolled.changes
        )
    await events.record(session, p, p.organization_id, updated)
    return row


async def align_objective(
    session: AsyncSession, p: Principal, cmd: commands.AlignObjective
) -> Objective:
    parent_id = cmd.parent_id
    # Exclusive: no writer holds a part of either chain meanwhile; then the objective's
    # chain and its new parent's, in id order, in one statement.
    await common.lock_alignment(session, p.organization_id)
    await common.lock_chain(
        session, p.organization_id, [cmd.objective_id] + ([parent_id] if parent_id else [])
    )
    row, cycle = await _editable(session, p, cmd.objective_id)
    old_parent = row.parent_id
    if parent_id == old_parent:
        return row
    if parent_id is not None:
        common.weight(row.weight)  # one stored before weights were bounded: fix it first
        await _parent(session, p, parent_id, cycle, row.weight)
        loop = await session.scalar(
            _SUBTREE, {"id": row.id, "parent": parent_id, "org": p.organization_id}
        )
        if loop:
            raise Rejected(
                ErrorCode.ALIGNMENT_LOOP,
                "aligning under its own descendant (or itself) would make a loop",
                ["parentId"],
            )
    row.parent_id = parent_id
    row.version += 1
    row.updated_at = common.now()
    await session.flush()
    rolled = await common.roll_up(session, p, [i for i in (old_parent, parent_id, row.id) if i])
    aligned = events.objective_aligned(
        common.id_of(row), old_parent, parent_id, rolled.changes, rolled.scope()
    )
    await events.record(session, p, p.organization_id, aligned)
    return row


async def archive_objective(
    session: AsyncSession, p: Principal, cmd: commands.ArchiveObjective
) -> Objective:
    row, _cycle = await _editable(session, p, cmd.objective_id, chain=True)
    if row.archived_at is not None:
        return row  # already archived
    row.archived_at = common.now()
    row.version += 1
    row.updated_at = row.archived_at
    await session.flush()
    rolled = await common.roll_up(session, p, [common.id_of(row)])
    archived = events.objective_archived(common.id_of(row), rolled.changes, rolled.scope())
    await events.record(session, p, p.organization_id, archived)
    return row


async def unarchive_objective(
    session: AsyncSession, p: Principal, cmd: commands.UnarchiveObjective
) -> Objective:
    """Bring an archived objective back into lists and into its parent's roll-up (the
    chain rolls up in the same transaction). Needs the right to edit it."""
    row, _cycle = await _editable(session, p, cmd.objective_id, chain=True)
    if row.archived_at is None:
        return row  # not archived: nothing to write
    if row.team_id is not None:
        team = await common.team(session, p, row.team_id, share=True)
        if team.archived_at is not None:
            raise invalid(f"its team {team.name!r} is archived", "objectiveId")
    row.archived_at = None
    row.version += 1
    row.updated_at = common.now()
    await session.flush()
    rolled = await common.roll_up(session, p, [common.id_of(row)])
    unarchived = events.objective_unarchived(common.id_of(row), rolled.changes, rolled.scope())
    await events.record(session, p, p.organization_id, unarchived)
    return row


async def reflect_on_objective(
    session: AsyncSession, p: Principal, cmd: commands.Reflect
) -> Objective:
    row, _cycle = await _editable(session, p, cmd.objective_id, review_only=True)
    clean: dict[str, str | None] = {}
    for key, field, value in (
        ("went_well", "wentWell", cmd.went_well),
        ("challenges", "challenges", cmd.challenges),
        ("lessons", "lessons", cmd.lessons),
    ):
        if value is not KEEP:
            clean[key] = optional_text(value, field, MAX_TEXT)
    if not clean:
        raise invalid("give at least one of wentWell, challenges, lessons")
    for key, value in clean.items():
        setattr(row, key, value)
    row.updated_at = common.now()
    await session.flush()
    scope = events.Scope.of_objective(common.id_of(row), row.team_id, row.cycle_id)
    await events.record(
        session, p, p.organization_id, events.objective_reflected(common.id_of(row), clean, scope)
    )
    return row
