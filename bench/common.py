"""What the benchmarks share: a database to run on, a server process, a seeded tree."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import asyncpg
import httpx

from service import migrate
from service.auth import issue_token
from service.models import pk_of

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from service.domain.principal import Principal

C = TypeVar("C")
R = TypeVar("R")


def step(
    usecase: Callable[[AsyncSession, Principal, C], Awaitable[R]], p: Principal, command: C
) -> Callable[[AsyncSession], Awaitable[R]]:
    """One use case with its command, for `Database.transaction` (a lambda with default
    arguments would do, but its types cannot be inferred)."""
    return lambda s: usecase(s, p, command)


JWT_SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BenchDatabase:
    """A fresh database on OKR_BENCH_DATABASE_URL's server, or on a throwaway embedded one."""

    def __init__(self) -> None:
        self._server = None
        configured = os.environ.get("OKR_BENCH_DATABASE_URL")
        if configured:
            self.base = configured.replace("postgresql+asyncpg://", "postgresql://")
        else:
            from service import embedded

            folder = Path(tempfile.mkdtemp(prefix="okr-bench-"))
            self._server = embedded.start(folder, cleanup="delete")
            self.base = f"postgresql://postgres@/postgres?host={embedded.socket_dir(self._server)}"
        self.name = f"okr_bench_{os.getpid()}"

    def dsn(self, database: str) -> str:
        head, _, rest = self.base.partition("://")
        auth_host, _, path = rest.partition("/")
        query = path.partition("?")[2]
        return f"{head}://{auth_host}/{database}" + (f"?{query}" if query else "")

    @property
    def url(self) -> str:
        return self.dsn(self.name).replace("postgresql://", "postgresql+asyncpg://", 1)

    async def create(self) -> None:
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        await asyncio.to_thread(migrate.upgrade, self.url)

    async def drop(self) -> None:
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()


async def seed_chain(url: str, depth: int = 4) -> tuple[str, list[str]]:
    """One organization, an active cycle, an objective chain `depth` deep with a key
    result at every level. Returns (admin token, key result ids)."""
    from schema.ids import encode
    from service.db import Database
    from service.domain import enums as domain_enums
    from service.domain.principal import Principal
    from service.usecases import commands, cycles, key_results, objectives, organizations

    db = Database(url, pool_size=2)
    try:
        org, admin = await db.transaction(
            lambda s: organizations.create_organization(
                s, "Bench Co", "bench@bench.example", "Bench Admin"
            )
        )
        p = Principal(organization_id=pk_of(org), role="ADMIN", user_id=pk_of(admin))
        today = date.today()
        cycle = await db.transaction(
            lambda s: cycles.create_cycle(
                s,
                p,
                commands.CreateCycle("Now", today - timedelta(days=30), today + timedelta(days=60)),
            )
        )
        await db.transaction(
            step(
                cycles.set_cycle_status,
                p,
                commands.SetCycleStatus(pk_of(cycle), domain_enums.CycleStatus.ACTIVE),
            )
        )
        parent, krs = None, []
        for level in range(depth):
            obj = await db.transaction(
                step(
                    objectives.create_objective,
                    p,
                    commands.CreateObjective(
                        cycle_id=pk_of(cycle), title=f"Level {level}", parent_id=parent
                    ),
                )
            )
            kr = await db.transaction(
                step(
                    key_results.create_key_result,
                    p,
                    commands.CreateKeyResult(
                        objective_id=pk_of(obj),
                        title="KR",
                        type=domain_enums.KeyResultType.INCREASE,
                        start_value=0,
                        target_value=1000,
                    ),
                )
            )
            krs.append(encode("KeyResult", pk_of(kr)))
            parent = obj.id
        return issue_token(JWT_SECRET, pk_of(admin), pk_of(org)), krs
    finally:
        await db.dispose()


class ServerProcess:
    def __init__(self, url: str, *serve_args: str, **settings: str) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "OKR_DATABASE_URL": url,
            "OKR_JWT_SECRET": JWT_SECRET,
            "OKR_DATA_DIR": tempfile.mkdtemp(prefix="okr-bench-data-"),
            **settings,
        }
        okr = [str(Path(sys.executable).parent / "okr")]
        profile = os.environ.get("OKR_BENCH_PROFILE")  # a path: profile the server into it
        if profile:
            okr = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "service.cli"]
        self.proc = subprocess.Popen(
            [*okr, "serve", "--port", str(self.port), "--log-level", "warning", *serve_args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not become ready")

    def stop(self) -> None:
        self.proc.send_signal(
            signal.SIGINT if os.environ.get("OKR_BENCH_PROFILE") else signal.SIGTERM
        )
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def write_report(name: str, report: dict) -> Path:
    """`report` as bench/results/<name>, indented JSON; returns its path."""
    target = Path(__file__).parent / "results" / name
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(report, indent=2) + "\n")
    return target


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
