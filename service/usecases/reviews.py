"""The end of a cycle and the next one: carrying an objective over, and the check-in
cadence the reminders follow."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import events
from service.access import can_edit_objective, require_admin, require_edit_objective
from service.domain import rules
from service.domain.enums import KeyResultType
from service.domain.errors import ErrorCode, Rejected, forbidden, invalid
from service.domain.principal import Principal
from service.models import KeyResult, Objective, Organization, Team
from service.usecases import commands, common, metric_definitions


async def carry_over_objective(
    session: AsyncSession,
    p: Principal,
    cmd: commands.CarryOver,
    *,
    max_bound: int = metric_definitions.MAX_KEY_RESULTS_PER_METRIC,
) -> tuple[Objective, list[KeyResult]]:
    """Copy an objective and the chosen key results into a later cycle: each key result
    starts from its last current value, with no check-ins; alignment is kept where the
    parent (or a child) was carried over too. A key result fed by a metric stays bound
    to it, within the metric's bound (`max_bound`) like any bind."""
    objective_id, to_cycle_id, key_result_ids = (
        cmd.objective_id,
        cmd.to_cycle_id,
        cmd.key_result_ids,
    )
    # Exclusive (the lock order, common.py): carrying over re-parents the children
    # carried before, as alignObjective does.
    await common.lock_alignment(session, p.organization_id)
    source, source_cycle = await common.objective(session, p, objective_id)
    require_edit_objective(p, source.visibility, source.team_id, source.owner_id)
    target = await common.cycle(session, p, to_cycle_id, "toCycleId")
    common.writable(target)
    if target.starts_on <= source_cycle.starts_on:
        raise invalid("carry over into a later cycle", "toCycleId")
    already = await session.scalar(
        select(col(Objective.id)).where(
            col(Objective.carried_from_id) == source.id,
            col(Objective.cycle_id) == target.id,
            col(Objective.organization_id) == p.organization_id,
        )
    )
    if already is not None:
        raise Rejected(
            ErrorCode.CONFLICT,
            "this objective was already carried over into that cycle",
            ["objectiveId"],
        )
    krs = (
        (
            await session.execute(
                select(KeyResult)
                .where(col(KeyResult.objective_id) == source.id)
                .order_by(col(KeyResult.id))
            )
        )
        .scalars()
        .all()
    )
    by_id = {k.id: k for k in krs}
    chosen = list(dict.fromkeys(key_result_ids))
    unknown = [k for k in chosen if k not in by_id]
    if unknown:
        raise invalid("keyResultIds must name key results of this objective", "keyResultIds")

    parent_id = None
    if source.parent_id is not None:
        parent_id = await session.scalar(
            select(col(Objective.id)).where(
                col(Objective.carried_from_id) == source.parent_id,
                col(Objective.cycle_id) == target.id,
                col(Objective.archived_at).is_(None),
                col(Objective.organization_id) == p.organization_id,
            )
        )
    if parent_id is not None and source.weight != 1:
        parent = await session.get(Objective, parent_id)
        assert parent is not None
        if not can_edit_objective(p, parent.visibility, parent.team_id, parent.owner_id):
            raise forbidden(
                f"its weight {source.weight:g} would count towards an objective you may not "
                "edit; an editor of that objective may carry it over",
                "objectiveId",
            )
    new = Objective(
        organization_id=p.organization_id,
        cycle_id=common.id_of(target),
        title=source.title,
        description=source.description,
        team_id=source.team_id,
        owner_id=source.owner_id,
        parent_id=parent_id,
        weight=source.weight,
        visibility=source.visibility,
        carried_from_id=source.id,
    )
    session.add(new)
    await session.flush()
    created: list[KeyResult] = []
    mapping: dict[int, int] = {}
    feeding = Counter(m for k in chosen if (m := by_id[k].metric_id) is not None)
    for metric_id, adding in sorted(feeding.items()):
        await metric_definitions.require_room_on(session, p, metric_id, max_bound, adding)
    for kr_id in chosen:
        old = by_id[kr_id]
        kind = KeyResultType(old.type)
        start = 0.0 if kind is KeyResultType.MILESTONE else old.current_value
        problem = rules.definition_error(kind, start, old.target_value)
        if problem:
            raise invalid(
                f"{old.title!r} cannot start from its last value {old.current_value:g}: {problem}",
                "keyResultIds",
            )
        kr = KeyResult(
            organization_id=p.organization_id,
            objective_id=common.id_of(new),
            title=old.title,
            owner_id=old.owner_id,
            type=old.type,
            measure=old.measure,
            unit=old.unit,
            start_value=start,
            target_value=old.target_value,
            current_value=start,
            weight=old.weight,
            progress=rules.key_result_progress(kind, start, old.target_value, start),
            carried_from_id=old.id,
            metric_id=old.metric_id,  # it keeps taking its metric's values
        )
        session.add(kr)
        created.append(kr)
    await session.flush()
    mapping = {
        old_id: common.id_of(k) for k in created if (old_id := k.carried_from_id) is not None
    }
    # Children carried over before their parent: align them under it now.
    children = select(col(Objective.id)).where(col(Objective.parent_id) == source.id)
    await session.execute(
        update(Objective)
        .where(
            col(Objective.cycle_id) == target.id,
            col(Objective.parent_id).is_(None),
            col(Objective.carried_from_id).in_(children),
            col(Objective.organization_id) == p.organization_id,
        )
        .values(parent_id=new.id)
    )
    rolled = await common.roll_up(session, p, [common.id_of(new)])
    carried = events.objective_carried_over(
        common.id_of(new),
        common.id_of(source),
        common.id_of(target),
        mapping,
        rolled.changes,
        rolled.scope(),
    )
    await events.record(session, p, p.organization_id, carried)
    return new, created


async def set_check_in_cadence(
    session: AsyncSession, p: Principal, cmd: commands.SetCheckInCadence
) -> commands.SetCheckInCadence:
    """The organization's cadence (team None), or a team's override (days None clears);
    returns the cadence as set."""
    team_id, days = cmd.team_id, cmd.days
    require_admin(p)
    if days is not None and not 1 <= days <= 366:
        raise invalid("days must lie between 1 and 366", "days")
    if team_id is None:
        if days is None:
            raise invalid("the organization's cadence needs a number of days", "days")
        await session.execute(
            update(Organization)
            .where(col(Organization.id) == p.organization_id)
            .values(check_in_cadence_days=days)
        )
    else:
        team = await common.team(session, p, team_id)
        await session.execute(
            update(Team).where(col(Team.id) == team.id).values(check_in_cadence_days=days)
        )
    changed = events.check_in_cadence_changed(p.organization_id, team_id, days)
    await events.record(session, p, p.organization_id, changed)
    return cmd
