"""Every test talks to a real PostgreSQL: `OKR_TEST_DATABASE_URL` when set, else one
throwaway embedded server per session. The schema is migrated once into a template
database; each test gets its own fresh copy of it.

Fixtures only: what tests build with lives in tests/factories.py (builders),
tests/sockets.py (WebSocket clients) and tests/tour.py (the README as a tour)."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import asyncpg
import httpx
import pytest

from service import migrate
from service.app import create_app
from service.db import Database
from service.settings import Settings
from tests.factories import (
    JWT_SECRET,
    SERVER_LOG,
    Org,
    Tree,
    Worlds,
    free_port,
    new_org,
    start_okr,
    stop_okr,
)
from tests.sockets import Replica, Server

_counter = itertools.count()


class PgServer:
    """Where the test databases live: a URL per database name."""

    def __init__(self, base_url: str) -> None:
        self.base = urlparse(base_url.replace("postgresql+asyncpg://", "postgresql://"))

    def url(self, database: str) -> str:
        return urlunparse(self.base._replace(path=f"/{database}")).replace(
            "postgresql://", "postgresql+asyncpg://", 1
        )

    def dsn(self, database: str = "postgres") -> str:
        return urlunparse(self.base._replace(path=f"/{database}"))

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn("postgres"))


# The longest tests first (real servers, commands, generated operations), so that the two
# workers of pytest-xdist do not end on one of them while the other waits.
LONG_FIRST = ("tests/system/", "tests/realtime/", "tests/graphql/test_fuzz.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_FIRST))  # stable


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    configured = os.environ.get("OKR_TEST_DATABASE_URL")
    if configured:
        yield PgServer(configured)
        return
    from service import embedded

    folder = Path(tempfile.mkdtemp(prefix="okr-test-"))
    server = embedded.start(folder, cleanup="delete")
    served = PgServer(f"postgresql://postgres@/postgres?host={embedded.socket_dir(server)}")
    asyncio.run(_throwaway(served))
    yield served
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


async def _throwaway(server: PgServer) -> None:
    """This server lives for one session and is deleted after it: nothing it holds must
    survive a crash, so it skips flushing to disk (every test creates and drops a database,
    and each of those waits for a checkpoint and fsyncs otherwise), and its databases, each
    a test's, are never vacuumed in the background."""
    conn = await server.admin()
    try:
        for setting in ("fsync", "synchronous_commit", "full_page_writes", "autovacuum"):
            await conn.execute(f"ALTER SYSTEM SET {setting} = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template(pg: PgServer) -> str:
    name = f"okr_template_{os.getpid()}"

    async def create() -> None:
        conn = await pg.admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    migrate.upgrade(pg.url(name))
    return name


@pytest.fixture
def database_template(template: str) -> str:
    """The database each test's own is copied from: the migrated schema (a module may
    override it with a world built once, `worlds` below)."""
    return template


@pytest.fixture(scope="session")
def worlds(pg: PgServer, template: str) -> Iterator[Worlds]:
    """factories.World built once per worker into a database of its own, which a module's
    tests copy (override `database_template`, `org` and `world` with `worlds.get(...)`)."""
    built = Worlds(pg, template)
    yield built
    asyncio.run(built.drop())


@pytest.fixture
async def database_url(pg: PgServer, database_template: str) -> AsyncIterator[str]:
    name = f"okr_test_{os.getpid()}_{next(_counter)}"
    conn = await pg.admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{database_template}"')
    finally:
        await conn.close()
    yield pg.url(name)
    conn = await pg.admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(jwt_secret=JWT_SECRET, data_dir=tmp_path, database_url=None)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, pool_size=20)
    yield database
    await database.dispose()


@pytest.fixture
async def client(settings: Settings, database_url: str, db: Database):
    app = create_app(settings, database_url)
    app.state.db = db  # the lifespan does not run under ASGITransport
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://okr.test") as c:
        yield c


@pytest.fixture
async def org(client: httpx.AsyncClient, db: Database) -> Org:
    return await new_org(client, db)


@pytest.fixture
def bin_okr() -> str:
    path = shutil.which("okr") or str(Path(os.sys.executable).parent / "okr")
    assert Path(path).exists(), "the okr command is not installed"
    return path


class ServedAt:
    """A real `okr serve` process's address."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"


@pytest.fixture
async def serve(bin_okr, database_url, tmp_path) -> AsyncIterator[Any]:
    """Start real `okr serve` (uvicorn) processes on the test database, with these
    settings (`OKR_...=value`); they are stopped after the test."""
    from tests.factories import free_port, start_okr, stop_okr

    procs: list[asyncio.subprocess.Process] = []

    async def start(**settings: str) -> ServedAt:
        port = free_port()
        env = {
            **os.environ,
            "OKR_DATABASE_URL": database_url,
            "OKR_JWT_SECRET": JWT_SECRET,
            "OKR_DATA_DIR": str(tmp_path),
            "OKR_CHECK_IN_REMINDER_SECONDS": "0",
            **settings,
        }
        procs.append(await start_okr(bin_okr, port, env, SERVER_LOG))
        return ServedAt(port)

    yield start
    for proc in procs:
        await stop_okr(proc)


@pytest.fixture
async def replicas(bin_okr, database_url, tmp_path) -> AsyncIterator[Any]:
    started: list[Replica] = []

    async def start(**settings: str) -> Replica:
        port = free_port()
        env = {
            **os.environ,
            "OKR_DATABASE_URL": database_url,
            "OKR_JWT_SECRET": JWT_SECRET,
            "OKR_DATA_DIR": str(tmp_path),
            "OKR_EVENT_POLL_SECONDS": "2",
            "OKR_LISTENER_HEALTH_SECONDS": "0.5",
            **settings,
        }
        replica = Replica(await start_okr(bin_okr, port, env, SERVER_LOG), port)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        await stop_okr(replica.proc)


@pytest.fixture
async def tree(org: Org, db: Database) -> Tree:
    return await Tree(org, db).build()


@pytest.fixture
async def server(bin_okr, database_url, tmp_path) -> AsyncIterator[Server]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "OKR_DATABASE_URL": database_url,
        "OKR_JWT_SECRET": JWT_SECRET,
        "OKR_DATA_DIR": str(tmp_path),
        "OKR_EVENT_POLL_SECONDS": "2",
    }
    with log.open("ab") as out:
        proc = await start_okr(bin_okr, port, env, out)
    try:
        yield Server(proc, port, log)
    finally:
        await stop_okr(proc)
