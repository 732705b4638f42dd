"""The job runner (service/jobs.py) against the real database: a job runs once whatever
the number of runners, a job whose runner died runs again, failures are retried and
then kept as FAILED, periodic jobs are queued once per slot, `okr jobs` lists them and
the backlog is a Prometheus series."""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest
from sqlalchemy import text

from service import jobs
from service.db import Database
from service.jobs import Job, Periodic, Retry, Runner
from service.observability import metrics as telemetry
from tests.factories import okr_stdout


async def _queue(db: Database, kind: str, n: int) -> list[int]:
    async def work(s):
        return [await jobs.enqueue(s, kind, {"n": i}) for i in range(n)]

    return await db.transaction(work)


async def _rows(db: Database) -> list:
    async with db.sessions() as s:
        return list((await s.execute(text("SELECT * FROM job ORDER BY id"))).all())


async def test_each_job_runs_once_across_runners(db: Database):
    ran: Counter[int] = Counter()

    async def count(job: Job) -> None:
        await asyncio.sleep(0.01)
        ran[job.payload["n"]] += 1

    await _queue(db, "count", 60)
    runners = [
        Runner(db, {"count": count}, poll_seconds=0.01, concurrency=5, name=f"r{i}")
        for i in range(3)
    ]
    tasks = [asyncio.create_task(r.run_forever()) for r in runners]
    try:
        for _ in range(500):
            if not await _rows(db):
                break
            await asyncio.sleep(0.02)
    finally:
        for t in tasks:
            t.cancel()
    assert await _rows(db) == []  # done jobs are deleted
    assert sorted(ran) == list(range(60)) and set(ran.values()) == {1}


async def test_a_job_taken_by_a_dead_process_runs_again_after_its_lease(db: Database):
    [job_id] = await _queue(db, "once", 1)
    dead = Runner(db, {}, lease_seconds=0.5, name="dead")
    claimed = await db.transaction(dead._claim)  # taken, then the process "dies"
    assert [j.id for j in claimed] == [job_id]
    ran: list[int] = []

    async def run(job: Job) -> None:
        ran.append(job.attempts)

    alive = Runner(db, {"once": run}, name="alive")
    assert await alive.turn() == 0  # its lease still holds
    await asyncio.sleep(0.7)
    assert await alive.turn() == 1
    assert ran == [2]  # the second attempt
    assert await _rows(db) == []
    # The dead process coming back cannot finish what is no longer its own.
    await dead._settle(claimed[0], "PENDING", None, "late")
    assert await _rows(db) == []


async def test_failures_are_retried_then_failed_and_listed(db: Database, database_url, bin_okr):
    [job_id] = await _queue(db, "broken", 1)

    async def broken(job: Job) -> None:
        raise ValueError("the receiver is gone")

    runner = Runner(db, {"broken": broken}, name="r")
    for attempt in range(1, jobs.MAX_ATTEMPTS + 1):
        assert await runner.turn() == 1
        [row] = await _rows(db)
        assert row.attempts == attempt and "the receiver is gone" in row.last_error
        if attempt < jobs.MAX_ATTEMPTS:
            assert row.status == "PENDING" and row.locked_by is None
            await db.transaction(
                lambda s: s.execute(
                    text("UPDATE job SET run_at = now() WHERE id = :id"), {"id": job_id}
                )
            )
    assert row.status == "FAILED"
    assert await runner.turn() == 0  # never taken again

    # A handler's own Retry puts it back at the instant it names, not counted as failed.
    async def later(job: Job) -> None:
        raise Retry(None, "not yet")

    await _queue(db, "later", 1)
    await Runner(db, {"later": later}).turn()
    statuses = sorted((r.kind, r.status, r.last_error) for r in await _rows(db))
    assert statuses == [("broken", "FAILED", statuses[0][2]), ("later", "PENDING", "not yet")]

    await runner.sample()
    assert telemetry.JOBS_FAILED.labels("broken")._value.get() == 1
    assert telemetry.JOBS_BACKLOG.labels("later", "pending")._value.get() == 1

    env = {**os.environ, "OKR_DATABASE_URL": database_url}
    lines = (await okr_stdout(bin_okr, env, "jobs")).splitlines()
    assert lines[0].split()[:3] == ["ID", "KIND", "STATUS"]
    assert any(
        "broken" in line and "FAILED" in line and "receiver is gone" in line for line in lines
    )
    assert any("later" in line and "PENDING" in line for line in lines)
    failed = await okr_stdout(bin_okr, env, "jobs", "--status", "FAILED")
    assert "broken" in failed and "later" not in failed


async def test_periodic_jobs_are_queued_once_per_slot(db: Database):
    ran: list[int] = []

    async def tick(job: Job) -> None:
        ran.append(job.payload["slot"])

    every = Periodic("tick", "tick", 3600)
    runners = [Runner(db, {"tick": tick}, periodic=[every], name=f"r{i}") for i in range(4)]
    await asyncio.gather(*(r.turn() for r in runners))
    await asyncio.gather(*(r.turn() for r in runners))
    assert len(ran) == 1


@pytest.mark.parametrize("attempts", [1, 2, 5, 30])
def test_backoff_doubles_with_jitter_under_a_cap(attempts: int):
    delays = [jobs.backoff(attempts, 30.0, cap=86400) for _ in range(200)]
    whole = min(86400, 30.0 * 2 ** (attempts - 1))
    assert all(whole / 2 <= d <= whole for d in delays)
    assert len(set(delays)) > 1  # jittered
