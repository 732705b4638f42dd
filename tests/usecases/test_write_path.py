"""The check-in write path: two statements in its transaction whatever the depth of the
chain (one locks and reads, one writes everything and the event), and what they write
equals a fresh recomputation by the pure rules."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest
from sqlalchemy import text

from service.db import Database, count_statements
from service.domain import enums as domain_enums
from service.domain.errors import ErrorCode, Rejected
from service.usecases import commands, cycles, key_results, objectives
from service.verify import verify, verify_event_sequences
from tests.factories import Org


async def _chain(db: Database, org: Org, depth: int) -> int:
    p = org.admin
    cycle = await db.transaction(
        lambda s: cycles.create_cycle(
            s, p, commands.CreateCycle(f"C{depth}", date(2026, 1, 1), date(2026, 12, 31))
        )
    )
    await db.transaction(
        lambda s: cycles.set_cycle_status(
            s, p, commands.SetCycleStatus(cycle.id, domain_enums.CycleStatus.ACTIVE)
        )
    )
    parent = None
    for level in range(depth):
        row = await db.transaction(
            lambda s, parent=parent, level=level: objectives.create_objective(
                s,
                p,
                commands.CreateObjective(cycle_id=cycle.id, title=f"L{level}", parent_id=parent),
            )
        )
        parent = row.id
        # A sibling at each level, so every roll-up has more than one part.
        await db.transaction(
            lambda s, parent=parent: key_results.create_key_result(
                s,
                p,
                commands.CreateKeyResult(
                    objective_id=parent, title="Sibling", type=domain_enums.KeyResultType.MILESTONE
                ),
            )
        )
    assert parent is not None
    kr = await db.transaction(
        lambda s: key_results.create_key_result(
            s,
            p,
            commands.CreateKeyResult(
                objective_id=parent,
                title="Leaf",
                type=domain_enums.KeyResultType.INCREASE,
                start_value=0,
                target_value=10,
            ),
        )
    )
    assert kr.id is not None
    return kr.id


async def _statements_of_one_check_in(db: Database, org: Org, kr: int, value: float) -> int:
    async def run() -> int:
        counter = count_statements()
        await db.transaction(
            lambda s: key_results.check_in(
                s, org.admin, commands.CheckIn(key_result_id=kr, value=value)
            )
        )
        return counter.n

    return await asyncio.create_task(run())


async def test_a_check_in_costs_two_statements_at_any_depth(db: Database, org: Org):
    shallow = await _chain(db, org, 1)
    deep = await _chain(db, org, 6)
    assert await _statements_of_one_check_in(db, org, shallow, 3.0) == 2
    assert await _statements_of_one_check_in(db, org, deep, 7.0) == 2
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        assert mismatches == []
        assert await verify_event_sequences(conn) == []
        progress = (
            await conn.execute(
                text("SELECT progress, current_value FROM key_result WHERE id = :id"),
                {"id": deep},
            )
        ).one()
    assert progress.current_value == 7.0 and abs(progress.progress - 0.7) < 1e-12


async def test_the_event_carries_the_chain_and_the_check_in(db: Database, org: Org):
    kr = await _chain(db, org, 3)
    row, stored = await db.transaction(
        lambda s: key_results.check_in(
            s, org.admin, commands.CheckIn(key_result_id=kr, value=5.0, note="half")
        )
    )
    assert row.id is not None and stored.last_check_in_id == row.id
    async with db.connect() as conn:
        event = (
            await conn.execute(
                text(
                    "SELECT kind, subject_type, subject_id, check_in_id, payload, seq "
                    "FROM event WHERE kind = 'CHECK_IN'"
                )
            )
        ).one()
        chain = list(
            (
                await conn.execute(
                    text(
                        "WITH RECURSIVE up(id, parent_id) AS ("
                        " SELECT o.id, o.parent_id FROM objective o JOIN key_result k"
                        " ON k.objective_id = o.id WHERE k.id = :kr"
                        " UNION SELECT o.id, o.parent_id FROM objective o"
                        " JOIN up ON o.id = up.parent_id)"
                        " SELECT id FROM up"
                    ),
                    {"kr": kr},
                )
            ).scalars()
        )
        stored_progress = dict(
            (
                await conn.execute(
                    text("SELECT id, progress FROM objective WHERE id = ANY(:ids)"),
                    {"ids": chain},
                )
            ).all()
        )
    assert (event.subject_type, event.subject_id, event.check_in_id) == ("KeyResult", kr, row.id)
    payload = event.payload
    assert payload["value"] == 5.0
    assert sorted(payload["objective_ids"]) == sorted(chain)
    first = payload["changes"][0]
    assert first["type"] == "KeyResult" and first["id"] == kr
    assert first["previous"] == 0.0 and first["progress"] == 0.5
    for change in payload["changes"][1:]:
        assert change["progress"] == stored_progress[change["id"]]


async def test_a_rejected_check_in_writes_nothing(db: Database, org: Org):
    kr = await _chain(db, org, 2)
    async with db.connect() as conn:
        before = (await conn.execute(text("SELECT event_seq FROM organization"))).scalar()
    with pytest.raises(Rejected) as missing:
        await db.transaction(
            lambda s: key_results.check_in(
                s, org.admin, commands.CheckIn(key_result_id=kr + 999, value=1.0)
            )
        )
    assert missing.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(Rejected) as bad:
        await db.transaction(
            lambda s: key_results.check_in(
                s, org.admin, commands.CheckIn(key_result_id=kr, value=float("nan"))
            )
        )
    assert bad.value.code == ErrorCode.INVALID
    async with db.connect() as conn:
        after = (await conn.execute(text("SELECT event_seq FROM organization"))).scalar()
        rows = (await conn.execute(text("SELECT count(*) FROM check_in"))).scalar()
    assert after == before and rows == 0
