"""One lock order everywhere (service/usecases/common.py): re-parenting objectives while
check-ins, weight changes and measurement batches run under them takes no deadlock and
no retry, and leaves every stored number exact and the outbox gapless.

Deadlocks are counted twice: by PostgreSQL (`pg_stat_database.deadlocks` for the test
database, before and after) and by the retry wrapper (`Database.retries`)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import text

from schema.ids import encode
from service.clock import now
from service.db import Database
from service.domain.enums import CycleStatus, KeyResultType
from service.usecases import commands, cycles, key_results, metric_definitions, objectives
from service.verify import verify, verify_event_sequences
from tests.factories import Org


@dataclass
class Tree:
    """14 objectives: a root, three departments under it, ten teams under those (the
    first two teams are the ones moved); two key results per team, the first of each
    bound to one of two metrics."""

    root: int
    mids: list[int]
    leaves: list[int]
    krs_of: dict[int, list[int]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)

    @property
    def krs(self) -> list[int]:
        return [k for leaf in self.leaves for k in self.krs_of[leaf]]


async def _tree(db: Database, org: Org) -> Tree:
    p = org.admin
    today = now().date()
    cycle = await db.transaction(
        lambda s: cycles.create_cycle(
            s,
            p,
            commands.CreateCycle("Q", today - timedelta(days=30), today + timedelta(days=60)),
        )
    )
    await db.transaction(
        lambda s: cycles.set_cycle_status(
            s, p, commands.SetCycleStatus(cycle.id, CycleStatus.ACTIVE)
        )
    )

    async def objective(title: str, parent: int | None, weight: float = 1.0) -> int:
        row = await db.transaction(
            lambda s: objectives.create_objective(
                s,
                p,
                commands.CreateObjective(
                    cycle_id=cycle.id, title=title, parent_id=parent, weight=weight
                ),
            )
        )
        assert row.id is not None
        return row.id

    root = await objective("Root", None)
    mids = [await objective(f"Department {i}", root, i + 1) for i in range(3)]
    leaves = [await objective(f"Team {i}", mids[i % 3]) for i in range(10)]
    tree = Tree(root, mids, leaves)
    for key in ("orders", "returns"):
        await db.transaction(
            lambda s, key=key: metric_definitions.create_metric(
                s, p, commands.CreateMetric(key=key, name=key.title())
            )
        )
        tree.metrics.append(key)
    metric_ids = [
        (await db.transaction(lambda s, k=k: metric_definitions.metric_by_key(s, p, k))).id
        for k in tree.metrics
    ]
    for n, leaf in enumerate(leaves):
        tree.krs_of[leaf] = []
        for k in range(2):
            kr = await db.transaction(
                lambda s, leaf=leaf, k=k: key_results.create_key_result(
                    s,
                    p,
                    commands.CreateKeyResult(
                        objective_id=leaf,
                        title=f"KR {k}",
                        type=KeyResultType.INCREASE,
                        start_value=0,
                        target_value=100,
                        weight=k + 1,
                    ),
                )
            )
            assert kr.id is not None
            tree.krs_of[leaf].append(kr.id)
            if k == 0:
                await db.transaction(
                    lambda s, kr=kr.id, m=metric_ids[n % 2]: metric_definitions.bind_key_result(
                        s, p, commands.BindKeyResult(kr, m)
                    )
                )
    return tree


async def _deadlocks(db: Database) -> int:
    """PostgreSQL's count of deadlocks in this database. Backends report theirs when
    idle (at most once a second) or on exit: the pool is closed first, so every one has."""
    await db.dispose()
    await asyncio.sleep(0.5)
    async with db.connect() as conn:
        await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        found = await conn.scalar(
            text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        )
    return int(found or 0)


async def _clean(db: Database) -> None:
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        assert mismatches == [], mismatches[:5]
        assert await verify_event_sequences(conn) == []


async def test_aligning_while_checking_in_takes_no_deadlock(db: Database, org: Org):
    """Two teams moved back and forth between departments (20 times each) while six
    writers check in 25 times each on key results under them and their neighbours."""
    tree = await _tree(db, org)
    p = org.admin
    m0, m1, m2 = tree.mids
    moved = tree.leaves[:2]
    targets = tree.krs_of[moved[0]] + tree.krs_of[moved[1]] + tree.krs_of[tree.leaves[2]]
    deadlocks = await _deadlocks(db)
    db.retries.clear()

    async def mover(leaf: int, parents: tuple[int, int], rounds: int) -> None:
        for i in range(rounds):
            parent = parents[i % 2]
            await db.transaction(
                lambda s, parent=parent: objectives.align_objective(
                    s, p, commands.AlignObjective(leaf, parent)
                )
            )

    async def checker(seed: int, n: int) -> None:
        rng = random.Random(seed)
        for _ in range(n):
            kr, value = rng.choice(targets), rng.uniform(0, 100)
            await db.transaction(
                lambda s, kr=kr, value=value: key_results.check_in(
                    s, p, commands.CheckIn(key_result_id=kr, value=value)
                )
            )

    await asyncio.gather(
        mover(moved[0], (m1, m0), 20),
        mover(moved[1], (m2, m1), 20),
        *(checker(seed, 25) for seed in range(6)),
    )
    assert db.retries == Counter(), db.retries
    assert await _deadlocks(db) - deadlocks == 0
    await _clean(db)
    async with db.connect() as conn:
        n = await conn.scalar(text("SELECT count(*) FROM event WHERE kind = 'CHECK_IN'"))
    assert n == 6 * 25


MIXED_SECONDS = 4.0


async def test_mixed_writers_on_one_tree_finish(db: Database, org: Org):
    """The issue's mixed-contention run, through the API: eight clients mixing check-ins,
    re-alignments, weight changes and 20-item measurement batches on one 14-objective
    tree for a few seconds. No error of any kind (no DEADLINE_EXCEEDED, no internal
    error, no userError), no deadlock, no retry, and `okr verify` clean."""
    tree = await _tree(db, org)
    deadlocks = await _deadlocks(db)
    db.retries.clear()
    gid = encode
    moved = tree.leaves[:3]
    stop = time.monotonic() + MIXED_SECONDS
    done: Counter[str] = Counter()
    errors: list[object] = []

    async def call(op: str, mutation: str, payload: dict) -> None:
        body = await org.call(mutation, {"i": payload}, expect_errors=True)
        if "errors" in body or any(v["userErrors"] for v in body["data"].values()):
            errors.append((op, body))
        else:
            done[op] += 1

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            roll = rng.random()
            if roll < 0.45:
                kr = rng.choice(tree.krs)
                await call(
                    "checkIn",
                    "mutation($i: CheckInInput!) { checkIn(input: $i) { userErrors { code } } }",
                    {"keyResultId": gid("KeyResult", kr), "value": rng.uniform(0, 100)},
                )
            elif roll < 0.65:
                leaf, parent = rng.choice(moved), rng.choice(tree.mids)
                await call(
                    "alignObjective",
                    "mutation($i: AlignObjectiveInput!) "
                    "{ alignObjective(input: $i) { userErrors { code } } }",
                    {"objectiveId": gid("Objective", leaf), "parentId": gid("Objective", parent)},
                )
            elif roll < 0.8:
                target = rng.choice(tree.leaves + tree.mids)
                await call(
                    "updateObjective",
                    "mutation($i: UpdateObjectiveInput!) "
                    "{ updateObjective(input: $i) { userErrors { code } } }",
                    {"objectiveId": gid("Objective", target), "weight": rng.choice([1, 2, 3])},
                )
            else:
                key = rng.choice(tree.metrics)
                batch = [
                    {
                        "metricKey": key,
                        "value": rng.uniform(0, 100),
                        "measuredAt": (now() - timedelta(minutes=rng.uniform(1, 600))).isoformat(),
                    }
                    for _ in range(20)
                ]
                await call(
                    "recordMeasurements",
                    "mutation($i: RecordMeasurementsInput!) "
                    "{ recordMeasurements(input: $i) { userErrors { code } } }",
                    {"measurements": batch},
                )

    await asyncio.gather(*(client(seed) for seed in range(8)))
    assert errors == [], errors[:3]
    assert set(done) == {"checkIn", "alignObjective", "updateObjective", "recordMeasurements"}
    assert db.retries == Counter(), db.retries
    assert await _deadlocks(db) - deadlocks == 0
    await _clean(db)
