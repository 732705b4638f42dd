"""Two real `okr serve` processes on one database deliver to a real receiver: each event
once while both live, and a kill -9 of one in the middle of a burst loses nothing (a
delivery it had in flight is made again by the other once its lease runs out)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter

import httpx
import pytest
from sqlalchemy import text
from standardwebhooks import Webhook

from service.auth import issue_token
from service.db import Database
from service.usecases import organizations
from tests.factories import JWT_SECRET, free_port, start_okr, stop_okr
from tests.receiver import Receiver, Reply, Request

pytestmark = pytest.mark.system

CONCURRENCY = 4  # jobs in flight per process: a kill may cut at most these short


async def _call(http: httpx.AsyncClient, port: int, token: str, query: str, variables: dict):
    r = await http.post(
        f"http://127.0.0.1:{port}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    body = r.json()
    assert "errors" not in body, body
    return body["data"]


CREATE_TEAM = "mutation($n: String!) { createTeam(input: {name: $n}) { team { id } } }"


async def test_two_processes_deliver_once_and_a_kill_loses_nothing(
    bin_okr: str, database_url: str, db: Database, tmp_path
):
    org, admin = await db.transaction(
        lambda s: organizations.create_organization(s, "Acme", "admin@acme.example")
    )
    token = issue_token(JWT_SECRET, admin.id, org.id)
    env = {
        **os.environ,
        "OKR_DATABASE_URL": database_url,
        "OKR_JWT_SECRET": JWT_SECRET,
        "OKR_DATA_DIR": str(tmp_path),
        "OKR_SECRETS_KEY": "a-secrets-key-for-the-two-processes-0123456789",
        "OKR_JOB_POLL_SECONDS": "0.1",
        "OKR_JOB_LEASE_SECONDS": "3",
        "OKR_JOB_CONCURRENCY": str(CONCURRENCY),
        "OKR_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
        "OKR_CHECK_IN_REMINDER_SECONDS": "0",
    }
    seen: Counter[str] = Counter()

    def answer(r: Request) -> Reply:
        seen[r.headers["webhook-id"]] += 1
        return Reply(200, b"ok", delay=0.05)  # slow enough for a kill to land mid-attempt

    log = subprocess.DEVNULL
    ports = [free_port(), free_port()]
    procs = [await start_okr(bin_okr, port, env, log) for port in ports]
    try:
        async with Receiver(answer) as r, httpx.AsyncClient(timeout=30) as http:
            created = await _call(
                http,
                ports[0],
                token,
                "mutation($u: String!) { createWebhookEndpoint(input: {url: $u, "
                "kinds: [TEAM_CREATED]}) { secret userErrors { message } } }",
                {"u": r.url + "/in"},
            )
            secret = created["createWebhookEndpoint"]["secret"]

            async def burst(names: range, spread: bool = True) -> None:
                for i in names:
                    port = ports[i % 2] if spread else ports[0]
                    await _call(http, port, token, CREATE_TEAM, {"n": f"Team {i}"})

            async def wait_for(n: int, seconds: float = 60) -> None:
                for _ in range(int(seconds / 0.01)):
                    if len(seen) >= n:
                        return
                    await asyncio.sleep(0.01)
                raise AssertionError(f"{len(seen)} of {n} events delivered")

            # Both alive: every event once.
            await burst(range(30))
            await wait_for(30)
            await asyncio.sleep(1.0)
            assert len(seen) == 30 and set(seen.values()) == {1}

            # A burst, and one process killed while deliveries are in flight.
            writing = asyncio.create_task(burst(range(30, 80), spread=False))
            await wait_for(40)
            procs[1].send_signal(signal.SIGKILL)
            await procs[1].wait()
            await writing
            await wait_for(80)
            await asyncio.sleep(4)  # past the dead process's leases
            assert len(seen) == 80
            again = sum(n - 1 for n in seen.values())
            assert again <= CONCURRENCY, seen  # only what the dead process had in flight
            for req in r.requests:
                headers = {
                    k: req.headers[k]
                    for k in ("webhook-id", "webhook-timestamp", "webhook-signature")
                }
                Webhook(secret).verify(req.body, headers)
    finally:
        for proc in procs:
            await stop_okr(proc)
    async with db.connect() as conn:
        statuses = (
            await conn.execute(
                text("SELECT status, count(*) FROM webhook_delivery GROUP BY status")
            )
        ).all()
        left = (await conn.execute(text("SELECT count(*) FROM job"))).scalar_one()
    assert dict(statuses) == {"SUCCEEDED": 80} and left == 0
