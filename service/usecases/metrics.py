"""Metrics: numbers other systems own, posted once and fed to every key result bound to
them (docs/design.md, "Metrics").

`record_measurements` takes a batch (up to MAX_BATCH) in one transaction, all or
nothing. It is built for backfills: every statement works on the whole batch (the
rows go in through `unnest`), each affected chain rolls up once, and each affected
key result gets one CHECK_IN event for the batch, so subscribers see one change per
key result, not one per value.

Locks, in one order: the batch's metrics (FOR NO KEY UPDATE, so concurrent batches of
one metric queue and a retry finds its first run's rows, while binding a key result,
whose foreign key takes only KEY SHARE, is not held up), then the bound key results in
id order, then their chains in id order (service/rollup.py), as `check_in` does.

What one batch may write is bounded: it becomes measurements times bound key results
check-ins, and whoever may edit a key result may bind it, so a batch that would write
more than `max_check_ins` (OKR_MAX_BATCH_CHECK_INS) is refused whole, counted before
anything is written; binding is bounded per metric beside (metric_definitions.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service import events
from service.access import require_record_measurements
from service.domain import facts, rules
from service.domain.enums import KeyResultType
from service.domain.errors import ErrorCode, Rejected, invalid
from service.domain.principal import Principal
from service.usecases import common
from service.usecases.check_in_rows import caller_of, same_as_before
from service.usecases.commands import MeasurementInput as MeasurementInput
from service.usecases.measurement_items import (
    CheckInRow,
    Item,
    at,
    checked,
    refuse,
)
from service.usecases.measurement_items import (
    Recorded as Recorded,
)

# Defining and binding metrics live beside (metric_definitions.py); re-exported here.
from service.usecases.metric_definitions import (
    MAX_KEY_RESULTS_PER_METRIC as MAX_KEY_RESULTS_PER_METRIC,
)
from service.usecases.metric_definitions import BatchRejected as BatchRejected
from service.usecases.metric_definitions import bind_key_result as bind_key_result
from service.usecases.metric_definitions import create_metric as create_metric
from service.usecases.metric_definitions import metric_by_key as metric_by_key

MAX_BATCH = 1000
MAX_BATCH_CHECK_INS = 10_000  # the default of OKR_MAX_BATCH_CHECK_INS


# --- record ---------------------------------------------------------------------------------


_LOCK_METRICS = text(
    "SELECT id, key FROM metric WHERE organization_id = :org AND key = ANY(:keys) "
    "ORDER BY id FOR NO KEY UPDATE"
)
_EARLIER = text(
    "SELECT * FROM measurement WHERE organization_id = :org AND caller = :caller "
    "AND metric_id = ANY(:metrics) AND idempotency_key = ANY(:keys)"
)
# Ids are drawn first so each row comes back beside its place in the batch.
_INSERT_MEASUREMENTS = text(
    """
    WITH t AS MATERIALIZED (
        SELECT nextval(pg_get_serial_sequence('measurement', 'id')) AS id, u.*
        FROM unnest(CAST(:metric AS bigint[]), CAST(:value AS double precision[]),
                    CAST(:measured_at AS timestamptz[]), CAST(:source AS text[]),
                    CAST(:key AS text[]))
             WITH ORDINALITY AS u(metric_id, value, measured_at, source, idempotency_key, n)
    ), ins AS (
        INSERT INTO measurement (id, organization_id, metric_id, value, measured_at, source,
                                 caller, idempotency_key, created_at)
        SELECT id, :org, metric_id, value, measured_at, source, :caller, idempotency_key, :now
        FROM t
        RETURNING *
    )
    SELECT ins.* FROM ins JOIN t ON t.id = ins.id ORDER BY t.n
    """
)
_BOUND = text(
    """
    SELECT k.id, k.objective_id, k.metric_id, k.type, k.start_value, k.target_value,
           k.progress, k.current_value, k.confidence, k.last_check_in_id,
           c.starts_on, c.ends_on
    FROM key_result k
    JOIN objective o ON o.id = k.objective_id AND o.organization_id = :org
    JOIN cycle c ON c.id = o.cycle_id AND c.organization_id = :org
    WHERE k.organization_id = :org AND k.metric_id = ANY(:metrics)
      AND c.status IN ('ACTIVE', 'REVIEW') AND k.archived_at IS NULL
    ORDER BY k.id
    FOR UPDATE OF k
    """
)
# The check-ins' ids are drawn first, so the rows need not come back: the batch knows
# everything else it writes (at 10,000 rows, RETURNING and its join cost more than the
# insert).
_CHECK_IN_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('check_in', 'id')) FROM generate_series(1, :n)"
)
_INSERT_CHECK_INS = text(
    """
    INSERT INTO check_in (id, organization_id, key_result_id, value, note, author_id,
                          api_key_id, progress, caller, measured_at, created_at,
                          measurement_id)
    SELECT u.id, :org, u.key_result_id, u.value, u.note, :author, :api_key, u.progress,
           :caller, u.measured_at, :now, u.measurement_id
    FROM unnest(CAST(:id AS bigint[]), CAST(:key_result AS bigint[]),
                CAST(:value AS double precision[]), CAST(:progress AS double precision[]),
                CAST(:measured_at AS timestamptz[]), CAST(:note AS text[]),
                CAST(:measurement AS bigint[]))
         AS u(id, key_result_id, value, progress, measured_at, note, measurement_id)
    """
)
# Each key result's latest check-in not retracted, one index probe each.
_LATEST = text(
    """
    SELECT k.id AS key_result_id, c.id, c.value, c.progress, c.confidence
    FROM unnest(CAST(:ids AS bigint[])) AS k(id)
    CROSS JOIN LATERAL (
        SELECT id, value, progress, confidence FROM check_in
        WHERE key_result_id = k.id AND organization_id = :org AND retracted_at IS NULL
        ORDER BY measured_at DESC, id DESC LIMIT 1
    ) c
    """
)
_UPDATE_KEY_RESULT = text(
    "UPDATE key_result SET current_value = :value, progress = :progress, "
    "confidence = :confidence, last_check_in_id = :last, last_check_in_at = :now, "
    "updated_at = :now WHERE id = :id AND organization_id = :org"
)


async def record_measurements(
    session: AsyncSession,
    p: Principal,
    batch: list[MeasurementInput],
    *,
    max_check_ins: int = MAX_BATCH_CHECK_INS,
) -> Recorded:
    """Store each measurement, and make it a check-in on every key result bound to its
    metric whose cycle is ACTIVE or in REVIEW and contains its instant (one outside every
    such cycle is kept as record only). All of the batch or none of it: every refused
    item is named by its index, and nothing is written.

    Idempotency keys are per metric and caller: the same key with the same value and
    instant returns the first measurement and writes nothing; with anything else it
    is a CONFLICT.

    A batch that would write more than `max_check_ins` check-ins is refused whole,
    before anything is written."""
    require_record_measurements(p)  # authorization first, whatever the keys
    if not batch:
        raise invalid("at least one measurement is needed", "measurements")
    if len(batch) > MAX_BATCH:
        raise invalid(
            f"at most {MAX_BATCH} measurements at once (got {len(batch)}); "
            "send the rest in another batch",
            "measurements",
        )
    now = common.now()
    org = p.organization_id
    caller = caller_of(p)
    errors: list[Rejected] = []
    items: list[Item] = []
    for i, m in enumerate(batch):
        try:
            items.append(checked(i, m, now))
        except Rejected as exc:
            errors.append(exc)

    keys = sorted({it.key for it in items})
    # The lock order (common.py): the alignment lock, shared, before the metrics, the
    # bound key results (id order) and their chains.
    await common.lock_alignment(session, org, shared=True)
    found = {
        r.key: r.id
        for r in (await session.execute(_LOCK_METRICS, {"org": org, "keys": keys})).all()
    }
    seen: dict[tuple[int, str], int] = {}
    for it in items:
        if it.key not in found:
            errors.append(
                Rejected(
                    ErrorCode.NOT_FOUND,
                    f"measurement {it.index}: metric {it.key!r} not found",
                    at(it.index, "metricKey"),
                )
            )
            continue
        it.metric_id = found[it.key]
        if it.idempotency_key is not None:
            pair = (it.metric_id, it.idempotency_key)
            if pair in seen:
                errors.append(
                    invalid(
                        f"measurement {it.index}: the idempotency key of measurement "
                        f"{seen[pair]} again, for the same metric; one batch uses a key once",
                        *at(it.index, "idempotencyKey"),
                    )
                )
            else:
                seen[pair] = it.index
    refuse(errors)

    # Retries: items whose key this caller used before on this metric.
    replayed: dict[int, Any] = {}
    if seen:
        earlier = {
            (r.metric_id, r.idempotency_key): r
            for r in (
                await session.execute(
                    _EARLIER,
                    {
                        "org": org,
                        "caller": caller,
                        "metrics": sorted({m for m, _ in seen}),
                        "keys": sorted({k for _, k in seen}),
                    },
                )
            ).all()
        }
        for it in items:
            first = earlier.get((it.metric_id, it.idempotency_key or ""))
            if first is None or it.idempotency_key is None:
                continue
            if not same_as_before(first, it.value, it.measured_at):
                errors.append(
                    Rejected(
                        ErrorCode.CONFLICT,
                        f"measurement {it.index}: this idempotency key was already used for "
                        "a measurement of this metric with a different value or instant; "
                        "use a new key for a new measurement",
                        at(it.index, "idempotencyKey"),
                    )
                )
            replayed[it.index] = first
        refuse(errors)

    fresh = [it for it in items if it.index not in replayed]
    stored: dict[int, Any] = dict(replayed)
    result = Recorded()
    plan = await _plan(session, org, fresh, now) if fresh else []
    if len(plan) > max_check_ins:
        raise invalid(
            f"this batch would write {len(plan)} check-ins (each measurement on every key "
            f"result bound to its metric), more than the {max_check_ins} one batch may "
            "write (OKR_MAX_BATCH_CHECK_INS); send fewer measurements per batch",
            "measurements",
        )
    if fresh:
        rows = list(
            (
                await session.execute(
                    _INSERT_MEASUREMENTS,
                    {
                        "org": org,
                        "caller": caller,
                        "now": now,
                        "metric": [it.metric_id for it in fresh],
                        "value": [it.value for it in fresh],
                        "measured_at": [it.measured_at or now for it in fresh],
                        "source": [it.source for it in fresh],
                        "key": [it.idempotency_key for it in fresh],
                    },
                )
            ).all()
        )
        for it, row in zip(fresh, rows, strict=True):
            stored[it.index] = row
        result.check_ins, progress_events = await _check_ins(session, p, caller, now, plan, stored)
        # Every event of the batch in one statement, in the order they always had: one
        # round trip while the chains' locks are held, not one per event.
        recorded = _recorded_events(fresh, rows, found)
        await events.record_all(session, p, org, recorded + progress_events)
    result.measurements = [stored[it.index] for it in items]
    return result


async def _plan(
    session: AsyncSession, org: int, fresh: list[Item], now: datetime
) -> list[tuple[Any, Item, float]]:
    """Every check-in the new measurements will make, as (bound key result, item, its
    progress), before anything is written: its length is what the batch costs. Locks
    the bound key results (in id order)."""
    metrics = sorted({it.metric_id for it in fresh})
    bound = (await session.execute(_BOUND, {"org": org, "metrics": metrics})).all()
    if not bound:
        return []
    by_metric: dict[int, list[Item]] = defaultdict(list)
    for it in fresh:
        by_metric[it.metric_id].append(it)
    plan: list[tuple[Any, Item, float]] = []
    problems: dict[tuple[KeyResultType, float], str | None] = {}
    for kr in bound:
        kind = KeyResultType(kr.type)
        start, end = rules.cycle_bounds(kr.starts_on, kr.ends_on)
        for it in by_metric[kr.metric_id]:
            if not start <= (it.measured_at or now) < end:
                continue
            if (kind, it.value) not in problems:  # the same for every key result of a kind
                problems[(kind, it.value)] = rules.value_error(kind, it.value)
            if problems[(kind, it.value)]:
                # A value this key result cannot take (a MILESTONE takes 0 or 1) stays
                # record for it. Refusing the batch would let whoever binds a milestone
                # stop the metric's feed for everyone, and name a key result the poster
                # may not see.
                continue
            progress = rules.key_result_progress(kind, kr.start_value, kr.target_value, it.value)
            plan.append((kr, it, progress))
    return plan


async def _check_ins(
    session: AsyncSession,
    p: Principal,
    caller: str,
    now: datetime,
    planned: list[tuple[Any, Item, float]],
    measured: dict[int, Any],
) -> tuple[list[Any], list[events.Event]]:
    """The planned check-ins written, each from its stored measurement (`measured`, by
    the item's index); each chain rolls up once. Returns the check-ins and, per affected
    key result, its one CHECK_IN event (key result, payload, its last check-in of the
    batch) for the caller to write."""
    org = p.organization_id
    if not planned:
        return [], []
    plan = [(kr, it, measured[it.index], progress) for kr, it, progress in planned]
    ids = list((await session.execute(_CHECK_IN_IDS, {"n": len(plan)})).scalars())
    check_ins = [
        CheckInRow(
            id=pk,
            organization_id=org,
            key_result_id=kr.id,
            value=it.value,
            confidence=None,
            note=it.source,
            author_id=p.user_id,
            api_key_id=p.api_key_id,
            progress=progress,
            idempotency_key=None,
            caller=caller,
            measured_at=row.measured_at,
            created_at=now,
            measurement_id=row.id,
        )
        for pk, (kr, it, row, progress) in zip(ids, plan, strict=True)
    ]
    await session.execute(
        _INSERT_CHECK_INS,
        {
            "org": org,
            "author": p.user_id,
            "api_key": p.api_key_id,
            "caller": caller,
            "now": now,
            "id": ids,
            "key_result": [c.key_result_id for c in check_ins],
            "value": [c.value for c in check_ins],
            "progress": [c.progress for c in check_ins],
            "measured_at": [c.measured_at for c in check_ins],
            "note": [c.note for c in check_ins],
            "measurement": [c.measurement_id for c in check_ins],
        },
    )

    affected = {kr.id: kr for kr, _, _, _ in plan}
    new_ids = {c.id for c in check_ins}
    last_of: dict[int, Any] = {}  # each key result's last check-in of this batch
    made: Counter[int] = Counter()
    for c in check_ins:
        made[c.key_result_id] += 1
        last = last_of.get(c.key_result_id)
        if last is None or (c.measured_at, c.id) > (last.measured_at, last.id):
            last_of[c.key_result_id] = c
    latest = {
        r.key_result_id: r
        for r in (await session.execute(_LATEST, {"org": org, "ids": sorted(affected)})).all()
    }
    updates = []
    after: dict[int, float] = {}
    for kr_id, kr in sorted(affected.items()):
        top = latest[kr_id]
        if top.id in new_ids:  # measured last: it is the current value
            value, progress, confidence, last = top.value, top.progress, top.confidence, top.id
        else:
            value, progress, confidence, last = (
                kr.current_value,
                kr.progress,
                kr.confidence,
                kr.last_check_in_id,
            )
        after[kr_id] = progress
        updates.append(
            {
                "id": kr_id,
                "org": org,
                "value": value,
                "progress": progress,
                "confidence": confidence,
                "last": last,
                "now": now,
            }
        )
    await session.execute(_UPDATE_KEY_RESULT, updates)
    rolled = await common.roll_up(session, p, sorted({kr.objective_id for kr in affected.values()}))
    progress_events = []
    for kr_id, kr in sorted(affected.items()):
        change = {
            "type": "KeyResult",
            "id": kr_id,
            "previous": kr.progress,
            "progress": after[kr_id],
            "status": str(facts.status(after[kr_id], True, kr, p.thresholds, now)),
        }
        last = last_of[kr_id]
        chain = rolled.chain(kr.objective_id)
        progress_events.append(
            events.checked_in(
                kr_id,
                last.id,
                last.value,
                [change, *chain.changes],
                chain.scope(),
                check_ins=made[kr_id],
            )
        )
    return list(check_ins), progress_events


def _recorded_events(
    fresh: list[Item], rows: list[Any], found: dict[str, int]
) -> list[events.Event]:
    """One MEASUREMENTS_RECORDED per metric of the batch: the outbox sees every write, so
    a batch that fed no key result still moves the organization's position."""
    counts: dict[int, int] = defaultdict(int)
    last: dict[int, Any] = {}
    for it, row in zip(fresh, rows, strict=True):
        counts[it.metric_id] += 1
        top = last.get(it.metric_id)
        if top is None or (row.measured_at, row.id) > (top.measured_at, top.id):
            last[it.metric_id] = row
    keys = {v: k for k, v in found.items()}
    return [
        events.measurements_recorded(
            metric_id,
            keys[metric_id],
            counts[metric_id],
            last[metric_id].value,
            last[metric_id].measured_at.isoformat(),
        )
        for metric_id in sorted(counts)
    ]
