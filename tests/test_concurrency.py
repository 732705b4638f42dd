"""No lost updates: many concurrent check-ins under one tree, each in its own
transaction on its own connection, and then every stored number equals a fresh
recomputation and the outbox has one event per check-in, gapless, in commit order."""

from __future__ import annotations

import asyncio
import random

from sqlalchemy import text

from service.db import Database
from service.usecases import cycles, key_results, objectives
from service.verify import verify, verify_event_sequences
from tests.conftest import Org

CHECK_INS = 60


async def build_tree(db: Database, org: Org) -> tuple[int, list[int]]:
    p = org.admin
    from datetime import date

    cycle = await db.transaction(
        lambda s: cycles.create_cycle(s, p, "Q", date(2026, 1, 1), date(2026, 12, 31))
    )
    await db.transaction(lambda s: cycles.set_cycle_status(s, p, cycle.id, "ACTIVE"))

    async def objective(title, parent=None, weight=1.0):
        return (
            await db.transaction(
                lambda s: objectives.create_objective(
                    s, p, cycle_id=cycle.id, title=title, parent_id=parent, weight=weight
                )
            )
        ).id

    root = await objective("Root")
    krs = []
    for i in range(4):
        mid = await objective(f"Dept {i}", root, weight=i + 1)
        for j in range(2):
            leaf = await objective(f"Team {i}.{j}", mid)
            for k in range(2):
                kr = await db.transaction(
                    lambda s, o=leaf, k=k: key_results.create_key_result(
                        s,
                        p,
                        objective_id=o,
                        title=f"KR {k}",
                        type="INCREASE",
                        start_value=0,
                        target_value=100,
                        weight=k + 1,
                    )
                )
                krs.append(kr.id)
    return root, krs


async def test_concurrent_check_ins_lose_nothing(db: Database, org: Org):
    root, krs = await build_tree(db, org)
    rng = random.Random(7)
    plan = [(rng.choice(krs), rng.uniform(0, 120)) for _ in range(CHECK_INS)]

    async def one(kr: int, value: float):
        return await db.transaction(
            lambda s: key_results.check_in(s, org.admin, key_result_id=kr, value=value)
        )

    await asyncio.gather(*(one(kr, v) for kr, v in plan))

    async with db.connect() as conn:
        checked, mismatches = await verify(conn)
        assert mismatches == [], mismatches[:5]
        assert checked == len(krs) + 1 + 4 + 8
        assert await verify_event_sequences(conn) == []
        n = await conn.execute(text("SELECT count(*) FROM event WHERE kind = 'CHECK_IN'"))
        assert n.scalar() == CHECK_INS
        # The event committed last carries the root's final stored progress.
        last = (
            await conn.execute(
                text("SELECT payload FROM event WHERE kind = 'CHECK_IN' ORDER BY seq DESC LIMIT 1")
            )
        ).scalar()
        stored = (
            await conn.execute(text("SELECT progress FROM objective WHERE id = :id"), {"id": root})
        ).scalar()
    root_change = [c for c in last["changes"] if c["type"] == "Objective" and c["id"] == root]
    assert root_change and abs(root_change[0]["progress"] - stored) < 1e-12


async def test_concurrent_check_ins_through_the_api(db: Database, org: Org):
    _root, krs = await build_tree(db, org)
    from schema.ids import encode

    query = "mutation($i: CheckInInput!) { checkIn(input: $i) { userErrors { code } } }"
    results = await asyncio.gather(
        *(
            org.call(
                query,
                {"i": {"keyResultId": encode("KeyResult", krs[n % len(krs)]), "value": float(n)}},
            )
            for n in range(50)
        )
    )
    assert all(r["checkIn"]["userErrors"] == [] for r in results)
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
    assert mismatches == []
