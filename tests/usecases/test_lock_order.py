"""One lock order everywhere (service/usecases/common.py): re-parenting objectives while
check-ins, weight changes and measurement batches run under them takes no deadlock and
no retry, and leaves every stored number exact and the outbox gapless.

Deadlocks are counted twice: by PostgreSQL (`pg_stat_database.deadlocks` for the test
database, before and after) and by the retry wrapper (`Database.retries`). The tree and
the count come from bench/lock_hold.py, which measures the same runs
(`python -m bench.lock_hold`)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import text

from bench.lock_hold import build_tree, deadlocks
from schema.ids import encode
from service.clock import now
from service.db import Database
from service.usecases import commands, key_results, objectives
from service.verify import verify, verify_event_sequences
from tests.factories import Org


async def _clean(db: Database) -> None:
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        assert mismatches == [], mismatches[:5]
        assert await verify_event_sequences(conn) == []


async def test_aligning_while_checking_in_takes_no_deadlock(db: Database, org: Org):
    """Two teams moved back and forth between departments (20 times each) while six
    writers check in 25 times each on key results under them and their neighbours."""
    tree = await build_tree(db, org.admin)
    p = org.admin
    m0, m1, m2 = tree.mids
    moved = tree.leaves[:2]
    targets = tree.krs_of[moved[0]] + tree.krs_of[moved[1]] + tree.krs_of[tree.leaves[2]]
    before = await deadlocks(db)
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
    assert await deadlocks(db) - before == 0
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
    tree = await build_tree(db, org.admin)
    before = await deadlocks(db)
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
    assert await deadlocks(db) - before == 0
    await _clean(db)


async def test_a_batch_writes_its_events_in_one_statement_in_order(db: Database, org: Org):
    """A measurement batch's events (one per metric, then one CHECK_IN per key result
    fed) go in one statement while its chains are locked: consecutive sequence numbers,
    in that order, each with its payload."""
    from service.db import count_statements
    from service.usecases import metrics

    tree = await build_tree(db, org.admin)
    batch = [
        commands.MeasurementInput(key, value, measured_at=now() - timedelta(minutes=5))
        for key, value in ((tree.metrics[0], 40.0), (tree.metrics[1], 60.0))
    ]
    async with db.connect() as conn:
        start = await conn.scalar(text("SELECT max(seq) FROM event"))
    counted = count_statements()
    await db.transaction(lambda s: metrics.record_measurements(s, org.admin, batch))
    statements = counted.n  # twelve events, one statement for them all
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT seq, kind, subject_id, payload FROM event WHERE seq > :s ORDER BY seq"
                ),
                {"s": start},
            )
        ).all()
        await _clean(db)
    fed = sorted(tree.krs_of[leaf][0] for leaf in tree.leaves)
    assert [r.seq for r in rows] == list(range(start + 1, start + 1 + 2 + len(fed)))
    assert [r.kind for r in rows] == ["MEASUREMENTS_RECORDED"] * 2 + ["CHECK_IN"] * len(fed)
    assert [r.subject_id for r in rows[2:]] == fed
    assert [r.payload["key"] for r in rows[:2]] == tree.metrics
    assert all(r.payload["changes"][0]["id"] == r.subject_id for r in rows[2:])
    assert statements == 11, statements  # 22 with a statement per event
