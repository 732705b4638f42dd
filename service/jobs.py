"""Work that happens later (docs/design.md): webhook deliveries and their retries,
metric-source runs, the reminders. A job is a row of `job`, taken by one process at a
time whatever the number of replicas and workers, and it survives restarts.

How a job runs. Every process runs one `Runner`. Each turn it claims up to
`job_concurrency` due jobs in one statement (`FOR UPDATE SKIP LOCKED`, so two processes
never take the same row), marks them RUNNING with a lease (`locked_until`) and its own
name, commits, and only then does the work, outside any transaction (a webhook's HTTP
call never holds a database connection). A job that succeeds is deleted; one that asks
to be retried (`Retry`) goes back to PENDING at the instant it names; one that raises is
retried with backoff up to MAX_ATTEMPTS, then kept as FAILED for `okr jobs`. A job
whose process died (kill -9) is RUNNING with a lease that runs out: the next claim takes
it again, so nothing is lost and a job runs more than once only after a failure.

Periodic jobs (the reminders) are queued once per time slot: `job_schedule` keeps the
last slot queued per name, and the UPDATE that moves it is the once-only guard.

Each turn also runs the schedulers that other modules register (`Scheduler`): the
webhook fan-out from the outbox (service/webhooks.py) and the metric sources whose
instant came (service/sources.py). Each does its own work in one transaction under row
locks taken with SKIP LOCKED, so each piece is done by one process.

Why our own table rather than a library. pgqueuer and procrastinate were both
considered (PyPI: pgqueuer 1.6.0, procrastinate 3.10.0). Both keep their own schema
outside Alembic (installed by their own command), and both enqueue through a driver
connection of their own (asyncpg for pgqueuer, psycopg for procrastinate), so a job
could not be queued in the same SQLAlchemy transaction as the change that causes it
(a webhook delivery beside its event, a source's next run beside the instant it moves)
without a second connection and a second commit. They also rely on LISTEN/NOTIFY on a
session connection, which PgBouncer in transaction mode (docs/design.md, "Storage")
does not carry. What we need is small: one table, one claim statement, a lease; it
lives in our migrations, our transactions and our tests against the real database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service import outage
from service.db import Database
from service.observability import metrics as telemetry

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # for a job that raises (a handler's own Retry is not counted here)
ERROR_LOG_SECONDS = 60.0  # a failing turn logs its stack at most this often


class Retry(Exception):
    """Raised by a handler: run the job again at `at` (None: with the default backoff)."""

    def __init__(self, at: datetime | None, reason: str = "") -> None:
        super().__init__(reason)
        self.at = at
        self.reason = reason


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    organization_id: int | None
    payload: Mapping[str, Any]
    attempts: int  # this run included
    run_at: datetime


Handler = Callable[[Job], Awaitable[None]]
# A scheduler's turn: given the database, queue whatever is due; returns how much.
Scheduler = Callable[[Database], Awaitable[int]]


@dataclass(frozen=True)
class Periodic:
    """A job queued once every `every` seconds (slots counted from the epoch)."""

    name: str
    kind: str
    every: float


_INSERT = text(
    """
    INSERT INTO job (kind, organization_id, payload, run_at)
    VALUES (:kind, :org, CAST(:payload AS jsonb), coalesce(:run_at, now()))
    RETURNING id
    """
)


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: Mapping[str, Any] | None = None,
    *,
    organization_id: int | None = None,
    run_at: datetime | None = None,
) -> int:
    """Queue a job in the caller's transaction: it exists when (and only when) that
    transaction commits."""
    result = await session.execute(
        _INSERT,
        {
            "kind": kind,
            "org": organization_id,
            "payload": json.dumps(dict(payload or {})),
            "run_at": run_at,
        },
    )
    return int(result.scalar_one())


_CLAIM = text(
    """
    UPDATE job j SET status = 'RUNNING', attempts = j.attempts + 1, locked_by = :me,
                     locked_until = now() + make_interval(secs => :lease)
    FROM (
        SELECT id FROM job
        WHERE (status = 'PENDING' AND run_at <= now())
           OR (status = 'RUNNING' AND locked_until < now())
        ORDER BY run_at, id
        LIMIT :n
        FOR UPDATE SKIP LOCKED
    ) due
    WHERE j.id = due.id
    RETURNING j.id, j.kind, j.organization_id, j.payload, j.attempts, j.run_at
    """
)
_DONE = text("DELETE FROM job WHERE id = :id AND locked_by = :me")
_AGAIN = text(
    """
    UPDATE job SET status = :status,
                   run_at = coalesce(:at, now() + make_interval(secs => :delay)), locked_by = NULL,
                   locked_until = NULL, last_error = :error
    WHERE id = :id AND locked_by = :me
    """
)
_SLOT = text(
    """
    INSERT INTO job_schedule (name, last_slot)
    VALUES (:name, CAST(floor(extract(epoch FROM now()) / CAST(:every AS float8)) AS bigint))
    ON CONFLICT (name) DO UPDATE SET last_slot = EXCLUDED.last_slot
    WHERE job_schedule.last_slot < EXCLUDED.last_slot
    RETURNING last_slot
    """
)
_FIGURES = text(
    """
    SELECT kind, status, count(*) AS n,
           coalesce(extract(epoch FROM now() - min(run_at)), 0) AS oldest
    FROM job WHERE status = 'FAILED' OR run_at <= now()
    GROUP BY kind, status
    """
)
_LIST = text(
    """
    SELECT id, kind, organization_id, status, run_at, attempts, locked_by, locked_until,
           last_error, created_at
    FROM job WHERE (CAST(:status AS text) IS NULL OR status = :status)
    ORDER BY run_at, id LIMIT :n
    """
)


def backoff(attempts: int, base: float, cap: float = 3600.0) -> float:
    """Seconds before the next try: base doubling per attempt, up to `cap`, with full
    jitter in [half, whole] so failing jobs of many processes do not march in step."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return delay * random.uniform(0.5, 1.0)


