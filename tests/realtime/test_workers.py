"""`okr serve --workers N` with real processes: N workers on one port, each with its own
event listener and its own listening socket, so a subscriber on one worker sees a
check-in made through another, in order; sockets and requests spread over the workers;
and the server drains and exits cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psutil
import pytest
import websockets
from sqlalchemy import text

from schema import ids
from tests.factories import JWT_SECRET, SERVER_LOG, Org, Tree, free_port, stop_okr

SUBSCRIPTION = "subscription { progressChanged { cursor checkIn { value } } }"
CHECK_IN = "mutation($i: CheckInInput!) { checkIn(input: $i) { userErrors { message } } }"


async def serve_workers(
    bin_okr: str, database_url: str, tmp_path, n: int, **settings: str
) -> tuple[Any, int]:
    port = free_port()
    env = {
        **os.environ,
        "OKR_DATABASE_URL": database_url,
        "OKR_JWT_SECRET": JWT_SECRET,
        "OKR_DATA_DIR": str(tmp_path),
        "OKR_EVENT_POLL_SECONDS": "2",
        **settings,
    }
    proc = await asyncio.create_subprocess_exec(
        bin_okr,
        *("serve", "--port", str(port), "--workers", str(n), "--log-level", "warning"),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=SERVER_LOG,
        stderr=subprocess.STDOUT,
    )
    # Ready once every worker answers on its own socket: the first to bind answers
    # /readyz before the others listen, and the kernel only hashes over bound sockets.
    seen: set[str] = set()
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each
    async with httpx.AsyncClient(limits=limits) as http:
        for _ in range(600):
            try:
                r = await http.get(f"http://127.0.0.1:{port}/readyz")
                if r.status_code == 200:
                    seen.add(r.headers["x-okr-worker"])
                    if len(seen) == n:
                        return proc, port
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    await stop_okr(proc)
    raise AssertionError(f"okr serve --workers did not come up ({len(seen)} of {n} answered)")


async def worker_pids(supervisor: int, n: int) -> list[int]:
    """The pids of the supervisor's `n` worker processes, once all are up."""
    parent = psutil.Process(supervisor)
    for _ in range(300):
        children = [
            c.pid
            for c in parent.children()
            # not multiprocessing's resource tracker, which the supervisor starts too
            if c.is_running() and "resource_tracker" not in " ".join(c.cmdline())
        ]
        if len(children) == n:
            return sorted(children)
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {n} workers, found {parent.children()}")


async def subscriber(port: int, token: str) -> tuple[Any, str]:
    """A raw graphql-transport-ws subscriber, and the pid of the worker it landed on."""
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/graphql",
        subprotocols=["graphql-transport-ws"],
        open_timeout=30,  # a loaded machine (the suite runs on two cores at once)
    )
    pid = ws.response.headers["x-okr-worker"]
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}))
    return ws, pid


async def on_every_worker(port: int, token: str, workers: list[int]) -> dict[str, Any]:
    """One subscriber on each worker: sockets are opened (each a new connection, which
    the kernel hands to one worker's socket by a hash of its addresses) until every
    worker has one; the extra ones are closed."""
    sockets: dict[str, Any] = {}
    for _ in range(100):
        ws, landed = await subscriber(port, token)
        if landed in sockets:
            await ws.close()
        else:
            sockets[landed] = ws
        if len(sockets) == len(workers):
            return sockets
    for ws in sockets.values():
        await ws.close()
    raise AssertionError(f"100 sockets landed on {sorted(sockets)} only, of {workers}")


