"""How long a check-in holds its locks, and what contention costs (issue 23, item 3).

    python -m bench.lock_hold                 # all three parts below
    python -m bench.lock_hold --parts hold    # one of hold, align, mixed

On one 14-objective tree (tests/usecases/test_lock_order.py builds the same one, `build_tree`):

- `hold`: check-ins one at a time (nothing waits, so from the first statement's start
  to the commit's end is the time the chain's locks are held), split into the read
  statement (`okr_check_in_read`: the locks and every read), the rules (the pure
  rules and the event's payload, in Python, between the statements), the write
  statement and the commit; p50 and p99 of each. 20-item measurement batches (on a
  metric feeding five key results: 100 check-ins) one at a time, first statement to
  commit, and their statements. Then eight writers at once on eight key results of the
  tree (they queue on the root's row): check-ins a second.
- `align`: two teams moved back and forth between departments while six writers check
  in under them: deadlocks (pg_stat_database), retries (`Database.retries`) and
  transactions that failed after their last retry.
- `mixed`: eight clients mixing check-ins, re-alignments, weight changes and 20-item
  measurement batches for `--seconds` (10): operations finished, the slowest, retries,
  deadlocks; `okr verify` after each part.

Runs on OKR_BENCH_DATABASE_URL's server or a throwaway embedded one (bench/common.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import Session

from bench.common import BenchDatabase, percentile, step
from service.clock import now
from service.db import Database
from service.domain.enums import CycleStatus, KeyResultType
from service.domain.principal import Principal
from service.usecases import (
    commands,
    cycles,
    key_results,
    metric_definitions,
    metrics,
    objectives,
    organizations,
)
from service.verify import verify, verify_event_sequences


@dataclass
class Tree:
    """14 objectives: a root, three departments under it, ten teams under those (the
    first ones are the ones moved); two key results per team, the first of each bound to
    one of two metrics."""

    root: int
    mids: list[int]
    leaves: list[int]
    krs_of: dict[int, list[int]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)

    @property
    def krs(self) -> list[int]:
        return [k for leaf in self.leaves for k in self.krs_of[leaf]]


async def build_tree(db: Database, p: Principal, tag: str = "") -> Tree:
    """The tree, in a cycle of its own, its metrics' keys ending in `tag`."""
    today = now().date()
    cycle = await db.transaction(
        lambda s: cycles.create_cycle(
            s,
            p,
            commands.CreateCycle("Q", today - timedelta(days=30), today + timedelta(days=60)),
        )
    )
    assert cycle.id is not None
    cycle_id = cycle.id
    await db.transaction(
        lambda s: cycles.set_cycle_status(
            s, p, commands.SetCycleStatus(cycle_id, CycleStatus.ACTIVE)
        )
    )

    async def objective(title: str, parent: int | None, weight: float = 1.0) -> int:
        row = await db.transaction(
            lambda s: objectives.create_objective(
                s,
                p,
                commands.CreateObjective(
                    cycle_id=cycle_id, title=title, parent_id=parent, weight=weight
                ),
            )
        )
        assert row.id is not None
        return row.id

    root = await objective("Root", None)
    mids = [await objective(f"Department {i}", root, i + 1) for i in range(3)]
    leaves = [await objective(f"Team {i}", mids[i % 3]) for i in range(10)]
    tree = Tree(root, mids, leaves)
    metric_ids = []
    for key in (f"orders{tag}", f"returns{tag}"):
        metric = await db.transaction(
            step(metric_definitions.create_metric, p, commands.CreateMetric(key, key.title()))
        )
        tree.metrics.append(key)
        metric_ids.append(metric.id)
    for n, leaf in enumerate(leaves):
        tree.krs_of[leaf] = []
        for k in range(2):
            define = commands.CreateKeyResult(
                objective_id=leaf,
                title=f"KR {k}",
                type=KeyResultType.INCREASE,
                start_value=0,
                target_value=100,
                weight=k + 1,
            )
            kr = await db.transaction(step(key_results.create_key_result, p, define))
            assert kr.id is not None
            tree.krs_of[leaf].append(kr.id)
            if k == 0:
                bind = commands.BindKeyResult(kr.id, metric_ids[n % 2])
                await db.transaction(step(metric_definitions.bind_key_result, p, bind))
    return tree


async def deadlocks(db: Database) -> int:
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


async def clean(db: Database) -> bool:
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        return not mismatches and not await verify_event_sequences(conn)


# --- hold -------------------------------------------------------------------------------------

_marks: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("marks", default=None)


