"""Metrics defined and bound: creating one (unique by key in the organization), finding
one, binding a key result to one; and the error of a refused batch of measurements."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import events
from service.access import require_admin, require_edit_objective
from service.domain.errors import ErrorCode, Rejected, invalid, not_found
from service.domain.principal import Principal
from service.models import KeyResult, Metric
from service.usecases import commands, common
from service.usecases.common import MAX_NAME, MAX_TEXT, MAX_UNIT, optional_text, required_text

KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,99}$")


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
    session: AsyncSession, p: Principal, cmd: commands.BindKeyResult
) -> KeyResult:
    """Whoever may edit the key result may bind it (or unbind it: `metric_id` None). Its
    later check-ins then come from the metric; manual ones are still taken."""
    metric_id = cmd.metric_id
    kr, objective, cycle = await common.key_result(session, p, cmd.key_result_id, lock=True)
    common.writable(cycle)
    require_edit_objective(p, objective.visibility, objective.team_id, objective.owner_id)
    if metric_id is not None:
        await metric(session, p, metric_id, "metricId")
    if kr.metric_id == metric_id:
        return kr
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
