"""Cycles and their lifecycle: PLANNING -> ACTIVE -> REVIEW -> CLOSED, forward only."""

from __future__ import annotations

from datetime import date
from typing import Any

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
    # Exclusive (the lock order, common.py): moving to REVIEW writes every key result
    # of the cycle and rolls up every objective, with no writer of the tree meanwhile.
    await common.lock_alignment(session, p.organization_id)
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


# The earliest and latest instants of the cycle's check-ins (measurements' included: a
# measurement is in a cycle through the check-ins it made there).
_RECORDED = text(
    """
    SELECT min(ci.measured_at) AS earliest, max(ci.measured_at) AS latest
    FROM check_in ci
    JOIN key_result k ON k.id = ci.key_result_id AND k.organization_id = :org
    JOIN objective o ON o.id = k.objective_id AND o.organization_id = :org
    WHERE o.cycle_id = :cycle AND ci.organization_id = :org
    """
)
# Alignments across cycles: the dates of every other cycle an objective of this one is
# aligned with (as child or parent), which must keep overlapping.
_ALIGNED_CYCLES = text(
    """
    SELECT DISTINCT c.starts_on, c.ends_on
    FROM objective o
    JOIN objective other ON (other.id = o.parent_id OR other.parent_id = o.id)
         AND other.organization_id = :org
    JOIN cycle c ON c.id = other.cycle_id AND c.organization_id = :org
    WHERE o.cycle_id = :cycle AND o.organization_id = :org AND other.cycle_id <> :cycle
    """
)


async def update_cycle(session: AsyncSession, p: Principal, cmd: commands.UpdateCycle) -> Cycle:
    """Rename a cycle or move its dates. Statuses and expected progress follow the new
    dates at once (they are computed from them on every read). A range that would leave
    a check-in outside the cycle is INVALID on the date that does, and so is one that
    would no longer overlap an aligned objective's cycle."""
    require_admin(p)
    row = await common.cycle(session, p, cmd.cycle_id, lock=True)
    common.writable(row)
    common.check_version(row.version, cmd.expected_version)
    clean: dict[str, Any] = {}
    if cmd.name is not commands.KEEP:
        clean["name"] = required_text(cmd.name, "name", MAX_NAME)
    for key, field, value in (
        ("starts_on", "startsOn", cmd.starts_on),
        ("ends_on", "endsOn", cmd.ends_on),
    ):
        if value is None:
            raise invalid(f"a cycle has a {field}: give a date or leave it out", field)
        if value is not commands.KEEP:
            clean[key] = common.cycle_date(value, field)
    starts_on = clean.get("starts_on", row.starts_on)
    ends_on = clean.get("ends_on", row.ends_on)
    if ends_on < starts_on:
        raise invalid("endsOn must not be before startsOn", "endsOn")
    before = {k: getattr(row, k) for k in clean}
    changed = {k: v for k, v in clean.items() if before[k] != v}
    if not changed:
        return row
    if "starts_on" in changed or "ends_on" in changed:
        await _dates_hold(session, p, row, starts_on, ends_on)
    for key, value in changed.items():
        setattr(row, key, value)
    row.version += 1
    await session.flush()
    shown = {k: before[k] for k in changed}
    updated = events.cycle_updated(common.id_of(row), _plain(shown), _plain(changed))
    await events.record(session, p, p.organization_id, updated)
    return row


async def _dates_hold(
    session: AsyncSession, p: Principal, row: Cycle, starts_on: date, ends_on: date
) -> None:
    start, end = rules.cycle_bounds(starts_on, ends_on)
    args = {"org": p.organization_id, "cycle": row.id}
    recorded = (await session.execute(_RECORDED, args)).one()
    if recorded.earliest is not None and recorded.earliest < start:
        raise invalid(
            f"a check-in of this cycle was measured at {recorded.earliest.isoformat()}, "
            "before the new start",
            "startsOn",
        )
    if recorded.latest is not None and recorded.latest >= end:
        raise invalid(
            f"a check-in of this cycle was measured at {recorded.latest.isoformat()}, "
            "after the new end",
            "endsOn",
        )
    for other in (await session.execute(_ALIGNED_CYCLES, args)).all():
        if not (starts_on <= other.ends_on and other.starts_on <= ends_on):
            field = "startsOn" if starts_on > other.ends_on else "endsOn"
            raise invalid(
                "an objective of this cycle is aligned with one of a cycle from "
                f"{other.starts_on} to {other.ends_on}, which the new dates would not overlap",
                field,
            )


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Dates as ISO text, for the event's JSON."""
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in values.items()}
