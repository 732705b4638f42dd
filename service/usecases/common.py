"""What every use case needs: checking plain values, loading rows of the caller's
organization (anything outside it, or hidden from the caller, is NOT_FOUND), and the
one lock order.

The lock order, for every write that locks an objective or a key result:

1. the organization's alignment lock (`lock_alignment`, an advisory lock): exclusive
   for whatever re-parents objectives (alignObjective, carry-over, plans, a cycle's
   move to REVIEW), shared for everything else (check-ins, measurement batches,
   corrections, key result and objective edits). Taken before any row lock, so no
   chain moves while a writer holds part of it, and a re-parenting waits for the
   writers in flight rather than deadlocking with them;
2. the key results, in id order (a check-in's one, a batch's bound ones);
3. objectives: a chain (`lock_chain`: the objectives and every ancestor, in id order,
   in one statement), never an objective before its ancestors; a second chain later in
   the same transaction (a roll-up's) is a part of the first, or, for a re-parenting,
   one that only an exclusive holder takes;
4. the organization's row (events.record: the event sequence), last, until commit.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import Protocol

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import clock, rollup, sql
from service.domain import rules
from service.domain.enums import CycleStatus
from service.domain.errors import ErrorCode, Rejected, invalid, not_found
from service.domain.principal import Principal
from service.models import Cycle, KeyResult, Objective, Team, User
from service.reads.visibility import can_see_objective
from service.rollup import RollUp

MAX_NAME = 200
MAX_TITLE = 300
MAX_TEXT = 10_000
MAX_NOTE = 5_000
MAX_UNIT = 32
MAX_IDEMPOTENCY_KEY = 128
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class _Stored(Protocol):
    @property
    def id(self) -> int | None: ...


def id_of(row: _Stored) -> int:
    """A stored row's id: every row read, or flushed, has one (the models declare it
    optional for the rows not yet written)."""
    assert row.id is not None
    return row.id


def now() -> datetime:
    """The OKR facts' clock (service/clock.py)."""
    return clock.now()


def _no_nul(value: str, field: str) -> None:
    if "\x00" in value:
        raise invalid(f"{field} must not contain NUL characters", field)


def required_text(value: str | None, field: str, max_len: int) -> str:
    cleaned = (value or "").strip()
    _no_nul(cleaned, field)
    if not cleaned:
        raise invalid(f"{field} must not be empty", field)
    if len(cleaned) > max_len:
        raise invalid(f"{field} is longer than {max_len} characters", field)
    return cleaned


def optional_text(value: str | None, field: str, max_len: int) -> str | None:
    if value is None:
        return None
    cleaned = value.strip()
    _no_nul(cleaned, field)
    if len(cleaned) > max_len:
        raise invalid(f"{field} is longer than {max_len} characters", field)
    return cleaned or None


def finite(value: float | None, field: str) -> float:
    if value is None or not math.isfinite(value):
        raise invalid(f"{field} must be a finite number", field)
    return float(value) + 0.0  # -0.0 is stored and shown as 0.0 (-0.0 + 0.0 == +0.0)


def amount(value: float, field: str) -> float:
    """A start, target or checked-in value: finite and within rules.MAX_MAGNITUDE."""
    value = finite(value, field)
    if abs(value) > rules.MAX_MAGNITUDE:
        raise invalid(
            f"{field} must lie between -{rules.MAX_MAGNITUDE:g} and {rules.MAX_MAGNITUDE:g}",
            field,
        )
    return value


def weight(value: float | None, field: str = "weight") -> float:
    value = finite(value, field)
    if not 0 <= value <= rules.MAX_WEIGHT:
        raise invalid(f"{field} must lie between 0 and {rules.MAX_WEIGHT:g}", field)
    return value


def cycle_date(value: date, field: str) -> date:
    if not rules.EARLIEST_DATE <= value <= rules.LATEST_DATE:
        raise invalid(
            f"{field} must lie between {rules.EARLIEST_DATE} and {rules.LATEST_DATE}", field
        )
    return value


def fraction(value: float | None, field: str) -> float | None:
    if value is None:
        return None
    value = finite(value, field)
    if not 0 <= value <= 1:
        raise invalid(f"{field} must lie between 0 and 1", field)
    return value


def writable(cycle: Cycle) -> None:
    if cycle.status == CycleStatus.CLOSED:
        raise Rejected(ErrorCode.CYCLE_CLOSED, f"cycle {cycle.name!r} is closed and read-only")


def live(kr: KeyResult, field: str = "keyResultId") -> None:
    """An archived key result keeps its history and reads by id, but takes no more
    check-ins, edits, scores or bindings."""
    if kr.archived_at is not None:
        raise invalid(
            f"key result {kr.title!r} is archived: it keeps its history but takes no changes",
            field,
        )


async def cycle(
    session: AsyncSession, p: Principal, cycle_id: int, field: str = "cycleId", lock: bool = False
) -> Cycle:
    stmt = select(Cycle).where(
        col(Cycle.id) == cycle_id, col(Cycle.organization_id) == p.organization_id
    )
    row = (await session.execute(stmt.with_for_update() if lock else stmt)).scalar_one_or_none()
    if row is None:
        raise not_found("cycle", field)
    return row


