"""Metrics defined and bound: creating one (unique by key in the organization), finding
one, binding a key result to one; and the error of a refused batch of measurements.

Each measurement becomes a check-in on every key result bound to its metric, and
whoever may edit a key result may bind it, so the key results one metric feeds are
bounded (`max_bound`, OKR_MAX_KEY_RESULTS_PER_METRIC): those in cycles not yet CLOSED,
the ones a measurement can still reach. Binds to one metric take its advisory lock, so
two at once cannot both take the last place."""

from __future__ import annotations

import re

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import events, sql
from service.access import require_admin, require_edit_objective
from service.domain.errors import ErrorCode, Rejected, invalid, not_found
from service.domain.principal import Principal
from service.models import KeyResult, Metric
from service.usecases import commands, common
from service.usecases.common import MAX_NAME, MAX_TEXT, MAX_UNIT, optional_text, required_text

KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,99}$")
MAX_KEY_RESULTS_PER_METRIC = 25  # the default of OKR_MAX_KEY_RESULTS_PER_METRIC

_BOUND_COUNT = text(
    """
    SELECT count(*) FROM key_result k
    JOIN objective o ON o.id = k.objective_id AND o.organization_id = :org
    JOIN cycle c ON c.id = o.cycle_id AND c.organization_id = :org
    WHERE k.organization_id = :org AND k.metric_id = :metric AND c.status <> 'CLOSED'
    """
)


class BatchRejected(Rejected):
    """Several items of a batch refused at once; the first is the exception's own."""

    def __init__(self, errors: list[Rejected]) -> None:
        first = errors[0]
        super().__init__(first.code, first.message, first.field)
        self.errors = errors


def metric_key(value: str | None, field: str = "key") -> str:
    key = value or ""
    if not KEY.fullmatch(key):  # taken as sent: " cost" is not "cost"
        raise invalid(
            f"{field} must start with a lowercase letter and hold at most 100 lowercase "
            "letters, digits, '_', '.' or '-' (e.g. cost_per_order)",
            field,
        )
    return key


# --- create and bind ----------------------------------------------------------------------


async def create_metric(session: AsyncSession, p: Principal, cmd: commands.CreateMetric) -> Metric:
    require_admin(p)
    key = metric_key(cmd.key)
    name = required_text(cmd.name, "name", MAX_NAME)
    unit = optional_text(cmd.unit, "unit", MAX_UNIT)
    description = optional_text(cmd.description, "description", MAX_TEXT)
    row = (
        await session.scalars(
            pg_insert(Metric)
            .values(
                organization_id=p.organization_id,
                key=key,
                name=name,
                unit=unit,
                description=description,
            )
            .on_conflict_do_nothing(constraint="uq_metric_organization_key")
            .returning(Metric)
        )
    ).one_or_none()
    if row is None:
        raise Rejected(ErrorCode.CONFLICT, f"a metric with the key {key!r} exists already", ["key"])
    await events.record(
        session, p, p.organization_id, events.metric_created(common.id_of(row), key, name, unit)
    )
    return row


async def metric(session: AsyncSession, p: Principal, metric_id: int, field: str) -> Metric:
    row = await session.get(Metric, metric_id)
    if row is None or row.organization_id != p.organization_id:
        raise not_found("metric", field)
    return row


async def metric_by_key(session: AsyncSession, p: Principal, key: str) -> Metric:
    row = await session.scalar(
        select(Metric).where(
            col(Metric.organization_id) == p.organization_id, col(Metric.key) == key
        )
    )
    if row is None:
        raise not_found(f"metric {key!r}", "key")
    return row


