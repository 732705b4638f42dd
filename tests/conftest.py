"""Every test talks to a real PostgreSQL: `OKR_TEST_DATABASE_URL` when set, else one
throwaway embedded server per session. The schema is migrated once into a template
database; each test gets its own fresh copy of it."""

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
from service.auth import issue_token
from service.db import Database
from service.domain.principal import Principal
from service.settings import Settings
from service.usecases import organizations

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
_counter = itertools.count()


class Server:
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


@pytest.fixture(scope="session")
def pg() -> Iterator[Server]:
    configured = os.environ.get("OKR_TEST_DATABASE_URL")
    if configured:
        yield Server(configured)
        return
    from service import embedded

    folder = Path(tempfile.mkdtemp(prefix="okr-test-"))
    server = embedded.start(folder, cleanup="delete")
    yield Server(f"postgresql://postgres@/postgres?host={embedded.socket_dir(server)}")
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def template(pg: Server) -> str:
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
async def database_url(pg: Server, template: str) -> AsyncIterator[str]:
    name = f"okr_test_{os.getpid()}_{next(_counter)}"
    conn = await pg.admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
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


class Org:
    """An organization with its admin, and a way to call the API as anyone in it."""

    def __init__(self, client: httpx.AsyncClient, db: Database, org_id: int, admin_id: int):
        self.client = client
        self.db = db
        self.id = org_id
        self.admin_id = admin_id
        self.admin = Principal(organization_id=org_id, role="ADMIN", user_id=admin_id)
        self.admin_token = issue_token(JWT_SECRET, admin_id, org_id)

    def token(self, user_id: int) -> str:
        return issue_token(JWT_SECRET, user_id, self.id)

    async def call(
        self,
        query: str,
        variables: dict | None = None,
        token: str | None = None,
        expect_errors: bool = False,
    ) -> dict:
        response = await self.client.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
        )
        body = response.json()
        if not expect_errors:
            assert response.status_code == 200, body
            assert "errors" not in body, body["errors"]
        return body if expect_errors else body["data"]


@pytest.fixture
async def org(client: httpx.AsyncClient, db: Database) -> Org:
    created, admin = await db.transaction(
        lambda s: organizations.create_organization(
            s, "Acme Logistics", "admin@acme.example", "Ada Admin"
        )
    )
    return Org(client, db, created.id, admin.id)


@pytest.fixture
def bin_okr() -> str:
    path = shutil.which("okr") or str(Path(os.sys.executable).parent / "okr")
    assert Path(path).exists(), "the okr command is not installed"
    return path


class ServedAt:
    """A real `okr serve` process's address."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"


SERVER_LOG = open(os.environ.get("OKR_TEST_SERVER_LOG", os.devnull), "ab")


@pytest.fixture
async def serve(bin_okr, database_url, tmp_path) -> AsyncIterator[Any]:
    """Start real `okr serve` (uvicorn) processes on the test database, with these
    settings (`OKR_...=value`); they are stopped after the test."""
    from tests.helpers import free_port, start_okr, stop_okr

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