async def list_jobs(db: Database, status: str | None = None, limit: int = 100) -> list[Any]:
    """Jobs for `okr jobs`: all that are not done (or those of one status)."""
    async with db.sessions() as s:
        return list((await s.execute(_LIST, {"status": status, "n": limit})).all())


@dataclass
class Runner:
    """One per process: claims due jobs and runs them (see the module doc)."""

    db: Database
    handlers: Mapping[str, Handler]
    periodic: Sequence[Periodic] = ()
    schedulers: Sequence[Scheduler] = ()
    poll_seconds: float = 1.0
    lease_seconds: float = 60.0
    concurrency: int = 10
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _last_logged: float = -math.inf
    _unlogged: int = 0
    _figures_at: float = -math.inf

    async def turn(self) -> int:
        """One turn: queue periodic jobs, run the schedulers, then claim and run a batch
        of due jobs. Returns how many jobs ran."""
        await self.schedule()
        claimed = await self.db.transaction(self._claim)
        if claimed:
            await asyncio.gather(*(self._run(job) for job in claimed))
        return len(claimed)

    async def schedule(self) -> None:
        """Queue the periodic jobs whose slot came, and run the schedulers."""
        for p in self.periodic:
            await self._queue_slot(p)
        for scheduler in self.schedulers:
            await scheduler(self.db)

    async def run_forever(self) -> None:
        """Keep up to `concurrency` jobs in flight: a job that ends frees its place for
        the next due one at once (no batch waits for its slowest job). The schedulers run
        once per `poll_seconds`, and the loop sleeps that long when nothing is due."""
        loop = asyncio.get_running_loop()
        running: set[asyncio.Task[None]] = set()
        scheduled_at = -math.inf
        # The first turn waits a moment: a process starting (or the other workers of one
        # `okr serve --workers N`, still building their schema) is not crowded by jobs,
        # and replicas started together do not all poll at the same instant.
        await asyncio.sleep(self.poll_seconds * random.uniform(1.0, 2.0))
        try:
            while True:
                claimed: list[Job] = []
                try:
                    if loop.time() - scheduled_at >= self.poll_seconds:
                        scheduled_at = loop.time()
                        await self.schedule()
                    free = self.concurrency - len(running)
                    if free > 0:
                        claimed = await self.db.transaction(partial(self._claim, n=free))
                    for job in claimed:
                        task = asyncio.create_task(self._run(job))
                        running.add(task)
                        task.add_done_callback(running.discard)
                    if loop.time() - self._figures_at >= max(self.poll_seconds, 5.0):
                        self._figures_at = loop.time()
                        await self.sample()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if outage.is_unavailable(exc):
                        # The database is down or hung: a known state, said in one line
                        # (rate-limited with every other part's), no stack; the runner
                        # waits its interval below and tries again.
                        outage.note_outage(exc, "job runner")
                    # Never silent, never a flood: the stack once a minute at most, with a
                    # count of the failures in between.
                    elif loop.time() - self._last_logged >= ERROR_LOG_SECONDS:
                        log.exception(
                            "the job runner failed (%d more failures since the last logged)",
                            self._unlogged,
                        )
                        self._last_logged, self._unlogged = loop.time(), 0
                    else:
                        self._unlogged += 1
                if claimed and len(running) < self.concurrency:
                    continue  # more may be due at once
                wait = max(0.0, self.poll_seconds - (loop.time() - scheduled_at))
                if running:
                    await asyncio.wait(
                        set(running), timeout=wait, return_when=asyncio.FIRST_COMPLETED
                    )
                else:
                    await asyncio.sleep(wait)
        finally:
            for task in running:
                task.cancel()

    async def _queue_slot(self, p: Periodic) -> None:
        async def queue(s: AsyncSession) -> None:
            slot = await s.scalar(_SLOT, {"name": p.name, "every": p.every})
            if slot is not None:
                await enqueue(s, p.kind, {"slot": int(slot)})

        await self.db.transaction(queue)

    async def _claim(self, s: AsyncSession, n: int | None = None) -> list[Job]:
        rows = await s.execute(
            _CLAIM, {"me": self.name, "lease": self.lease_seconds, "n": n or self.concurrency}
        )
        return [Job(r.id, r.kind, r.organization_id, r.payload, r.attempts, r.run_at) for r in rows]

    async def _run(self, job: Job) -> None:
        handler = self.handlers.get(job.kind)
        outcome = "succeeded"
        try:
            if handler is None:
                raise LookupError(f"no handler for jobs of kind {job.kind!r}")
            await handler(job)
        except Retry as again:
            outcome = "retried"
            await self._settle(job, "PENDING", again.at, again.reason or "retry")
        except Exception as exc:
            log.exception("job %d (%s) failed on attempt %d", job.id, job.kind, job.attempts)
            reason = f"{type(exc).__name__}: {exc}"[:1000]
            if job.attempts >= MAX_ATTEMPTS:
                outcome = "failed"
                await self._settle(job, "FAILED", None, reason)
            else:
                outcome = "retried"
                await self._settle(job, "PENDING", None, reason, backoff(job.attempts, 5.0))
        else:
            await self.db.transaction(lambda s: s.execute(_DONE, {"id": job.id, "me": self.name}))
        telemetry.JOBS_RUN.labels(job.kind, outcome).inc()

    async def _settle(
        self, job: Job, status: str, at: datetime | None, error: str, delay: float = 0.0
    ) -> None:
        """Back to PENDING (at `at`, else `delay` seconds from the database's now) or
        FAILED; jobs are timed by the database's clock, the one every process shares."""
        params = {
            "id": job.id,
            "me": self.name,
            "status": status,
            "at": at,
            "error": error,
            "delay": delay,
        }
        await self.db.transaction(lambda s: s.execute(_AGAIN, params))

    async def sample(self) -> None:
        """The backlog figures for Prometheus: due jobs, the oldest one's age, failures."""
        async with self.db.sessions() as s:
            rows = (await s.execute(_FIGURES)).all()
        telemetry.JOBS_BACKLOG.clear()
        telemetry.JOBS_AGE.clear()
        telemetry.JOBS_FAILED.clear()
        for r in rows:
            if r.status == "FAILED":
                telemetry.JOBS_FAILED.labels(r.kind).set(r.n)
            else:
                telemetry.JOBS_BACKLOG.labels(r.kind, r.status.lower()).set(r.n)
                if r.status == "PENDING":
                    telemetry.JOBS_AGE.labels(r.kind).set(float(r.oldest))
