"""Cycles and their lifecycle: PLANNING -> ACTIVE -> REVIEW -> CLOSED, forward only."""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import events
from service.access import require_admin
from service.domain import rules
from service.domain.enums import CycleStatus
from service.domain.errors import ErrorCode, Rejected, invalid
from service.domain.principal import Principal
from service.models import Cycle, Objective
from service.usecases import commands, common
from service.usecases.common import MAX_NAME, required_text

_SCORE_AT_PROGRESS = text(
    """
    UPDATE key_result k SET score = k.progress
    FROM objective o
    WHERE o.id = k.objective_id AND o.cycle_id = :cycle AND k.organization_id = :org
      AND k.score IS NULL
    """
)


async def create_cycle(session: AsyncSession, p: Principal, cmd: commands.CreateCycle) -> Cycle:
    require_admin(p)
    name = required_text(cmd.name, "name", MAX_NAME)
    starts_on = common.cycle_date(cmd.starts_on, "startsOn")
    ends_on = common.cycle_date(cmd.ends_on, "endsOn")
    if ends_on < starts_on:
        raise invalid("endsOn must not be before startsOn", "endsOn")
    row = Cycle(organization_id=p.organization_id, name=name, starts_on=starts_on, ends_on=ends_on)
    session.add(row)
    await session.flush()
    await events.record(
        session, p, p.organization_id, events.cycle_created(common.id_of(row), name)
    )
    return row


async def set_cycle_status(
    session: AsyncSession, p: Principal, cmd: commands.SetCycleStatus
) -> Cycle:
    require_admin(p)
    row = await common.cycle(session, p, cmd.cycle_id, lock=True)
    current, new = CycleStatus(row.status), cmd.status
    if current is new:
        return row  # already there: nothing to write
    if current is CycleStatus.CLOSED:
        raise Rejected(ErrorCode.CYCLE_CLOSED, f"cycle {row.name!r} is closed and read-only")
    if not rules.can_move_cycle(current, new):
        raise invalid(
            f"a cycle moves forward one step at a time (PLANNING, ACTIVE, REVIEW, CLOSED); "
            f"{current} cannot become {new}",
            "status",
        )
    row.status = str(new)
    await session.flush()
    rolled: events.Scope | None = None
    if new is CycleStatus.REVIEW:
        # Each key result's score starts at its progress; objectives' scores follow.
        await session.execute(_SCORE_AT_PROGRESS, {"cycle": row.id, "org": p.organization_id})
        ids = (
            (
                await session.execute(
                    select(col(Objective.id)).where(
                        col(Objective.cycle_id) == row.id,
                        col(Objective.organization_id) == p.organization_id,
                    )
                )
            )
            .scalars()
            .all()
        )
        rolled = (await common.roll_up(session, p, [i for i in ids if i is not None])).scope()
    changed = events.cycle_status_changed(common.id_of(row), str(current), str(new), rolled)
    await events.record(session, p, p.organization_id, changed)
    return row