@pytest.mark.system  # several worker processes: .ci/run runs it
async def test_a_subscriber_on_one_worker_sees_check_ins_made_through_another(
    bin_okr, database_url, tmp_path, tree: Tree, org: Org
):
    proc, port = await serve_workers(bin_okr, database_url, tmp_path, 2)
    sockets: dict[str, Any] = {}
    try:
        workers = await worker_pids(proc.pid, 2)
        sockets = await on_every_worker(port, org.admin_token, workers)
        assert set(sockets) == {str(p) for p in workers}  # workers, not the supervisor
        await asyncio.sleep(0.5)
        kr = tree.gid("KeyResult", tree.kr_x)
        through: list[str] = []
        value = 0

        async def post(http: httpx.AsyncClient, v: int) -> str:
            r = await http.post(
                f"http://127.0.0.1:{port}/graphql",
                headers={"Authorization": f"Bearer {org.admin_token}", "Connection": "close"},
                json={"query": CHECK_IN, "variables": {"i": {"keyResultId": kr, "value": v}}},
            )
            assert r.json()["data"]["checkIn"]["userErrors"] == [], r.text
            return r.headers["x-okr-worker"]

        async with httpx.AsyncClient(timeout=30) as http:
            # Check-ins on fresh connections until each worker has made three.
            while min(through.count(str(p)) for p in workers) < 3:
                assert value < 60, through
                value += 1
                through.append(await post(http, value))
        assert set(through) == set(sockets), through
        streams = []
        for ws in sockets.values():
            seen = []
            for _ in range(value):
                message = json.loads(await asyncio.wait_for(ws.recv(), 15))
                assert message["type"] == "next", message
                event = message["payload"]["data"]["progressChanged"]
                seen.append((ids.uncursor(event["cursor"]), event["checkIn"]["value"]))
            streams.append(seen)
            assert sorted(v for _, v in seen) == list(range(1, value + 1))  # every one, once
            assert [c for c, _ in seen] == sorted(c for c, _ in seen)  # in commit order
        assert streams[0] == streams[1]  # both workers' subscribers saw the same feed
    finally:
        for ws in sockets.values():
            await ws.close()
        proc.terminate()
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0  # drained and exited cleanly


@pytest.mark.system  # several worker processes: .ci/run runs it
async def test_workers_share_sockets_and_requests(bin_okr, database_url, tmp_path):
    """Each worker listens on a socket of its own (SO_REUSEPORT): the kernel picks one by
    a hash of the connection's addresses, not by which worker wakes first, so how busy a
    worker is (this machine's other tests) does not skew it. Each of two workers gets at
    least 30% of 200 sockets held open at once, and of 200 requests on fresh
    connections (a fair coin gives fewer than 60 of 200 once in 10^8)."""
    proc, port = await serve_workers(bin_okr, database_url, tmp_path, 2)
    held: list[Any] = []
    try:
        workers = {str(p) for p in await worker_pids(proc.pid, 2)}

        async def one() -> str:
            ws = await websockets.connect(
                f"ws://127.0.0.1:{port}/graphql",
                subprotocols=["graphql-transport-ws"],
                open_timeout=30,
            )
            held.append(ws)
            return ws.response.headers["x-okr-worker"]

        sockets = Counter(await asyncio.gather(*(one() for _ in range(200))))
        assert set(sockets) == workers, sockets
        assert min(sockets.values()) >= 60, sockets
        requests: Counter[str] = Counter()
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            for _ in range(200):
                r = await http.get(f"http://127.0.0.1:{port}/readyz")
                requests[r.headers["x-okr-worker"]] += 1
        assert set(requests) == workers, requests
        assert min(requests.values()) >= 60, requests
    finally:
        await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0


@pytest.mark.system  # several worker processes: .ci/run runs it
async def test_reminders_are_written_once_across_workers(
    bin_okr, database_url, tmp_path, tree: Tree, db
):
    # Both key results fell silent: the workers' clock reads a month from now; three
    # workers race to remind.
    month_later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    proc, _port = await serve_workers(
        bin_okr,
        database_url,
        tmp_path,
        3,
        OKR_CHECK_IN_REMINDER_SECONDS="0.1",
        OKR_CLOCK_START=month_later,
    )
    try:
        await asyncio.sleep(3)  # dozens of runs of the job in each worker
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT subject_id, count(*) AS n FROM event WHERE kind = 'CHECK_IN_DUE' "
                    "GROUP BY subject_id ORDER BY subject_id"
                )
            )
        ).all()
    assert [(r.subject_id, r.n) for r in rows] == sorted([(tree.kr_x.id, 1), (tree.kr_y.id, 1)])


def test_workers_must_be_positive(bin_okr):
    done = subprocess.run(
        [bin_okr, "serve", "--workers", "0"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "must be at least 1" in done.stderr
