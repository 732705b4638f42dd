"""Corrections: retract a check-in, correct one, retract a measurement (docs/design.md,
"Access"; README, "Corrections").

Nothing committed is destroyed. A retracted check-in stays listed, marked with who, when
and why; the record leaves it out: the key result's value becomes that of its latest
check-in not retracted (latest `measured_at`, ties by id), or its start value with no
last check-in (NOT_STARTED) when none is left, and the chain rolls up in the same
transaction. A correction is a retraction plus a new check-in at the same instant, linked
both ways, and writes one event (CHECK_IN_CORRECTED, whose check-in is the new one).

Locks, in the check-in's order (service/usecases/common.py): the organization's alignment
lock (shared), the key result (FOR UPDATE), then its chain in id order
(service/rollup.py); the check-in is read again after the key result's lock, so of two
retractions racing on one check-in the second finds it retracted (CONFLICT, no second
event). A measurement's retraction takes its metric first, as recording does, then the
key results its check-ins are on in id order, then their chains.

A check-in a measurement made is corrected through its metric (`retract_measurement`):
each key result bound to a metric must keep agreeing with the metric's record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import events
from service.access import require_check_in
from service.domain import rules
from service.domain.enums import CycleStatus, KeyResultType
from service.domain.errors import ErrorCode, Rejected, forbidden, invalid, not_found
from service.domain.principal import Principal
from service.models import CheckIn, Cycle, KeyResult, Objective
from service.reads.visibility import can_see_objective
from service.usecases import commands, common
from service.usecases.check_in_rows import caller_of
from service.usecases.commands import KEEP
from service.usecases.common import MAX_NOTE, optional_text, required_text
from service.usecases.key_results import progress_change
from service.usecases.metric_definitions import metric_key

# The key result's latest check-in not retracted, and when anyone last checked in on it
# (among those not retracted): what its stored value and staleness follow.
_LATEST_STANDING = text(
    """
    SELECT l.id, l.value, l.confidence,
           (SELECT max(created_at) FROM check_in
            WHERE key_result_id = :kr AND organization_id = :org AND retracted_at IS NULL)
               AS checked_in_at
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT id, value, confidence FROM check_in
        WHERE key_result_id = :kr AND organization_id = :org AND retracted_at IS NULL
        ORDER BY measured_at DESC, id DESC LIMIT 1
    ) AS l ON true
    """
)
_RETRACT_CHECK_INS = text(
    "UPDATE check_in SET retracted_at = :now, retracted_by_id = :user, "
    "retracted_by_api_key_id = :api_key, retraction_reason = :reason "
    "WHERE organization_id = :org AND id = ANY(:ids) AND retracted_at IS NULL"
)
_LOCK_METRIC = text(
    "SELECT id, key FROM metric WHERE organization_id = :org AND key = :key FOR NO KEY UPDATE"
)
_MEASUREMENTS_AT = text(
    "SELECT * FROM measurement WHERE organization_id = :org AND metric_id = :metric "
    "AND measured_at = :at ORDER BY id"
)
_RETRACT_MEASUREMENTS = text(
    "UPDATE measurement SET retracted_at = :now, retracted_by_id = :user, "
    "retracted_by_api_key_id = :api_key, retraction_reason = :reason "
    "WHERE organization_id = :org AND id = ANY(:ids) AND retracted_at IS NULL RETURNING *"
)
# The check-ins the measurements made that still stand, with each one's cycle status.
_MADE_BY = text(
    """
    SELECT c.id, c.key_result_id, c.value, c.measured_at, cy.status AS cycle_status,
           cy.name AS cycle_name
    FROM check_in c
    JOIN key_result k ON k.id = c.key_result_id AND k.organization_id = :org
    JOIN objective o ON o.id = k.objective_id AND o.organization_id = :org
    JOIN cycle cy ON cy.id = o.cycle_id AND cy.organization_id = :org
    WHERE c.organization_id = :org AND c.measurement_id = ANY(:ids) AND c.retracted_at IS NULL
    ORDER BY c.key_result_id, c.measured_at, c.id
    """
)


@dataclass
class RetractedMeasurement:
    """The measurement retracted (the last by id, should several share the instant), and
    every check-in it made, on every key result, hidden ones included."""

    measurement: Any
    check_ins: list[CheckIn] = field(default_factory=list)


# --- one check-in ----------------------------------------------------------------------------


async def _target(
    session: AsyncSession, p: Principal, check_in_id: int
) -> tuple[CheckIn, KeyResult, Objective, Cycle]:
    """The check-in to retract or correct, its key result (locked), objective and cycle,
    with every refusal: NOT_FOUND (another organization's, or hidden), FORBIDDEN,
    CYCLE_CLOSED, INVALID (a measurement's), CONFLICT (retracted already)."""
    missing = not_found("check-in", "checkInId")
    await common.lock_alignment(session, p.organization_id, shared=True)  # common.py
    found = await _check_in(session, p, check_in_id)
    if found is None:
        raise missing
    stmt = (
        select(KeyResult, Objective, Cycle)
        .join(Objective, col(Objective.id) == col(KeyResult.objective_id))
        .join(Cycle, col(Cycle.id) == col(Objective.cycle_id))
        .where(
            col(KeyResult.id) == found.key_result_id,
            col(KeyResult.organization_id) == p.organization_id,
        )
        .with_for_update(of=KeyResult)
        .execution_options(populate_existing=True)
    )
    row = (await session.execute(stmt)).one_or_none()
    if row is None:
        raise missing
    kr, objective, cycle = row
    # A service posts to any key result of its organization (and so may take back what it
    # posted there); anyone else finds a hidden one's check-ins NOT_FOUND.
    if not p.is_trusted_service and not can_see_objective(
        p, objective.visibility, objective.team_id, objective.owner_id
    ):
        raise missing
    # Read again under the key result's lock: a retraction committed meanwhile shows.
    check_in = await _check_in(session, p, check_in_id)
    if check_in is None:
        raise missing
    require_check_in(p, objective.visibility, objective.team_id, objective.owner_id, kr.owner_id)
    if p.role == "SERVICE" and (p.api_key_id is None or check_in.api_key_id != p.api_key_id):
        raise forbidden("a service key retracts and corrects only its own check-ins", "checkInId")
    common.writable(cycle)
    if check_in.measurement_id is not None:
        raise invalid(
            "this check-in was made by a measurement of the key result's metric: correct it "
            "through the metric (retractMeasurement, then record the right value)",
            "checkInId",
        )
    if check_in.retracted_at is not None:
        raise Rejected(
            ErrorCode.CONFLICT,
            "this check-in was retracted already (its retractedAt and reason say when and "
            "why); nothing was written",
            ["checkInId"],
        )
    return check_in, kr, objective, cycle


async def _check_in(session: AsyncSession, p: Principal, check_in_id: int) -> CheckIn | None:
    return (
        await session.execute(
            select(CheckIn)
            .where(
                col(CheckIn.id) == check_in_id,
                col(CheckIn.organization_id) == p.organization_id,
            )
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


def _mark(row: CheckIn, p: Principal, reason: str, now: datetime) -> None:
    row.retracted_at = now
    row.retracted_by_id = p.user_id
    row.retracted_by_api_key_id = p.api_key_id
    row.retraction_reason = reason


async def _settle(session: AsyncSession, p: Principal, kr: KeyResult) -> None:
    """The key result's stored value from its latest check-in not retracted (or its start),
    written; the caller then rolls the chain up. Expects this transaction's check-in rows
    flushed."""
    await session.flush()
    latest = (
        await session.execute(_LATEST_STANDING, {"kr": kr.id, "org": p.organization_id})
    ).one()
    kind = KeyResultType(kr.type)
    if latest.id is None:
        kr.current_value, kr.confidence, kr.last_check_in_id = kr.start_value, None, None
    else:
        kr.current_value, kr.confidence, kr.last_check_in_id = (
            latest.value,
            latest.confidence,
            latest.id,
        )
    kr.progress = rules.key_result_progress(kind, kr.start_value, kr.target_value, kr.current_value)
    kr.last_check_in_at = latest.checked_in_at
    kr.updated_at = common.now()
    await session.flush()


async def retract_check_in(
    session: AsyncSession, p: Principal, cmd: commands.RetractCheckIn
) -> tuple[CheckIn, KeyResult]:
    """Retract a check-in: it stays, marked; the key result and its chain follow the
    check-ins still standing."""
    reason = required_text(cmd.reason, "reason", MAX_NOTE)
    row, kr, _objective, cycle = await _target(session, p, cmd.check_in_id)
    previous = kr.progress
    _mark(row, p, reason, common.now())
    await _settle(session, p, kr)
    rolled = await common.roll_up(session, p, [kr.objective_id])
    retracted = events.check_in_retracted(
        common.id_of(kr),
        common.id_of(row),
        row.value,
        reason,
        [progress_change(kr, previous, cycle, p), *rolled.changes],
        rolled.scope(),
    )
    await events.record(session, p, p.organization_id, retracted)
    return row, kr


async def correct_check_in(
    session: AsyncSession, p: Principal, cmd: commands.CorrectCheckIn
) -> tuple[CheckIn, KeyResult]:
    """Retract a check-in and check in the right value at the same instant; returns the
    new check-in (its `correction_of_id` is the old one, whose `corrected_by_id` is it)."""
    reason = required_text(cmd.reason, "reason", MAX_NOTE)
    value = common.amount(cmd.value, "value")
    confidence = None if cmd.confidence is KEEP else common.fraction(cmd.confidence, "confidence")
    note = None if cmd.note is KEEP else optional_text(cmd.note, "note", MAX_NOTE)
    old, kr, _objective, cycle = await _target(session, p, cmd.check_in_id)
    if cmd.confidence is KEEP:
        confidence = old.confidence
    if cmd.note is KEEP:
        note = old.note
    kind = KeyResultType(kr.type)
    problem = rules.value_error(kind, value)
    if problem:
        raise invalid(problem, "value")
    if not rules.accepts_check_ins(CycleStatus(cycle.status)):
        raise invalid(
            f"check-ins are taken while the cycle is ACTIVE or in REVIEW (it is {cycle.status})",
            "checkInId",
        )
    now = common.now()
    previous = kr.progress
    _mark(old, p, reason, now)
    new = CheckIn(
        organization_id=p.organization_id,
        key_result_id=common.id_of(kr),
        value=value,
        confidence=confidence,
        note=note,
        author_id=p.user_id,
        api_key_id=p.api_key_id,
        caller=caller_of(p),
        progress=rules.key_result_progress(kind, kr.start_value, kr.target_value, value),
        measured_at=old.measured_at,
        created_at=now,
        correction_of_id=old.id,
    )
    session.add(new)
    await session.flush()
    old.corrected_by_id = new.id
    await _settle(session, p, kr)
    rolled = await common.roll_up(session, p, [kr.objective_id])
    corrected = events.check_in_corrected(
        common.id_of(kr),
        common.id_of(new),
        common.id_of(old),
        value,
        reason,
        [progress_change(kr, previous, cycle, p), *rolled.changes],
        rolled.scope(),
    )
    await events.record(session, p, p.organization_id, corrected)
    return new, kr


# --- a measurement ---------------------------------------------------------------------------


def _require_retract_measurements(p: Principal) -> None:
    if p.role not in ("ADMIN", "SERVICE") or p.limited_to_teams:
        raise forbidden(
            "only an admin or a service key for the whole organization retracts measurements",
            "metricKey",
        )


async def retract_measurement(
    session: AsyncSession, p: Principal, cmd: commands.RetractMeasurement
) -> RetractedMeasurement:
    """Retract the metric's measurement at exactly `measured_at` (all of them, should
    several share the instant) and every check-in it made, in one transaction. A service
    key retracts only what it recorded. Each affected key result gets one
    CHECK_IN_RETRACTED event, the metric one MEASUREMENT_RETRACTED."""
    _require_retract_measurements(p)
    key = metric_key(cmd.metric_key, "metricKey")
    reason = required_text(cmd.reason, "reason", MAX_NOTE)
    at = cmd.measured_at if cmd.measured_at.tzinfo else cmd.measured_at.replace(tzinfo=UTC)
    org = p.organization_id
    await common.lock_alignment(session, org, shared=True)  # the lock order (common.py)
    metric = (await session.execute(_LOCK_METRIC, {"org": org, "key": key})).one_or_none()
    if metric is None:
        raise not_found("metric", "metricKey")
    found = (
        await session.execute(_MEASUREMENTS_AT, {"org": org, "metric": metric.id, "at": at})
    ).all()
    if not found:
        raise not_found("measurement at that instant", "measuredAt")
    standing = [m for m in found if m.retracted_at is None]
    if not standing:
        raise Rejected(
            ErrorCode.CONFLICT,
            "the measurement at that instant was retracted already",
            ["measuredAt"],
        )
    if p.role == "SERVICE":
        standing = [m for m in standing if m.caller == caller_of(p)]
        if not standing:
            raise forbidden(
                "a service key retracts only the measurements it recorded", "measuredAt"
            )
    ids = [m.id for m in standing]
    made = (await session.execute(_MADE_BY, {"org": org, "ids": ids})).all()
    for c in made:
        if c.cycle_status == CycleStatus.CLOSED:
            raise Rejected(
                ErrorCode.CYCLE_CLOSED,
                f"this measurement made a check-in in cycle {c.cycle_name!r}, which is "
                "closed and read-only",
                ["measuredAt"],
            )
    # The key results, in id order (the check-in's lock order), before their chains.
    kr_ids = sorted({c.key_result_id for c in made})
    locked: list[tuple[KeyResult, Cycle]] = []
    if kr_ids:
        locked = [
            (row[0], row[1])
            for row in (
                await session.execute(
                    select(KeyResult, Cycle)
                    .join(Objective, col(Objective.id) == col(KeyResult.objective_id))
                    .join(Cycle, col(Cycle.id) == col(Objective.cycle_id))
                    .where(col(KeyResult.id).in_(kr_ids), col(KeyResult.organization_id) == org)
                    .order_by(col(KeyResult.id))
                    .with_for_update(of=KeyResult)
                    .execution_options(populate_existing=True)
                )
            ).all()
        ]
    now = common.now()
    who = {"now": now, "user": p.user_id, "api_key": p.api_key_id, "reason": reason, "org": org}
    retracted = list((await session.execute(_RETRACT_MEASUREMENTS, {**who, "ids": ids})).all())
    check_in_ids = [c.id for c in made]
    rows: list[CheckIn] = []
    if check_in_ids:
        await session.execute(_RETRACT_CHECK_INS, {**who, "ids": check_in_ids})
        rows = list(
            (
                await session.execute(
                    select(CheckIn)
                    .where(col(CheckIn.id).in_(check_in_ids), col(CheckIn.organization_id) == org)
                    .order_by(col(CheckIn.id))
                    .execution_options(populate_existing=True)
                )
            ).scalars()
        )
    previous = {common.id_of(kr): kr.progress for kr, _ in locked}
    for kr, _ in locked:
        await _settle(session, p, kr)
    rolled = await common.roll_up(session, p, sorted({kr.objective_id for kr, _ in locked}))
    await events.record(
        session,
        p,
        org,
        events.measurement_retracted(
            metric.id, metric.key, at.isoformat(), len(ids), len(check_in_ids), reason
        ),
    )
    for kr, cycle in locked:
        pk = common.id_of(kr)
        mine = [c for c in made if c.key_result_id == pk]
        last = mine[-1]
        chain = rolled.chain(kr.objective_id)
        await events.record(
            session,
            p,
            org,
            events.check_in_retracted(
                pk,
                last.id,
                last.value,
                reason,
                [progress_change(kr, previous[pk], cycle, p), *chain.changes],
                chain.scope(),
                check_ins=len(mine),
            ),
        )
    return RetractedMeasurement(max(retracted, key=lambda m: m.id), rows)
