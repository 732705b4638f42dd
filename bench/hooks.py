"""Webhooks and metric sources (service/webhooks.py, service/sources.py), in process,
against a local keep-alive HTTP receiver:

    python -m bench.hooks            # prints JSON, writes bench/results/hooks.json

- deliveries: 10 endpoints listening, EVENTS events written, then one job runner
  (OKR_JOB_CONCURRENCY 10) delivers them all: deliveries per second, from the first
  turn to the last delivery settled (queueing from the outbox included);
- M1 with 10 endpoints listening: the check-in use case on a leaf key result four levels
  deep, one after another, without endpoints, then with 10 endpoints and a runner
  delivering in the same process meanwhile; the ratio of the medians (target <= 1.10);
- a source run: `run_source` of an HTTP_JSON source (request, then recordMeasurements of
  one value onto a bound key result) beside `recordMeasurements` of one value alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bench.common import BenchDatabase, seed_chain, step, write_report
from service import background, sources, webhooks
from service.db import Database
from service.domain.enums import MetricSourceKind
from service.domain.principal import Principal
from service.models import pk_of
from service.outbound import Outbound
from service.secrets import Box
from service.settings import Settings
from service.usecases import commands, key_results, metrics

ENDPOINTS = 10


async def receiver() -> tuple[asyncio.Server, int, list[int]]:
    """A keep-alive HTTP/1.1 server answering 204 to everything; counts requests."""
    count = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                count[0] += 1
                body = b'{"value": 42.5}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], count


async def admin_of(db: Database) -> Principal:
    async with db.connect() as conn:
        row = (await conn.execute(text("SELECT id, organization_id FROM app_user"))).one()
    return Principal(organization_id=row.organization_id, role="ADMIN", user_id=row.id)


async def add_endpoints(db: Database, p: Principal, url: str, settings: Settings) -> None:
    outbound, box = Outbound.from_settings(settings), Box.from_settings(settings)
    for i in range(ENDPOINTS):
        cmd = webhooks.CreateEndpoint(f"{url}/{i}", None, (), None)

        async def create(s: AsyncSession, c: webhooks.CreateEndpoint = cmd) -> webhooks.Saved:
            return await webhooks.create_endpoint(s, p, c, outbound=outbound, box=box)

        await db.transaction(create)


async def check_ins(db: Database, p: Principal, kr: int, n: int, start: float) -> list[float]:
    times = []
    for i in range(n):
        cmd = commands.CheckIn(key_result_id=kr, value=start + i % 500)
        began = time.perf_counter()
        await db.transaction(step(key_results.check_in, p, cmd))
        times.append((time.perf_counter() - began) * 1000)
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {
        "n": len(times),
        "p50_ms": round(statistics.median(times), 3),
        "mean_ms": round(statistics.fmean(times), 3),
    }


async def run(url: str, events: int, m1_runs: int, source_runs: int) -> dict[str, Any]:
    _token, krs = await seed_chain(url)
    from schema.ids import decode_as

    leaf = decode_as(krs[-1], "KeyResult")
    db = Database(url, pool_size=20)
    settings = Settings(
        database_url=None,
        job_poll_seconds=0.01,
        job_concurrency=10,
        secrets_key=SecretStr("b" * 40),
    )
    server, port, count = await receiver()
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {}
    try:
        p = await admin_of(db)
        # M1 without endpoints.
        await check_ins(db, p, leaf, 50, 0)  # warm
        alone = await check_ins(db, p, leaf, m1_runs, 1)

        # Deliveries per second: 10 endpoints, `events` events.
        await add_endpoints(db, p, base, settings)
        await check_ins(db, p, leaf, events, 2)
        runner = background.runner(db, settings)
        began = time.perf_counter()
        delivering = asyncio.create_task(runner.run_forever())
        while True:
            await asyncio.sleep(0.05)
            async with db.connect() as conn:
                left = (await conn.execute(text("SELECT count(*) FROM job"))).scalar_one()
                queued = await conn.scalar(
                    text(
                        "SELECT count(*) FROM webhook_endpoint e JOIN organization o "
                        "ON o.id = e.organization_id WHERE e.last_seq < o.event_seq"
                    )
                )
            if left == 0 and queued == 0:
                break
        elapsed = time.perf_counter() - began
        delivering.cancel()
        async with db.connect() as conn:
            done = await conn.scalar(
                text("SELECT count(*) FROM webhook_delivery WHERE status = 'SUCCEEDED'")
            )
        results["deliveries"] = {
            "endpoints": ENDPOINTS,
            "events": events,
            "delivered": done,
            "received": count[0],
            "seconds": round(elapsed, 2),
            "per_second": round(done / elapsed, 1),
        }

        # M1 with the 10 endpoints listening: the check-in's own cost (nothing is queued
        # in its transaction), then with the runner delivering what it causes meanwhile,
        # in the same process (the CPU and the database shared with the deliveries).
        listening = await check_ins(db, p, leaf, m1_runs, 3)
        delivering = asyncio.create_task(runner.run_forever())
        try:
            busy = await check_ins(db, p, leaf, m1_runs, 4)
        finally:
            delivering.cancel()
        results["m1"] = {
            "no_endpoints": summary(alone),
            "ten_endpoints_listening": summary(listening),
            "ten_endpoints_delivering_meanwhile": summary(busy),
            "p50_ratio_listening": round(
                statistics.median(listening) / statistics.median(alone), 3
            ),
            "p50_ratio_delivering_meanwhile": round(
                statistics.median(busy) / statistics.median(alone), 3
            ),
        }

        # A source run beside a bare recordMeasurements of one value.
        created = await db.transaction(
            step(metrics.create_metric, p, commands.CreateMetric("bench_rate", "Rate"))
        )
        metric_id = pk_of(created)
        await db.transaction(
            step(metrics.bind_key_result, p, commands.BindKeyResult(leaf, metric_id))
        )
        outbound, box = Outbound.from_settings(settings), Box.from_settings(settings)
        cmd = sources.SetSource(metric_id, MetricSourceKind.HTTP_JSON, base, "/value", 60)
        await db.transaction(lambda s: sources.set_source(s, p, cmd, outbound=outbound, box=box))
        service = Principal(organization_id=p.organization_id, role="SERVICE")
        bare, pulled = [], []
        t0 = int(datetime.now(UTC).timestamp()) - 2 * source_runs - 10
        for i in range(source_runs):
            at = datetime.fromtimestamp(t0 + 2 * i, UTC)
            item = metrics.MeasurementInput("bench_rate", 40.0 + i % 7, at, "bench", f"b{i}")
            began = time.perf_counter()
            await db.transaction(step(metrics.record_measurements, service, [item]))
            bare.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            await sources.run_source(
                db, outbound, box, metric_id, datetime.fromtimestamp(t0 + 2 * i + 1, UTC)
            )
            pulled.append((time.perf_counter() - began) * 1000)
        await outbound.close()
        results["source_run"] = {
            "record_measurements_one": summary(bare),
            "source_run_http_json": summary(pulled),
            "overhead_p50_ms": round(statistics.median(pulled) - statistics.median(bare), 3),
        }
    finally:
        server.close()
        await db.dispose()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300, help="events for the deliveries run")
    ap.add_argument("--m1-runs", type=int, default=300)
    ap.add_argument("--source-runs", type=int, default=100)
    args = ap.parse_args()
    database = BenchDatabase()
    asyncio.run(database.create())
    try:
        results = asyncio.run(run(database.url, args.events, args.m1_runs, args.source_runs))
    finally:
        asyncio.run(database.drop())
        database.close()
    report = {
        "benchmark": "webhooks and metric sources",
        "date": datetime.now().isoformat(timespec="seconds"),
        "results": results,
    }
    write_report("hooks.json", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