async def team(
    session: AsyncSession,
    p: Principal,
    team_id: int,
    field: str = "teamId",
    lock: bool = False,
    live: bool = False,
    share: bool = False,
) -> Team:
    """The team; `lock` takes its row lock (archiving holds it too, so a team being
    archived gets no new member or objective meanwhile), `share` a key-share lock that
    waits only for that; `live` refuses an archived team (INVALID on `field`)."""
    stmt = select(Team).where(
        col(Team.id) == team_id, col(Team.organization_id) == p.organization_id
    )
    if lock or share:
        stmt = stmt.with_for_update(read=share and not lock, key_share=share and not lock)
        stmt = stmt.execution_options(populate_existing=True)
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise not_found("team", field)
    if live and row.archived_at is not None:
        raise invalid(f"team {row.name!r} is archived", field)
    return row


async def user(session: AsyncSession, p: Principal, user_id: int, field: str = "userId") -> User:
    row = await session.get(User, user_id)
    if row is None or row.organization_id != p.organization_id:
        raise not_found("user", field)
    return row


async def objective(
    session: AsyncSession,
    p: Principal,
    objective_id: int,
    field: str = "objectiveId",
    lock: bool = False,
) -> tuple[Objective, Cycle]:
    stmt = (
        select(Objective, Cycle)
        .join(Cycle, col(Cycle.id) == col(Objective.cycle_id))
        .where(
            col(Objective.id) == objective_id, col(Objective.organization_id) == p.organization_id
        )
    )
    if lock:
        stmt = stmt.with_for_update(of=Objective)
    row = (await session.execute(stmt)).one_or_none()
    if row is None or not can_see_objective(p, row[0].visibility, row[0].team_id, row[0].owner_id):
        raise not_found("objective", field)
    return row[0], row[1]


async def key_result(
    session: AsyncSession,
    p: Principal,
    key_result_id: int,
    field: str = "keyResultId",
    lock: bool = False,
    any_visibility: bool = False,
) -> tuple[KeyResult, Objective, Cycle]:
    """The key result, its objective and cycle; NOT_FOUND when absent or hidden from the
    caller (unless `any_visibility`: a service checks in on any key result). `lock`
    takes its row lock in the lock order (above): the alignment lock, shared, first."""
    if lock:
        await lock_alignment(session, p.organization_id, shared=True)
    stmt = (
        select(KeyResult, Objective, Cycle)
        .join(Objective, col(Objective.id) == col(KeyResult.objective_id))
        .join(Cycle, col(Cycle.id) == col(Objective.cycle_id))
        .where(
            col(KeyResult.id) == key_result_id, col(KeyResult.organization_id) == p.organization_id
        )
    )
    if lock:
        stmt = stmt.with_for_update(of=KeyResult)
    row = (await session.execute(stmt)).one_or_none()
    if row is None:
        raise not_found("key result", field)
    kr, obj, cyc = row
    if not any_visibility and not can_see_objective(p, obj.visibility, obj.team_id, obj.owner_id):
        raise not_found("key result", field)
    return kr, obj, cyc


_ALIGNMENT = text("SELECT pg_advisory_xact_lock(:k)")
_ALIGNMENT_SHARED = text("SELECT pg_advisory_xact_lock_shared(:k)")
_LOCK_CHAIN = sql.walk(
    sql.ANCESTRY,
    "SELECT o.id FROM objective o JOIN up ON up.id = o.id WHERE o.organization_id = :org "
    "ORDER BY o.id FOR UPDATE OF o",
)


def alignment_key(organization_id: int) -> int:
    """The organization's alignment lock (step 1 of the lock order above)."""
    return sql.ALIGNMENT_LOCK + organization_id


async def lock_alignment(
    session: AsyncSession, organization_id: int, *, shared: bool = False
) -> None:
    """Step 1 of the lock order, before any row lock. Exclusive: re-parentings in one
    organization run one at a time (two cannot together close a loop that neither sees
    alone) and alone among the writers of its tree. Shared: a writer that re-parents
    nothing (taken again after the exclusive lock, it is granted at once)."""
    await session.execute(
        _ALIGNMENT_SHARED if shared else _ALIGNMENT, {"k": alignment_key(organization_id)}
    )


async def lock_chain(session: AsyncSession, organization_id: int, objective_ids: list[int]) -> None:
    """Step 3 of the lock order: these objectives and every ancestor, in id order, in one
    statement, before an objective is locked (or a row is inserted under one) on its
    own. Under the alignment lock the chain cannot move meanwhile."""
    ids = [i for i in objective_ids if i is not None]
    if ids:
        await session.execute(_LOCK_CHAIN, {"ids": ids, "org": organization_id})


async def roll_up(session: AsyncSession, p: Principal, objective_ids: list[int]) -> RollUp:
    """Recompute these objectives and every ancestor, in the caller's transaction."""
    return await rollup.recompute(
        session, p.organization_id, objective_ids, thresholds=p.thresholds, now=now()
    )


def check_version(current: int, expected: int | None) -> None:
    if expected is not None and expected != current:
        raise Rejected(
            ErrorCode.CONFLICT,
            f"this was changed meanwhile (version {current}, you expected {expected}); "
            "reload and try again",
            ["expectedVersion"],
        )
