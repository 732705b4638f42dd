"""Key results: define, redefine, check in, score. Each recomputes its objective and
every ancestor in the same transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import events, rollup
from service.access import require_check_in, require_edit_objective
from service.domain import facts, rules
from service.domain.enums import CycleStatus, KeyResultType, Measure
from service.domain.errors import invalid, not_found
from service.domain.principal import Principal
from service.models import CHECK_IN_IDEMPOTENCY, CheckIn, Cycle, KeyResult, Objective
from service.reads.visibility import can_see_objective
from service.usecases import commands, common
from service.usecases.check_in_rows import (
    CLOCK_SKEW,
    caller_of,
    construct,
    from_json,
    replay,
)
from service.usecases.commands import KEEP
from service.usecases.common import (
    MAX_IDEMPOTENCY_KEY,
    MAX_NOTE,
    MAX_TITLE,
    MAX_UNIT,
    optional_text,
    required_text,
)


def _definition(
    kind: KeyResultType, start: float | None, target: float | None
) -> tuple[float, float]:
    if kind is KeyResultType.MILESTONE:
        start = 0.0 if start is None else common.amount(start, "startValue")
        target = 1.0 if target is None else common.amount(target, "targetValue")
    else:
        if start is None:
            raise invalid(f"a {kind} key result needs a startValue", "startValue")
        if target is None:
            raise invalid(f"a {kind} key result needs a targetValue", "targetValue")
        start = common.amount(start, "startValue")
        target = common.amount(target, "targetValue")
    problem = rules.definition_error(kind, start, target)
    if problem:
        raise invalid(problem, "targetValue")
    return start, target


def _status(progress: float, checked_in: bool, cycle: Cycle, p: Principal) -> str:
    return str(facts.status(progress, checked_in, cycle, p.thresholds, common.now()))


def progress_change(kr: KeyResult, previous: float, cycle: Cycle, p: Principal) -> dict[str, Any]:
    """The key result's entry in an event's `changes` (its chain's follow it)."""
    return {
        "type": "KeyResult",
        "id": kr.id,
        "previous": previous,
        "progress": kr.progress,
        "status": _status(kr.progress, kr.last_check_in_id is not None, cycle, p),
    }


def _measure(value: Measure | None) -> str:
    if value is None:
        raise invalid(f"measure must be one of {', '.join(Measure)}", "measure")
    return str(value)


async def create_key_result(
    session: AsyncSession, p: Principal, cmd: commands.CreateKeyResult
) -> KeyResult:
    title = required_text(cmd.title, "title", MAX_TITLE)
    kind = cmd.type
    measure = str(cmd.measure)
    unit = optional_text(cmd.unit, "unit", MAX_UNIT)
    start, target = _definition(kind, cmd.start_value, cmd.target_value)
    weight = common.weight(cmd.weight)
    objective_id, owner_id = cmd.objective_id, cmd.owner_id
    # The lock order (common.py): the new row's insert holds its objective's key, and
    # the roll-up its chain: the chain first, in id order.
    await common.lock_alignment(session, p.organization_id, shared=True)
    await common.lock_chain(session, p.organization_id, [objective_id])
    objective, cycle = await common.objective(session, p, objective_id)
    common.writable(cycle)
    require_edit_objective(p, objective.visibility, objective.team_id, objective.owner_id)
    if objective.archived_at is not None:
        raise invalid("the objective is archived", "objectiveId")
    if owner_id is not None:
        await common.user(session, p, owner_id, "ownerId")
    row = KeyResult(
        organization_id=p.organization_id,
        objective_id=objective_id,
        title=title,
        owner_id=owner_id,
        type=str(kind),
        measure=measure,
        unit=unit,
        start_value=start,
        target_value=target,
        current_value=start,
        weight=weight,
        progress=rules.key_result_progress(kind, start, target, start),
        external_key=cmd.external_key,
    )
    session.add(row)
    await session.flush()
    rolled = await common.roll_up(session, p, [objective_id])
    changes = [progress_change(row, row.progress, cycle, p), *rolled.changes]
    created = events.key_result_created(common.id_of(row), title, changes, rolled.scope())
    await events.record(session, p, p.organization_id, created)
    return row


async def _editable(
    session: AsyncSession, p: Principal, key_result_id: int
) -> tuple[KeyResult, Objective, Cycle]:
    kr, objective, cycle = await common.key_result(session, p, key_result_id, lock=True)
    common.writable(cycle)
    require_edit_objective(p, objective.visibility, objective.team_id, objective.owner_id)
    common.live(kr)
    return kr, objective, cycle


async def update_key_result(
    session: AsyncSession, p: Principal, cmd: commands.UpdateKeyResult
) -> KeyResult:
    kr, _objective, cycle = await _editable(session, p, cmd.key_result_id)
    common.check_version(kr.version, cmd.expected_version)
    clean: dict[str, Any] = {}
    if cmd.title is not KEEP:
        clean["title"] = required_text(cmd.title, "title", MAX_TITLE)
    if cmd.measure is not KEEP:
        clean["measure"] = _measure(cmd.measure)
    if cmd.unit is not KEEP:
        clean["unit"] = optional_text(cmd.unit, "unit", MAX_UNIT)
    if cmd.weight is not KEEP:
        clean["weight"] = common.weight(cmd.weight)
    if cmd.owner_id is not KEEP:
        if cmd.owner_id is not None:
            await common.user(session, p, cmd.owner_id, "ownerId")
        clean["owner_id"] = cmd.owner_id
    kind = KeyResultType(kr.type)
    if cmd.start_value is not KEEP or cmd.target_value is not KEEP:
        start, target = _definition(
            kind,
            kr.start_value if cmd.start_value is KEEP else cmd.start_value,
            kr.target_value if cmd.target_value is KEEP else cmd.target_value,
        )
        clean["start_value"], clean["target_value"] = start, target
    before = {k: getattr(kr, k) for k in clean}
    if before == clean:
        return kr
    previous = kr.progress
    for key, value in clean.items():
        setattr(kr, key, value)
    if kr.last_check_in_id is None:
        kr.current_value = kr.start_value  # nothing measured yet: it stands at its start
    kr.progress = rules.key_result_progress(kind, kr.start_value, kr.target_value, kr.current_value)
    kr.version += 1
    kr.updated_at = common.now()
    await session.flush()
    rolled = await common.roll_up(session, p, [kr.objective_id])
    changed = [progress_change(kr, previous, cycle, p), *rolled.changes]
    updated = events.key_result_updated(common.id_of(kr), before, clean, changed, rolled.scope())
    await events.record(session, p, p.organization_id, updated)
    return kr


# The organization's alignment lock, shared, first (the lock order, common.py): the
# function's row locks are taken once the subquery's row is there.
_CHECK_IN_READ = text(
    "SELECT okr_check_in_read(:org, :kr, :caller, :key) "
    "FROM (SELECT pg_advisory_xact_lock_shared(:alignment)) AS aligned"
)

# Everything a check-in writes, in one statement: the check-in, its key result, every
# objective of the chain whose numbers changed, and the outbox event with its NOTIFY.
# The chain is locked already (okr_check_in_read); the organization's row is bumped
# and locked here, last, until commit, so events keep a gapless sequence in commit
# order (service/events.py). ON CONFLICT DO NOTHING: should a writer that does not take
# the key result's lock ever race us to the same idempotency key, its row wins, nothing
# else is written and no row comes back.
_CHECK_IN_WRITE = text(
    f"""
    WITH ci AS (
        INSERT INTO check_in (id, organization_id, key_result_id, value, confidence, note,
                              author_id, api_key_id, caller, progress, idempotency_key,
                              measured_at, created_at)
        VALUES (:id, :org, :kr, :value, :confidence, :note, :author_id, :api_key_id,
                :caller, :progress, :key, :measured_at, :now)
        ON CONFLICT ON CONSTRAINT {CHECK_IN_IDEMPOTENCY} DO NOTHING
        RETURNING id
    ), kr AS (
        UPDATE key_result SET current_value = :current_value, progress = :kr_progress,
               confidence = :kr_confidence, last_check_in_id = :last_check_in_id,
               last_check_in_at = :now, updated_at = :now
        WHERE id = :kr AND organization_id = :org AND EXISTS (SELECT 1 FROM ci)
        RETURNING id
    ), chain AS (
        UPDATE objective AS o
        SET progress = v.progress, has_check_in = v.has_check_in, score = v.score
        FROM unnest(CAST(:objective_ids AS bigint[]), CAST(:objective_progress AS float8[]),
                    CAST(:objective_checked_in AS boolean[]),
                    CAST(:objective_score AS float8[])) AS v(id, progress, has_check_in, score)
        WHERE o.id = v.id AND o.organization_id = :org AND EXISTS (SELECT 1 FROM ci)
        RETURNING o.id
    ), s AS (
        UPDATE organization SET event_seq = event_seq + 1
        WHERE id = :org AND EXISTS (SELECT 1 FROM ci)
        RETURNING event_seq
    ), e AS (
        INSERT INTO event (organization_id, seq, kind, actor_user_id, actor_api_key_id,
                           subject_type, subject_id, check_in_id, payload, occurred_at)
        SELECT :org, s.event_seq, :event_kind, :event_user_id, :event_api_key_id,
               :event_subject_type, :event_subject_id, ci.id, CAST(:event_payload AS jsonb),
               :event_occurred_at
        FROM s, ci
        RETURNING seq
    )
    SELECT e.seq, pg_notify(:event_channel, CAST(:org AS text) || ':' || e.seq),
           (SELECT count(*) FROM kr) AS key_results, (SELECT count(*) FROM chain) AS objectives
    FROM e
    """
)


def _check_in_event(p: Principal, event: events.Event) -> dict[str, Any]:
    """The CHECK_IN outbox event's parameters (events.record's, prefixed `event_`), for
    the write statement above; the check-in's id comes from the statement itself."""
    return {f"event_{k}": v for k, v in events.parameters(p, event).items() if k != "check_in_id"}


async def check_in(
    session: AsyncSession, p: Principal, cmd: commands.CheckIn
) -> tuple[CheckIn, KeyResult]:
    """Record a value. A value may be backdated (`measured_at`) inside the cycle; the key
    result's current value is the one measured last.

    Idempotency keys belong to one key result and one caller. Authorization comes first;
    then the same key with the same value and instant returns the first check-in and
    writes nothing, and with anything else it is a CONFLICT. Retries racing each other
    queue on the key result's row lock, so the second finds the first's committed row.

    Two statements (DESIGN: bench/README.md): `okr_check_in_read` locks the key result,
    then the chain in id order, and reads them afresh; the roll-up is computed here by
    the pure rules; `_CHECK_IN_WRITE` writes everything and the event."""
    key_result_id, measured_at = cmd.key_result_id, cmd.measured_at
    value = common.amount(cmd.value, "value")
    now = common.now()
    if measured_at is not None and measured_at.tzinfo is None:
        measured_at = measured_at.replace(tzinfo=UTC)
    if measured_at is not None and measured_at > now + CLOCK_SKEW:
        raise invalid("measuredAt must not lie in the future", "measuredAt")
    confidence = common.fraction(cmd.confidence, "confidence")
    note = optional_text(cmd.note, "note", MAX_NOTE)
    idempotency_key = cmd.idempotency_key
    if idempotency_key is not None:
        idempotency_key = required_text(idempotency_key, "idempotencyKey", MAX_IDEMPOTENCY_KEY)
    caller = caller_of(p)

    raw = (
        await session.execute(
            _CHECK_IN_READ,
            {
                "org": p.organization_id,
                "kr": key_result_id,
                "caller": caller,
                "key": idempotency_key,
                "alignment": common.alignment_key(p.organization_id),
            },
        )
    ).scalar_one()
    if raw is None:
        raise not_found("key result", "keyResultId")
    read = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    kr = from_json(KeyResult, read["key_result"])
    objective = from_json(Objective, read["objective"])
    cycle = from_json(Cycle, read["cycle"])
    # A service posts its numbers to any key result of its organization (docs/design.md,
    # "Access"), seen or not; the payload then shows nothing of a hidden one. A key
    # limited to teams is answered as a member of them is.
    if not p.is_trusted_service and not can_see_objective(
        p, objective.visibility, objective.team_id, objective.owner_id
    ):
        raise not_found("key result", "keyResultId")
    require_check_in(p, objective.visibility, objective.team_id, objective.owner_id, kr.owner_id)
    kind = KeyResultType(kr.type)
    problem = rules.value_error(kind, value)
    if problem:
        raise invalid(problem, "value")
    if read["earlier"] is not None:
        earlier = from_json(CheckIn, read["earlier"])
        replay(earlier, value, measured_at)
        return earlier, kr
    common.writable(cycle)
    common.live(kr)
    if not rules.accepts_check_ins(CycleStatus(cycle.status)):
        raise invalid(
            f"check-ins are taken while the cycle is ACTIVE or in REVIEW (it is {cycle.status})",
            "keyResultId",
        )
    if measured_at is not None:
        start, end = rules.cycle_bounds(cycle.starts_on, cycle.ends_on)
        if not start <= measured_at < end:
            raise invalid("measuredAt must lie inside the cycle", "measuredAt")
    progress = rules.key_result_progress(kind, kr.start_value, kr.target_value, value)
    row = construct(
        CheckIn,
        dict(
            id=read["next_id"],
            organization_id=p.organization_id,
            key_result_id=kr.id,
            value=value,
            confidence=confidence,
            note=note,
            author_id=p.user_id,
            api_key_id=p.api_key_id,
            caller=caller,
            progress=progress,
            idempotency_key=idempotency_key,
            measured_at=measured_at or now,
            created_at=now,
        ),
    )
    # Measured last (ids only grow, and every check-in of this key result queues on its
    # lock): then it is the current value.
    latest = read["latest"]
    assert row.measured_at is not None and row.id is not None
    if latest is None or (row.measured_at, row.id) > (
        datetime.fromisoformat(latest[0]),
        latest[1],
    ):
        kr.current_value = value
        kr.progress = progress
        kr.confidence = confidence
        kr.last_check_in_id = row.id
    previous = float(read["key_result"]["progress"])
    kr.last_check_in_at = now  # someone checked in now, whatever the value's date
    kr.updated_at = now

    chain = rollup.Chain.of(read["chain"])
    rolled, updates = rollup.compute(
        chain,
        thresholds=p.thresholds,
        now=now,
        fresh_parts={
            ("KeyResult", common.id_of(kr)): (
                kr.progress,
                kr.last_check_in_id is not None,
                kr.score,
            )
        },
    )
    checked = events.checked_in(
        common.id_of(kr),
        common.id_of(row),
        value,
        [progress_change(kr, previous, cycle, p), *rolled.changes],
        rolled.scope(),
    )
    written = (
        await session.execute(
            _CHECK_IN_WRITE,
            {
                "id": row.id,
                "org": p.organization_id,
                "kr": kr.id,
                "value": value,
                "confidence": confidence,
                "note": note,
                "author_id": p.user_id,
                "api_key_id": p.api_key_id,
                "caller": caller,
                "progress": progress,
                "key": idempotency_key,
                "measured_at": row.measured_at,
                "now": now,
                "current_value": kr.current_value,
                "kr_progress": kr.progress,
                "kr_confidence": kr.confidence,
                "last_check_in_id": kr.last_check_in_id,
                "objective_ids": [u["id"] for u in updates],
                "objective_progress": [u["progress"] for u in updates],
                "objective_checked_in": [u["has_check_in"] for u in updates],
                "objective_score": [u["score"] for u in updates],
                # The outbox event: kept apart so its shape stays events.py's business.
                **_check_in_event(p, checked),
            },
        )
    ).one_or_none()
    if written is None:
        earlier_row = await _earlier(session, p, common.id_of(kr), caller, idempotency_key)
        if earlier_row is None:
            raise AssertionError("a check-in conflicted with none")
        replay(earlier_row, value, measured_at)
        return earlier_row, kr
    return row, kr


async def _earlier(
    session: AsyncSession, p: Principal, key_result_id: int, caller: str, key: str | None
) -> CheckIn | None:
    """The caller's check-in under this key, read fresh (after the key result's lock)."""
    return (
        await session.execute(
            select(CheckIn)
            .where(
                col(CheckIn.key_result_id) == key_result_id,
                col(CheckIn.caller) == caller,
                col(CheckIn.idempotency_key) == key,
                col(CheckIn.organization_id) == p.organization_id,
            )
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()


async def score_key_result(
    session: AsyncSession, p: Principal, cmd: commands.ScoreKeyResult
) -> KeyResult:
    score, reason = cmd.score, cmd.reason
    kr, _objective, cycle = await _editable(session, p, cmd.key_result_id)
    if cycle.status != CycleStatus.REVIEW:
        raise invalid(
            f"scoring happens while the cycle is in REVIEW (it is {cycle.status})", "keyResultId"
        )
    value = common.fraction(score, "score")
    if value is None:
        raise invalid("score must lie between 0 and 1", "score")
    before = kr.score
    kr.score = value
    kr.score_reason = optional_text(reason, "reason", MAX_NOTE)
    kr.updated_at = common.now()
    await session.flush()
    rolled = await common.roll_up(session, p, [kr.objective_id])
    scored = events.key_result_scored(
        common.id_of(kr), before, value, kr.score_reason, rolled.scope()
    )
    await events.record(session, p, p.organization_id, scored)
    return kr
