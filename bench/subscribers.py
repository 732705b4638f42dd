"""Commit-to-client latency of progressChanged with many concurrent subscribers.

One `okr serve` process (or `--workers N`); the subscribers live in other processes
(raw WebSocket clients speaking graphql-transport-ws), opened at a steady rate
(`--rate`, 1,000 a second by default) as 100 distinct members (ten teams of ten, so
ten visibility classes). A poster commits check-ins at a steady pace; each subscriber
stamps every frame as it arrives and records arrival time minus the event's
`occurredAt` (the database clock at the outbox insert, just before commit).
Connections that fail to open, authenticate or subscribe are counted, not retried.

The same client, in the same run, first against the bare server of the same stack
(bench/bare_ws.py: the limit), then against the service; the table at the end gives
both and the service's ratio to the limit (accepted, p50, p99).

    python -m bench.subscribers                          # 2,000 subscribers, 5 events
    python -m bench.subscribers --subscribers 10000 --workers 2

Prints JSON lines and a table (the report is written to bench/results/subscribers.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import websockets
from websockets.typing import Subprotocol

from bench.common import (
    JWT_SECRET,
    BenchDatabase,
    ServerProcess,
    free_port,
    percentile,
    seed_chain,
    step,
    write_report,
)
from service.models import pk_of

SUBSCRIPTION = "subscription { progressChanged { cursor occurredAt } }"
CHECK_IN = "mutation($i: CheckInInput!) { checkIn(input: $i) { userErrors { message } } }"
MEMBERS = 100
TEAMS = 10


async def _client(
    ws_url: str,
    tokens: list[str],
    count: int,
    rate: float,
    events: int,
    read_seconds: float,
    ready,
    out,
) -> None:
    latencies: list[tuple[str, float]] = []  # (the event's cursor, ms)
    failures: list[str] = []
    workers: Counter[str] = Counter()  # sockets per worker pid (the service's header)
    started = time.monotonic()

    async def one(i: int) -> websockets.ClientConnection | None:
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        try:
            ws = await websockets.connect(
                ws_url,
                subprotocols=[Subprotocol("graphql-transport-ws")],
                compression=None,
                open_timeout=60,
                ping_interval=None,
                max_queue=None,
            )
            if ws.response is not None and "x-okr-worker" in ws.response.headers:
                workers[ws.response.headers["x-okr-worker"]] += 1
            token = tokens[i % len(tokens)]
            await ws.send(
                json.dumps(
                    {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
                )
            )
            ack = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if ack.get("type") != "connection_ack":
                raise RuntimeError(f"refused: {ack}")
            await ws.send(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
            )
            return ws
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}"[:200])
            return None

    opened = await asyncio.gather(*(one(i) for i in range(count)))
    conns = [ws for ws in opened if ws is not None]
    out.put(
        ("opened", len(conns), failures[:5], len(failures), time.monotonic() - started, workers)
    )
    ready.set()

    async def read(ws) -> None:
        for _ in range(events):
            frame = await ws.recv()
            arrived = time.time()  # stamped at arrival, before anything is parsed
            message = json.loads(frame)
            event = message["payload"]["data"]["progressChanged"]
            occurred = datetime.fromisoformat(event["occurredAt"]).timestamp()
            latencies.append((event["cursor"], (arrived - occurred) * 1000))

    try:
        # Every socket reads until it has every event or the run is over (a socket
        # whose events never came counts as missed deliveries, not a hang).
        await asyncio.wait_for(
            asyncio.gather(*(read(ws) for ws in conns), return_exceptions=True), read_seconds
        )
    except TimeoutError:
        pass
    finally:
        out.put(("latencies", latencies))
        await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


def client_process(ws_url, tokens, count, rate, events, read_seconds, ready, out) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_client(ws_url, tokens, count, rate, events, read_seconds, ready, out))


def subscribers_on_server(base: str, workers: int = 1) -> int:
    """The server's own count (summed over its workers, each reached on fresh
    connections until every one has answered); -1 while it is too busy to answer."""
    counts: dict[str, int] = {}
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=30, limits=limits) as http:
        for _ in range(50 * workers):
            try:
                r = http.get(f"{base}/metrics")
            except httpx.TransportError:
                return -1
            for line in r.text.splitlines():
                if line.startswith("okr_subscribers "):
                    counts[r.headers.get("x-okr-worker", "")] = int(float(line.split()[1]))
            if len(counts) >= workers:
                return sum(counts.values())
    return -1


class Target:
    """A server the subscribers connect to: where it listens, how an event is made
    there, and its processes (for their CPU time and memory)."""

    def __init__(
        self, name: str, port: int, pid: int, post: Callable[[int], None], workers: int = 1
    ) -> None:
        self.name = name
        self.workers = workers
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.pid = pid
        self.post = post
        self.subscribers = 0

    def processes(self) -> list[psutil.Process]:
        top = psutil.Process(self.pid)
        return [top, *top.children(recursive=True)]


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class Profile:
    """`OKR_BENCH_PYSPY=<folder>`: py-spy records the server's processes during one
    phase (raw collapsed stacks, idle frames included), to <folder>/<name>-<phase>.txt."""

    def __init__(self, target: Target, phase: str) -> None:
        self.recorders: list[subprocess.Popen] = []
        folder = os.environ.get("OKR_BENCH_PYSPY")
        if not folder:
            return
        spy = Path(sys.executable).parent / "py-spy"
        for p in target.processes():
            if "resource_tracker" in " ".join(p.cmdline()):
                continue
            out = (
                Path(folder)
                / f"{target.name.replace(' ', '')}-{target.subscribers}-{phase}-{p.pid}.txt"
            )
            self.recorders.append(
                subprocess.Popen(
                    [
                        str(spy),
                        "record",
                        "-p",
                        str(p.pid),
                        "-f",
                        "raw",
                        "--idle",
                        "-r",
                        "200",
                        "-o",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(1.0)  # attached

    def stop(self) -> None:
        for rec in self.recorders:
            rec.send_signal(signal.SIGINT)
        for rec in self.recorders:
            rec.wait(60)


def run(
    target: Target,
    tokens: list[str],
    n: int,
    events: int,
    interval: float,
    processes: int,
    rate: float,
    subscribe_wait: float = 180.0,
) -> dict:
    target.subscribers = n
    # One event before anyone listens: the first write of a fresh process compiles and
    # prepares its statements after the event's instant is taken. Both servers get it.
    target.post(0)
    time.sleep(0.5)
    profile = Profile(target, "connect")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    readies, procs = [], []
    per = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    for count in per:
        ready = ctx.Event()
        proc = ctx.Process(
            target=client_process,
            args=(
                f"ws://127.0.0.1:{target.port}/graphql",
                tokens,
                count,
                rate / processes,
                events,
                subscribe_wait + events * interval + 60,
                ready,
                out,
            ),
        )
        proc.start()
        readies.append(ready)
        procs.append(proc)
    opened, failed, samples, open_seconds = 0, 0, [], 0.0
    per_worker: Counter[str] = Counter()
    for _ in procs:
        _, ok, sample, bad, seconds, landed = out.get(timeout=600)
        per_worker += landed
        opened, failed = opened + ok, failed + bad
        samples += sample
        open_seconds = max(open_seconds, seconds)
    for ready in readies:
        if not ready.wait(600):
            raise RuntimeError("clients did not connect")
    # Subscribe messages may still be queued on the server: wait until it counts them.
    waited = time.time()
    deadline = waited + subscribe_wait
    while subscribers_on_server(target.base, target.workers) < opened and time.time() < deadline:
        time.sleep(0.2)
    registered = subscribers_on_server(target.base, target.workers)
    waited = time.time() - waited
    profile.stop()
    time.sleep(1.0)
    profile = Profile(target, "deliver")
    server_ps = target.processes()
    cpu_before = _cpu(server_ps)
    peak_rss = _rss(server_ps)
    started = time.time()
    for i in range(events):
        target.post(i)
        peak_rss = max(peak_rss, _rss(server_ps))
        time.sleep(interval)
    stamped: list[tuple[str, float]] = []
    for _ in procs:
        stamped += out.get(timeout=900)[1]
        peak_rss = max(peak_rss, _rss(server_ps))
    finished = time.time()
    profile.stop()
    for proc in procs:
        proc.join(60)
    cpu = _cpu(server_ps) - cpu_before
    latencies = [ms for _, ms in stamped]
    by_event: dict[str, list[float]] = {}
    for cursor, ms in stamped:
        by_event.setdefault(cursor, []).append(ms)
    deadline = time.time() + 60
    while subscribers_on_server(target.base, target.workers) > 0 and time.time() < deadline:
        time.sleep(0.2)
    return {
        "server": target.name,
        "subscribers": n,
        "opened_per_second": rate,
        "members": len(tokens),
        "accepted": opened,
        "accept_failures": failed,
        "failure_samples": samples[:5],
        "seconds_to_open": round(open_seconds, 1),
        "sockets_per_worker": sorted(per_worker.values(), reverse=True),
        "subscribed_before_first_event": registered,
        "seconds_until_subscribed": round(waited, 1),
        "missed_deliveries": opened * events - len(latencies),
        "events": events,
        "deliveries": len(latencies),
        "latency_ms_p50": round(percentile(latencies, 50), 1),
        "latency_ms_p99": round(percentile(latencies, 99), 1),
        "latency_ms_max": round(max(latencies), 1) if latencies else None,
        "deliveries_per_second": round(len(latencies) / (finished - started), 1),
        # each event's fastest, median and slowest arrival, in the order they were made
        "per_event_ms": [
            [round(min(v), 1), round(percentile(v, 50), 1), round(max(v), 1)]
            for v in by_event.values()
        ],
        "server_cpu_seconds": round(cpu, 2),
        "server_peak_rss_mb": round(peak_rss / 2**20, 1),
    }


def service_target(server: ServerProcess, token: str, kr: str, name: str, workers: int) -> Target:
    http = httpx.Client(timeout=60)

    def post(i: int) -> None:
        r = http.post(
            f"{server.base}/graphql",
            headers={"Authorization": f"Bearer {token}"},
            json={"query": CHECK_IN, "variables": {"i": {"keyResultId": kr, "value": i}}},
        )
        assert r.json()["data"]["checkIn"]["userErrors"] == [], r.text

    return Target(name, server.port, server.proc.pid, post, workers)


class BareServer:
    """bench/bare_ws.py under uvicorn, with the WebSocket implementation `okr serve`
    uses."""

    def __init__(self) -> None:
        from service.cli import _has_sansio

        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.bare_ws:app",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--ws",
                "websockets-sansio" if _has_sansio() else "auto",
            ],
            stdin=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        http = httpx.Client(timeout=60)

        def post(i: int) -> None:
            http.post(f"{self.base}/event").raise_for_status()

        self.target = Target("bare", self.port, self.proc.pid, post)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def ratios(service: dict, bare: dict) -> dict:
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b and a == a and b == b else None

    return {
        "subscribers": service["subscribers"],
        "accepted_ratio": ratio(service["accepted"], bare["accepted"]),
        "p50_ratio": ratio(service["latency_ms_p50"], bare["latency_ms_p50"]),
        "p99_ratio": ratio(service["latency_ms_p99"], bare["latency_ms_p99"]),
        "targets_met": {
            "accepted": service["accepted"] >= bare["accepted"] * 0.995,
            "p50": service["latency_ms_p50"] <= 1.5 * bare["latency_ms_p50"],
            "p99": service["latency_ms_p99"] <= 1.5 * bare["latency_ms_p99"],
        },
    }


def table(rows: list[tuple[dict, dict, dict]]) -> str:
    lines = [
        "| subscribers | server | accepted | failed | p50 ms | p99 ms | max ms "
        "| missed | server CPU s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for bare, service, r in rows:
        for x in (bare, service):
            lines.append(
                f"| {x['subscribers']:,} | {x['server']} | {x['accepted']:,} "
                f"| {x['accept_failures']:,} | {x['latency_ms_p50']} | {x['latency_ms_p99']} "
                f"| {x['latency_ms_max']} | {x['missed_deliveries']:,} "
                f"| {x['server_cpu_seconds']} | {x['server_peak_rss_mb']} |"
            )
        lines.append(
            f"| {r['subscribers']:,} | service / bare | {r['accepted_ratio']} | "
            f"| {r['p50_ratio']} | {r['p99_ratio']} | | | | |"
        )
    return "\n".join(lines)


async def prepare(database: BenchDatabase) -> tuple[str, list[str], list[str]]:
    """The chain, and MEMBERS members in TEAMS teams: (admin token, key results, member
    tokens)."""
    from sqlalchemy import text

    from service.auth import issue_token
    from service.db import Database
    from service.domain import enums as domain_enums
    from service.domain.principal import Principal
    from service.usecases import commands, organizations

    await database.create()
    token, krs = await seed_chain(database.url)
    db = Database(database.url, pool_size=2)
    try:
        async with db.connect() as conn:
            admin = (
                await conn.execute(
                    text("SELECT id, organization_id FROM app_user WHERE email = :e"),
                    {"e": "bench@bench.example"},
                )
            ).one()
        p = Principal(organization_id=admin.organization_id, role="ADMIN", user_id=admin.id)
        tokens = []
        teams = [
            await db.transaction(
                step(organizations.create_team, p, commands.CreateTeam(f"Wall {t}", None))
            )
            for t in range(TEAMS)
        ]
        for m in range(MEMBERS):
            user = await db.transaction(
                step(
                    organizations.create_user,
                    p,
                    commands.CreateUser(
                        f"Screen {m}", f"screen{m}@bench.example", domain_enums.Role.MEMBER
                    ),
                )
            )
            team = teams[m % TEAMS]
            await db.transaction(
                step(
                    organizations.add_team_member,
                    p,
                    commands.TeamMember(pk_of(team), pk_of(user)),
                )
            )
            tokens.append(issue_token(JWT_SECRET, pk_of(user), admin.organization_id))
    finally:
        await db.dispose()
    return token, krs, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, nargs="+", default=[2000])
    ap.add_argument("--events", type=int, default=5)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between check-ins")
    ap.add_argument("--client-processes", type=int, default=4)
    ap.add_argument("--rate", type=float, default=1000.0, help="connections opened a second")
    ap.add_argument("--workers", type=int, default=1, help="okr serve --workers N")
    ap.add_argument("--out", default="subscribers.json", help="file name in bench/results")
    args = ap.parse_args()

    database = BenchDatabase()
    token, krs, tokens = asyncio.run(prepare(database))
    serve_args = ("--workers", str(args.workers)) if args.workers > 1 else ()
    server = ServerProcess(
        database.url, *serve_args, OKR_SUBSCRIBER_QUEUE_SIZE="10000", OKR_POOL_SIZE="10"
    )
    bare = BareServer()
    results = []
    rows = []
    try:
        server.wait_ready()
        name = "service" if args.workers == 1 else f"service --workers {args.workers}"
        service = service_target(server, token, krs[-1], name, args.workers)
        for n in args.subscribers:
            common = (tokens, n, args.events, args.interval, args.client_processes, args.rate)
            limit = run(bare.target, *common)
            print(json.dumps(limit), flush=True)
            measured = run(service, *common)
            print(json.dumps(measured), flush=True)
            r = ratios(measured, limit)
            print(json.dumps(r), flush=True)
            results.append({"bare": limit, "service": measured, "ratios": r})
            rows.append((limit, measured, r))
    finally:
        bare.stop()
        server.stop()
        asyncio.run(database.drop())
        database.close()
    report = {
        "benchmark": "subscribers",
        "date": datetime.now().isoformat(timespec="seconds"),
        "cpus": psutil.cpu_count(),
        "workers": args.workers,
        "results": results,
    }
    write_report(args.out, report)
    print(table(rows))


if __name__ == "__main__":
    main()