def _instrument(db: Database) -> None:
    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        marks = _marks.get()
        if marks is not None:
            if "okr_lock_chain" in statement:
                _chain_locked.append(len(marks))
            marks.append(time.perf_counter())

    def after(*_args: Any) -> None:
        marks = _marks.get()
        if marks is not None:
            marks.append(time.perf_counter())

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    event.listen(db.engine.sync_engine, "after_cursor_execute", after)
    # The COMMIT's end (the session's after_commit), not the connection's return to the
    # pool after it: the locks are gone once COMMIT answers.
    event.listen(Session, "after_commit", after)


async def _timed_check_in(db: Database, p: Principal, kr: int, value: float) -> dict[str, float]:
    marks: list[float] = []
    _marks.set(marks)
    ended: list[float] = []

    async def work(s: Any) -> Any:
        result = await key_results.check_in(s, p, commands.CheckIn(key_result_id=kr, value=value))
        ended.append(time.perf_counter())
        return result

    await db.transaction(work)
    _marks.set(None)
    # Two statements (each a before and an after mark), then the commit's end.
    read_start, read_end, write_start, write_end, done = marks[-5:]
    return {
        "reads": read_end - read_start,
        "rules": write_start - read_end,
        "writes": write_end - write_start,
        "commit": done - ended[-1],
        "hold": done - read_start,
    }


async def _timed_batch(
    db: Database, p: Principal, tree: Tree, rng: random.Random
) -> tuple[float, float]:
    """A 20-item measurement batch from its first statement to its commit's end (its
    first lock is taken in its first statements), and from the statement that locks the
    chains (the root's row, which every writer of the tree waits for) to that end."""
    marks: list[float] = []
    _marks.set(marks)
    batch = [
        commands.MeasurementInput(
            tree.metrics[0],
            rng.uniform(0, 100),
            measured_at=now() - timedelta(minutes=rng.uniform(1, 600)),
        )
        for _ in range(20)
    ]
    await db.transaction(step(metrics.record_measurements, p, batch))
    _marks.set(None)
    _batch_statements.append((len(marks) - 1) // 2)
    return marks[-1] - marks[0], marks[-1] - marks[_chain_locked[-1]]


_batch_statements: list[int] = []
_chain_locked: list[int] = []  # the index of the mark where a chain's locks are taken


def _ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50": round(percentile(values, 50) * 1000, 3),
        "p99": round(percentile(values, 99) * 1000, 3),
    }


