"""The database goes away, or hangs, under a real `okr serve`: a TCP proxy between the
server and PostgreSQL refuses connections, or accepts and never answers. Every entry
point answers at once with a clear, retryable error, the log stays short, and the
service is whole again when the database is back (issue 10, item 9). Also: the CSV
export neutralizes cells a spreadsheet would run as formulas (item 10)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import websockets

from tests.factories import (
    JWT_SECRET,
    Org,
    active_cycle,
    free_port,
    key_result,
    objective,
    start_okr,
    stop_okr,
)


class PostgresProxy:
    """Forwards TCP connections to the test PostgreSQL; `mode` turns it into a database
    that is down (connections refused, open ones cut) or hung (nothing comes back)."""

    def __init__(self, database_url: str) -> None:
        u = urlparse(database_url)
        host_dir = parse_qs(u.query).get("host", [None])[0]
        self.unix = f"{host_dir}/.s.PGSQL.{u.port or 5432}" if host_dir else None
        self.target = (u.hostname or "127.0.0.1", u.port or 5432)
        self.database = u.path.lstrip("/")
        self.user = u.username or "postgres"
        self.port = free_port()
        self.mode = "forward"
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.mode == "hang":
            return  # accepted, and never a byte back
        if self.unix:
            up_reader, up_writer = await asyncio.open_unix_connection(self.unix)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()  # while hung, hold what was sent
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    async def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        self.mode = "down"
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.close()
        self._writers.clear()
        for t in list(self._pipes):
            t.cancel()

    async def hang(self) -> None:
        if self._server is None:
            await self.start()
        self.mode = "hang"
        self._flowing.clear()

    async def up(self) -> None:
        if self.mode == "hang":
            for w in list(self._writers):
                w.close()
            self._writers.clear()
        self.mode = "forward"
        self._flowing.set()
        if self._server is None:
            await self.start()

    async def stop(self) -> None:
        await self.down()


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[PostgresProxy]:
    p = PostgresProxy(database_url)
    await p.start()
    yield p
    await p.stop()


class Served:
    def __init__(self, port: int, log: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}/graphql"
        self.log = log


@pytest.fixture
async def served(bin_okr, proxy: PostgresProxy, tmp_path: Path) -> AsyncIterator[Served]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "OKR_DATABASE_URL": proxy.url,
        "OKR_JWT_SECRET": JWT_SECRET,
        "OKR_DATA_DIR": str(tmp_path),
        "OKR_CHECK_IN_REMINDER_SECONDS": "0",
        "OKR_RESPONSE_CACHE_SECONDS": "0",
        "OKR_DB_CONNECT_TIMEOUT_SECONDS": "1",
        "OKR_DB_POOL_TIMEOUT_SECONDS": "1",
        "OKR_DB_STATEMENT_TIMEOUT_SECONDS": "1",
        "OKR_READINESS_TIMEOUT_SECONDS": "1",
    }
    out = await asyncio.to_thread(log.open, "ab")
    with out:
        try:
            proc = await start_okr(bin_okr, port, env, out)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {log.read_text()[-2000:]}") from None
    try:
        yield Served(port, log)
    finally:
        await stop_okr(proc)


VIEWER = "{ viewer { role organization { name } } }"


async def _graphql(http: httpx.AsyncClient, served: Served, token: str) -> httpx.Response:
    return await http.post(
        f"{served.base}/graphql",
        json={"query": VIEWER},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


async def _recovered(http: httpx.AsyncClient, served: Served, token: str) -> httpx.Response:
    """The first 200 once the database is back (within 10 s): the service heals itself."""
    for _ in range(50):
        response = await _graphql(http, served, token)
        if response.status_code == 200:
            return response
        await asyncio.sleep(0.2)
    raise AssertionError(f"still {response.status_code} after the database came back")


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    error = body["errors"][0]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert error["extensions"]["requestId"] == response.headers["x-request-id"]
    assert "retry" in error["message"]


async def test_item9_database_down_every_entry_point_answers_503_json(
    org: Org, served: Served, proxy: PostgresProxy
):
    cycle = await active_cycle(org)
    async with httpx.AsyncClient() as http:
        assert (await _graphql(http, served, org.admin_token)).status_code == 200
        await proxy.down()

        started = time.monotonic()
        for _ in range(40):  # a burst: each answered, the log does not grow with it
            _assert_unavailable(await _graphql(http, served, org.admin_token))
        assert time.monotonic() - started < 20

        export = await http.get(
            f"{served.base}/export/cycles/{cycle}.csv",
            headers={"Authorization": f"Bearer {org.admin_token}"},
        )
        _assert_unavailable(export)
        ready = await http.get(f"{served.base}/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        assert (await http.get(f"{served.base}/healthz")).status_code == 200

        log = served.log.read_text()
        assert "Traceback" not in log, log[-3000:]
        assert log.count("database unavailable") <= 3, log

        await proxy.up()
        response = await _recovered(http, served, org.admin_token)
        assert response.json()["data"]["viewer"]["role"] == "ADMIN"


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws"])
async def test_item9_database_down_a_new_websocket_is_refused_with_a_reason(
    org: Org, served: Served, proxy: PostgresProxy, subprotocol: str
):
    await proxy.down()
    init = json.dumps(
        {"type": "connection_init", "payload": {"Authorization": f"Bearer {org.admin_token}"}}
    )
    async with websockets.connect(served.ws, subprotocols=[subprotocol]) as ws:
        await ws.send(init)
        messages = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            for _ in range(5):
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    close = closed.value.rcvd
    assert close is not None
    if subprotocol == "graphql-ws":  # the legacy protocol says why in a message first
        assert messages and messages[0]["type"] == "connection_error", messages
        assert messages[0]["payload"]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert close.code == 1013, close  # try again later
    assert "database" in close.reason
    assert "Traceback" not in served.log.read_text()


async def test_item9_database_hung_requests_and_readyz_give_up_in_time(
    org: Org, served: Served, proxy: PostgresProxy
):
    async with httpx.AsyncClient() as http:
        assert (await _graphql(http, served, org.admin_token)).status_code == 200
        await proxy.hang()
        started = time.monotonic()
        _assert_unavailable(await _graphql(http, served, org.admin_token))
        assert time.monotonic() - started < 6  # statement timeout 1 s (+1 s on the client)

        started = time.monotonic()
        ready = await http.get(f"{served.base}/readyz", timeout=30)
        assert ready.status_code == 503
        assert time.monotonic() - started < 3  # the readiness timeout is 1 s
        assert (await http.get(f"{served.base}/healthz")).status_code == 200
        assert "Traceback" not in served.log.read_text()

        await proxy.up()
        await _recovered(http, served, org.admin_token)


async def test_item10_csv_export_neutralizes_formulas(org: Org, client):
    cycle = await active_cycle(org)
    o = await objective(org, cycle, '=HYPERLINK("http://evil.example","x")')
    await key_result(org, o, title="+1+cmd|' /C calc'!A0")
    await key_result(org, o, title="@SUM(A1:A2)", start=-5, target=5)
    await key_result(org, o, title="\tTabbed")
    await key_result(org, o, title="-2+3")
    response = await client.get(
        f"/export/cycles/{cycle}.csv", headers={"Authorization": f"Bearer {org.admin_token}"}
    )
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert rows
    for row in rows:
        for column, cell in row.items():
            if column in ("start", "target", "current", "progress", "objective_progress"):
                continue  # numbers stay numbers (a start of -5 is not a formula)
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)
    titles = {row["key_result"] for row in rows}
    assert "'+1+cmd|' /C calc'!A0" in titles
    assert "'@SUM(A1:A2)" in titles
    assert "'-2+3" in titles
    assert rows[0]["objective"].startswith("'=HYPERLINK")
    assert any(row["start"] == "-5.0" for row in rows)


async def test_readyz_is_ready_at_head_or_newer_and_not_when_behind(client, db):
    """docs/design.md, "Transport": a revision this build does not know (a later build
    migrated the database in a rolling deploy) counts as ready, so older pods stay in service;
    behind is not."""
    from sqlalchemy import text

    from service import migrate

    async def at(revision: str) -> httpx.Response:
        async with db.connect() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
            await conn.commit()
        return await client.get("/readyz")

    head = migrate.head_revision()
    assert (await client.get("/readyz")).json() == {"status": "ok", "migration": head, "head": head}
    newer = await at("9999_from_a_later_build")
    assert newer.status_code == 200 and newer.json()["status"] == "ok"
    behind = await at("0003")
    assert behind.status_code == 503
    assert behind.json() == {"status": "unavailable", "migration": "0003", "head": head}
    assert (await at(head)).status_code == 200
