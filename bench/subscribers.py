"""Commit-to-client latency of progressChanged with many concurrent subscribers.

One `okr serve` process; the subscribers live in other processes (raw WebSocket
clients speaking graphql-transport-ws). A poster commits check-ins at a steady pace;
each subscriber records, for every event, its arrival time minus the event's
`occurredAt` (the database clock at the outbox insert, just before commit).

    python -m bench.subscribers --subscribers 100 1000 10000

Prints a JSON report (also written to bench/results/subscribers.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import time
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import websockets

from bench.common import BenchDatabase, ServerProcess, percentile, seed_chain

SUBSCRIPTION = "subscription { progressChanged { cursor occurredAt } }"
CHECK_IN = "mutation($i: CheckInInput!) { checkIn(input: $i) { userErrors { message } } }"


async def _client(ws_url: str, token: str, count: int, events: int, ready, go, out) -> None:
    latencies: list[float] = []
    gate = asyncio.Semaphore(100)

    async def one() -> websockets.ClientConnection:
        async with gate:
            ws = await websockets.connect(
                ws_url,
                subprotocols=["graphql-transport-ws"],
                compression=None,
                open_timeout=60,
                ping_interval=None,
            )
            await ws.send(
                json.dumps(
                    {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
                )
            )
            await ws.recv()
            await ws.send(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
            )
            return ws

    conns = await asyncio.gather(*(one() for _ in range(count)))
    ready.set()

    async def read(ws) -> None:
        for _ in range(events):
            message = json.loads(await ws.recv())
            arrived = time.time()
            occurred = datetime.fromisoformat(
                message["payload"]["data"]["progressChanged"]["occurredAt"]
            ).timestamp()
            latencies.append((arrived - occurred) * 1000)

    try:
        await asyncio.wait_for(asyncio.gather(*(read(ws) for ws in conns)), 600)
    finally:
        out.put(latencies)
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


def client_process(ws_url, token, count, events, ready, go, out) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_client(ws_url, token, count, events, ready, go, out))


def subscribers_on_server(base: str) -> int:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("okr_subscribers "):
            return int(float(line.split()[1]))
    return -1


def run(
    server: ServerProcess,
    token: str,
    krs: list[str],
    n: int,
    events: int,
    interval: float,
    processes: int,
) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    readies, procs = [], []
    per = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    for count in per:
        ready = ctx.Event()
        proc = ctx.Process(
            target=client_process,
            args=(f"ws://127.0.0.1:{server.port}/graphql", token, count, events, ready, None, out),
        )
        proc.start()
        readies.append(ready)
        procs.append(proc)
    for ready in readies:
        if not ready.wait(600):
            raise RuntimeError("clients did not connect")
    deadline = time.time() + 120
    while subscribers_on_server(server.base) < n and time.time() < deadline:
        time.sleep(0.2)
    server_ps = psutil.Process(server.proc.pid)
    cpu_before = server_ps.cpu_times()
    peak_rss = server_ps.memory_info().rss
    started = time.time()
    with httpx.Client(timeout=60) as http:
        for i in range(events):
            r = http.post(
                f"{server.base}/graphql",
                headers={"Authorization": f"Bearer {token}"},
                json={"query": CHECK_IN, "variables": {"i": {"keyResultId": krs[-1], "value": i}}},
            )
            assert r.json()["data"]["checkIn"]["userErrors"] == [], r.text
            peak_rss = max(peak_rss, server_ps.memory_info().rss)
            time.sleep(interval)
    latencies: list[float] = []
    for _ in procs:
        latencies += out.get(timeout=900)
        peak_rss = max(peak_rss, server_ps.memory_info().rss)
    finished = time.time()
    for proc in procs:
        proc.join(60)
    cpu_after = server_ps.cpu_times()
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    deadline = time.time() + 60
    while subscribers_on_server(server.base) > 0 and time.time() < deadline:
        time.sleep(0.2)
    return {
        "subscribers": n,
        "events": events,
        "deliveries": len(latencies),
        "latency_ms_p50": round(percentile(latencies, 50), 1),
        "latency_ms_p99": round(percentile(latencies, 99), 1),
        "latency_ms_max": round(max(latencies), 1) if latencies else None,
        "deliveries_per_second": round(len(latencies) / (finished - started), 1),
        "server_cpu_seconds": round(cpu, 2),
        "server_peak_rss_mb": round(peak_rss / 2**20, 1),
    }


async def prepare(database: BenchDatabase) -> tuple[str, list[str]]:
    await database.create()
    return await seed_chain(database.url)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between check-ins")
    ap.add_argument("--client-processes", type=int, default=2)
    args = ap.parse_args()

    database = BenchDatabase()
    token, krs = asyncio.run(prepare(database))
    server = ServerProcess(database.url, OKR_SUBSCRIBER_QUEUE_SIZE="10000", OKR_POOL_SIZE="10")
    results = []
    try:
        server.wait_ready()
        for n in args.subscribers:
            result = run(server, token, krs, n, args.events, args.interval, args.client_processes)
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        server.stop()
        asyncio.run(database.drop())
        database.close()
    report = {
        "benchmark": "subscribers",
        "date": datetime.now().isoformat(timespec="seconds"),
        "cpus": psutil.cpu_count(),
        "results": results,
    }
    target = Path(__file__).parent / "results" / "subscribers.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