async def part_hold(db: Database, p: Principal, tree: Tree, n: int, seconds: float) -> dict:
    _instrument(db)
    rng = random.Random(1)
    krs = tree.krs
    for _ in range(20):  # warm the pool and the statement caches
        await _timed_check_in(db, p, rng.choice(krs), rng.uniform(0, 100))
    samples = [await _timed_check_in(db, p, rng.choice(krs), rng.uniform(0, 100)) for _ in range(n)]
    split = {k: _ms([s[k] for s in samples]) for k in samples[0]}
    for _ in range(5):
        await _timed_batch(db, p, tree, rng)
    batches = [await _timed_batch(db, p, tree, rng) for _ in range(n // 5)]

    done = 0
    stop = time.monotonic() + seconds

    async def writer(kr: int, seed: int) -> None:
        nonlocal done
        r = random.Random(seed)
        while time.monotonic() < stop:
            cmd = commands.CheckIn(key_result_id=kr, value=r.uniform(0, 100))
            await db.transaction(step(key_results.check_in, p, cmd))
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(writer(kr, i) for i, kr in enumerate(krs[::2][:8])))
    rate = done / (time.monotonic() - started)
    return {
        "one_at_a_time_ms": split,
        "n": n,
        "eight_writers_per_second": round(rate, 1),
        "batch_of_20_ms": _ms([whole for whole, _ in batches]),
        "batch_of_20_chain_held_ms": _ms([held for _, held in batches]),
        "batch_statements": _batch_statements[-1],
        "batches": len(batches),
    }


# --- align ------------------------------------------------------------------------------------


async def _run(db: Database, work: Any, failed: Counter[str], label: str) -> bool:
    try:
        await db.transaction(work)
    except Exception as exc:  # a transaction that failed after its last retry
        failed[f"{label}: {type(exc).__name__}"] += 1
        return False
    return True


async def part_align(db: Database, p: Principal, tree: Tree, rounds: int, check_ins: int) -> dict:
    m0, m1, m2 = tree.mids
    moved = tree.leaves[:2]
    targets = tree.krs_of[moved[0]] + tree.krs_of[moved[1]] + tree.krs_of[tree.leaves[2]]
    before = await deadlocks(db)
    db.retries.clear()
    failed: Counter[str] = Counter()

    async def mover(leaf: int, parents: tuple[int, int]) -> None:
        for i in range(rounds):
            cmd = commands.AlignObjective(leaf, parents[i % 2])
            await _run(db, lambda s, c=cmd: objectives.align_objective(s, p, c), failed, "align")

    async def checker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(check_ins):
            cmd = commands.CheckIn(key_result_id=rng.choice(targets), value=rng.uniform(0, 100))
            await _run(db, lambda s, c=cmd: key_results.check_in(s, p, c), failed, "checkIn")

    started = time.monotonic()
    await asyncio.gather(
        mover(moved[0], (m1, m0)), mover(moved[1], (m2, m1)), *(checker(i) for i in range(6))
    )
    took = time.monotonic() - started
    return {
        "seconds": round(took, 2),
        "deadlocks": await deadlocks(db) - before,
        "retries": dict(db.retries),
        "failed": dict(failed),
        "verify_clean": await clean(db),
    }


# --- mixed ------------------------------------------------------------------------------------


async def part_mixed(db: Database, p: Principal, tree: Tree, seconds: float) -> dict:
    before = await deadlocks(db)
    db.retries.clear()
    failed: Counter[str] = Counter()
    done: Counter[str] = Counter()
    slowest: dict[str, float] = {}
    moved = tree.leaves[:3]
    stop = time.monotonic() + seconds

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            roll = rng.random()
            work: Any
            if roll < 0.45:
                op = "checkIn"
                cmd: Any = commands.CheckIn(
                    key_result_id=rng.choice(tree.krs), value=rng.uniform(0, 100)
                )
                work = lambda s, c=cmd: key_results.check_in(s, p, c)  # noqa: E731
            elif roll < 0.65:
                op = "alignObjective"
                cmd = commands.AlignObjective(rng.choice(moved), rng.choice(tree.mids))
                work = lambda s, c=cmd: objectives.align_objective(s, p, c)  # noqa: E731
            elif roll < 0.8:
                op = "updateObjective"
                cmd = commands.UpdateObjective(
                    objective_id=rng.choice(tree.leaves + tree.mids), weight=rng.choice([1, 2, 3])
                )
                work = lambda s, c=cmd: objectives.update_objective(s, p, c)  # noqa: E731
            else:
                op = "recordMeasurements"
                key = rng.choice(tree.metrics)
                batch = [
                    commands.MeasurementInput(
                        key,
                        rng.uniform(0, 100),
                        measured_at=now() - timedelta(minutes=rng.uniform(1, 600)),
                    )
                    for _ in range(20)
                ]
                work = lambda s, b=batch: metrics.record_measurements(s, p, b)  # noqa: E731
            started = time.monotonic()
            if await _run(db, work, failed, op):
                done[op] += 1
                slowest[op] = max(slowest.get(op, 0.0), time.monotonic() - started)

    await asyncio.gather(*(client(seed) for seed in range(8)))
    return {
        "seconds": seconds,
        "finished": sum(done.values()),
        "by_operation": dict(done),
        "slowest_s": {k: round(v, 3) for k, v in slowest.items()},
        "deadlocks": await deadlocks(db) - before,
        "retries": dict(db.retries),
        "failed": dict(failed),
        "verify_clean": await clean(db),
    }


async def main(args: argparse.Namespace) -> dict:
    database = BenchDatabase()
    await database.create()
    db = Database(database.url, pool_size=20)
    out: dict[str, Any] = {}
    try:
        created, admin = await db.transaction(
            lambda s: organizations.create_organization(
                s, "Bench Logistics", "admin@bench.example", "Ada Admin"
            )
        )
        assert created.id is not None
        p = Principal(organization_id=created.id, role="ADMIN", user_id=admin.id)
        # A tree per part: each starts from the same shape.
        if "hold" in args.parts:
            tree = await build_tree(db, p, "-hold")
            out["hold"] = await part_hold(db, p, tree, args.check_ins, args.hold_seconds)
        if "align" in args.parts:
            tree = await build_tree(db, p, "-align")
            out["align"] = await part_align(db, p, tree, rounds=20, check_ins=25)
        if "mixed" in args.parts:
            tree = await build_tree(db, p, "-mixed")
            out["mixed"] = await part_mixed(db, p, tree, args.seconds)
    finally:
        await db.dispose()
        await database.drop()
        database.close()
    return out


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["hold", "align", "mixed"])
    parser.add_argument("--check-ins", type=int, default=300, help="hold: one at a time")
    parser.add_argument("--hold-seconds", type=float, default=5.0, help="hold: eight writers")
    parser.add_argument("--seconds", type=float, default=10.0, help="mixed: how long")
    parser.add_argument("--out", default="lock_hold.json", help="written to bench/results/")
    args = parser.parse_args()
    text_out = json.dumps(asyncio.run(main(args)), indent=2)
    print(text_out)
    (Path(__file__).parent / "results" / args.out).write_text(text_out + "\n")


if __name__ == "__main__":
    cli()
