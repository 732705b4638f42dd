"""Comments on objectives and key results."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from service import events
from service.access import require_comment
from service.domain.principal import Principal
from service.models import Comment
from service.usecases import commands, common
from service.usecases.common import MAX_TEXT, required_text


async def add_comment(session: AsyncSession, p: Principal, cmd: commands.AddComment) -> Comment:
    body = required_text(cmd.body, "body", MAX_TEXT)
    objective_id, key_result_id = cmd.objective_id, cmd.key_result_id
    if key_result_id is not None:
        _kr, objective, cycle = await common.key_result(session, p, key_result_id, "subjectId")
    else:
        assert objective_id is not None
        objective, cycle = await common.objective(session, p, objective_id, "subjectId")
    require_comment(p)
    common.writable(cycle)
    row = Comment(
        organization_id=p.organization_id,
        objective_id=objective_id,
        key_result_id=key_result_id,
        author_id=p.user_id,
        body=body,
    )
    session.add(row)
    await session.flush()
    scope = events.Scope.of_objective(
        common.id_of(objective), objective.team_id, objective.cycle_id
    )
    await events.record(
        session, p, p.organization_id, events.comment_added(common.id_of(row), key_result_id, scope)
    )
    return row