async def bind_key_result(
    session: AsyncSession,
    p: Principal,
    cmd: commands.BindKeyResult,
    *,
    max_bound: int = MAX_KEY_RESULTS_PER_METRIC,
) -> KeyResult:
    """Whoever may edit the key result may bind it (or unbind it: `metric_id` None). Its
    later check-ins then come from the metric; manual ones are still taken. A metric
    that already feeds `max_bound` key results (in cycles not CLOSED) takes no more."""
    metric_id = cmd.metric_id
    kr, objective, cycle = await common.key_result(session, p, cmd.key_result_id, lock=True)
    common.writable(cycle)
    require_edit_objective(p, objective.visibility, objective.team_id, objective.owner_id)
    common.live(kr)
    if metric_id is not None:
        await metric(session, p, metric_id, "metricId")
    if kr.metric_id == metric_id:
        return kr
    if metric_id is not None:
        await require_room_on(session, p, metric_id, max_bound)
        # Read after the metric's lock: an archive that went first is seen.
        archived = await session.scalar(
            select(col(Metric.archived_at))
            .where(col(Metric.id) == metric_id)
            .execution_options(populate_existing=True)
        )
        if archived is not None:
            raise invalid("the metric is archived", "metricId")
    before = kr.metric_id
    kr.metric_id = metric_id
    kr.version += 1
    kr.updated_at = common.now()
    await session.flush()
    scope = events.Scope.of_objective(
        common.id_of(objective), objective.team_id, common.id_of(cycle)
    )
    bound = events.key_result_bound(common.id_of(kr), before, metric_id, scope)
    await events.record(session, p, p.organization_id, bound)
    return kr


async def require_room_on(
    session: AsyncSession, p: Principal, metric_id: int, max_bound: int, adding: int = 1
) -> None:
    """Refuse to bind `adding` more key results (a bind, or a carry-over of bound key
    results) when the metric would then feed more than `max_bound`. Binds to one metric
    are serialised by an advisory lock, so two cannot both take the last place."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:k)"), {"k": sql.METRIC_BIND_LOCK + metric_id}
    )
    bound = await session.scalar(_BOUND_COUNT, {"org": p.organization_id, "metric": metric_id})
    if (bound or 0) + adding > max_bound:
        raise invalid(
            f"this metric already feeds {bound} key results, the most one metric may feed "
            f"(OKR_MAX_KEY_RESULTS_PER_METRIC is {max_bound}); unbind one first, or "
            "create another metric",
            "metricId",
        )


# --- update and archive -------------------------------------------------------------------


async def _locked_metric(session: AsyncSession, p: Principal, metric_id: int) -> Metric:
    row = (
        await session.execute(
            select(Metric)
            .where(col(Metric.id) == metric_id, col(Metric.organization_id) == p.organization_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is None:
        raise not_found("metric", "metricId")
    return row


async def update_metric(session: AsyncSession, p: Principal, cmd: commands.UpdateMetric) -> Metric:
    """Name, unit and description (the key is what services know it by: it stays)."""
    require_admin(p)
    clean: dict[str, str | None] = {}
    if cmd.name is not commands.KEEP:
        clean["name"] = required_text(cmd.name, "name", MAX_NAME)
    if cmd.unit is not commands.KEEP:
        clean["unit"] = optional_text(cmd.unit, "unit", MAX_UNIT)
    if cmd.description is not commands.KEEP:
        clean["description"] = optional_text(cmd.description, "description", MAX_TEXT)
    row = await _locked_metric(session, p, cmd.metric_id)
    before = {k: getattr(row, k) for k in clean}
    changed = {k: v for k, v in clean.items() if before[k] != v}
    if not changed:
        return row
    for key, value in changed.items():
        setattr(row, key, value)
    await session.flush()
    updated = events.metric_updated(common.id_of(row), {k: before[k] for k in changed}, changed)
    await events.record(session, p, p.organization_id, updated)
    return row


_UNBIND = text(
    """
    UPDATE key_result SET metric_id = NULL, version = version + 1, updated_at = :now
    WHERE metric_id = :metric AND organization_id = :org
    RETURNING id
    """
)


async def archive_metric(
    session: AsyncSession, p: Principal, cmd: commands.ArchiveMetric
) -> Metric:
    """Take a metric out of lists; every key result bound to it is unbound (it keeps
    its check-ins). Binds to the metric wait on its advisory lock, so none slips in."""
    require_admin(p)
    row = await _locked_metric(session, p, cmd.metric_id)
    if row.archived_at is not None:
        return row
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:k)"), {"k": sql.METRIC_BIND_LOCK + common.id_of(row)}
    )
    row.archived_at = common.now()
    await session.flush()
    unbound = sorted(
        (
            await session.execute(
                _UNBIND, {"metric": row.id, "org": p.organization_id, "now": row.archived_at}
            )
        )
        .scalars()
        .all()
    )
    archived = events.metric_archived(common.id_of(row), row.key, unbound)
    await events.record(session, p, p.organization_id, archived)
    return row
