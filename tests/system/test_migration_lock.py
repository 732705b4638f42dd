"""Several replicas starting at once migrate one at a time (an advisory lock), and a
database a later build migrated is never migrated by this one: it serves on (ready)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import pytest

from service import migrate
from tests.factories import JWT_SECRET, free_port, start_okr, stop_okr
from tests.sockets import Server

NEWER = "9999_from_a_later_build"


@pytest.fixture
async def fresh_url(pg: Server) -> AsyncIterator[str]:
    """An empty database: no tables, no revision."""
    name = f"okr_fresh_{os.getpid()}"
    conn = await pg.admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield pg.url(name)
    conn = await pg.admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _env(url: str, data_dir: str) -> dict[str, str]:
    return {
        **os.environ,
        "OKR_DATABASE_URL": url,
        "OKR_JWT_SECRET": JWT_SECRET,
        "OKR_DATA_DIR": data_dir,
    }


async def _okr_migrate(bin_okr: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        bin_okr,
        "migrate",
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


async def test_two_migrators_on_a_fresh_database(
    bin_okr: str, fresh_url: str, tmp_path: Path
) -> None:
    assert await migrate.current_revision(fresh_url) is None
    env = _env(fresh_url, str(tmp_path))
    results = await asyncio.gather(*(_okr_migrate(bin_okr, env) for _ in range(3)))
    for code, out in results:
        assert code == 0, out
        assert f"migrated to {migrate.head_revision()}" in out
    assert await migrate.current_revision(fresh_url) == migrate.head_revision()


async def test_a_newer_database_is_not_migrated_and_stays_ready(
    bin_okr: str, fresh_url: str, pg: Server, tmp_path: Path
) -> None:
    await asyncio.to_thread(migrate.upgrade, fresh_url)
    db = await asyncpg.connect(pg.dsn(urlparse(fresh_url).path.lstrip("/")))
    try:
        await db.execute("UPDATE alembic_version SET version_num = $1", NEWER)
    finally:
        await db.close()
    env = _env(fresh_url, str(tmp_path))
    code, out = await _okr_migrate(bin_okr, env)
    assert code == 0, out
    assert NEWER in out and "nothing done" in out
    # In process too: the revision found is returned, and nothing changes.
    assert await asyncio.to_thread(migrate.upgrade, fresh_url) == NEWER
    assert await migrate.current_revision(fresh_url) == NEWER
    # `okr serve` starts on it (it does not try to migrate) and is ready
    # (docs/design.md, "Transport").
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = await start_okr(bin_okr, port, env, log)
        await stop_okr(proc)
    assert await migrate.current_revision(fresh_url) == NEWER
