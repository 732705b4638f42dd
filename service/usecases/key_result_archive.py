"""Archiving a key result: it leaves lists and its objective's roll-up, and keeps its
check-ins and history (readable by id). The chain rolls up again in the same
transaction, with a check-in's lock order: the key result's row first, then the chain
in id order (service/rollup.py)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from service import events
from service.access import require_edit_objective
from service.domain.principal import Principal
from service.models import KeyResult
from service.usecases import commands, common


async def archive_key_result(
    session: AsyncSession, p: Principal, cmd: commands.ArchiveKeyResult
) -> KeyResult:
    """Needs the right to edit the objective. Archiving an archived one writes nothing."""
    kr, objective, cycle = await common.key_result(session, p, cmd.key_result_id, lock=True)
    common.writable(cycle)
    require_edit_objective(p, objective.visibility, objective.team_id, objective.owner_id)
    if kr.archived_at is not None:
        return kr
    kr.archived_at = common.now()
    kr.version += 1
    kr.updated_at = kr.archived_at
    await session.flush()
    rolled = await common.roll_up(session, p, [kr.objective_id])
    archived = events.key_result_archived(common.id_of(kr), rolled.changes, rolled.scope())
    await events.record(session, p, p.organization_id, archived)
    return kr
