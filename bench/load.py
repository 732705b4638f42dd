"""The load benchmark: each operation for a fixed time at a fixed concurrency against
one `okr serve` process, and the same rows through the bare limit (bench/limit.py).

    python -m bench.load            # seeds scale 1, runs Q1 Q2 Q3 Q4 M1, prints JSON

Q1 team dashboard; Q2 the whole alignment tree of the cycle in one request; Q3 a key
result's 100 latest check-ins; Q4 a key result's detail page (its fields, status,
staleness, next due, forecast and 50 latest check-ins); M1 a check-in that rolls up
four levels. Every timed response is parsed, the limit's as well as the service's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from datetime import datetime

import asyncpg
import httpx
import psutil

from bench.common import (
    JWT_SECRET,
    BenchDatabase,
    ServerProcess,
    free_port,
    percentile,
    write_report,
)
from bench.seed import seed
from schema.ids import encode
from service.auth import issue_token

Q1 = """query($team: ID!, $cycle: ID!) { node(id: $team) { ... on Team {
  objectives(cycleId: $cycle, first: 50) { edges { node {
    id title progress status owner { name }
    keyResults { title progress status currentValue lastCheckIn { value createdAt } }
  } } } } } }"""
Q2 = """query($cycle: ID!) { objectives(first: 100, filter: {cycleId: $cycle, rootsOnly: true}) {
  edges { node { id title progress status descendants { id title progress status } } } } }"""
Q3 = """query($kr: ID!) { node(id: $kr) { ... on KeyResult {
  checkIns(first: 100) { edges { node { value note createdAt } } } } } }"""
Q4 = """query($kr: ID!) { node(id: $kr) { ... on KeyResult {
  id title type progress status currentValue targetValue stale nextCheckInDue
  forecast { value progress status }
  checkIns(first: 50) { edges { node { value note measuredAt createdAt } } } } } }"""
M1 = """mutation($input: CheckInInput!) { checkIn(input: $input) {
  keyResult { progress } userErrors { code message } } }"""


class Target:
    def __init__(
        self, org: int, cycle: int, team: int, kr: int, leaf_krs: list[int], token: str
    ) -> None:
        self.org, self.cycle, self.team, self.kr = org, cycle, team, kr
        self.leaf_krs, self.token = leaf_krs, token


async def pick(dsn: str, org: int, cycle: int, admin: int) -> Target:
    conn = await asyncpg.connect(dsn)
    try:
        team = await conn.fetchval(
            "SELECT team_id FROM objective WHERE organization_id = $1 AND cycle_id = $2 "
            "AND team_id IN (SELECT id FROM team WHERE organization_id = $1 AND parent_id IN "
            "(SELECT id FROM team WHERE parent_id IS NOT NULL)) "
            "GROUP BY team_id ORDER BY count(*) DESC LIMIT 1",
            org,
            cycle,
        )
        kr = await conn.fetchval("SELECT min(id) FROM key_result WHERE organization_id = $1", org)
        leaves = [
            r["id"]
            for r in await conn.fetch(
                "SELECT k.id FROM key_result k JOIN objective o ON o.id = k.objective_id "
                "WHERE o.organization_id = $1 AND NOT EXISTS "
                "(SELECT 1 FROM objective c WHERE c.parent_id = o.id) AND k.type = 'INCREASE'",
                org,
            )
        ]
    finally:
        await conn.close()
    return Target(org, cycle, team, kr, leaves, issue_token(JWT_SECRET, admin, org))


def okr_request(op: str, t: Target, rng: random.Random) -> dict:
    if op == "Q1":
        return {
            "query": Q1,
            "variables": {"team": encode("Team", t.team), "cycle": encode("Cycle", t.cycle)},
        }
    if op == "Q2":
        return {"query": Q2, "variables": {"cycle": encode("Cycle", t.cycle)}}
    if op == "Q3":
        return {"query": Q3, "variables": {"kr": encode("KeyResult", t.kr)}}
    if op == "Q4":
        return {"query": Q4, "variables": {"kr": encode("KeyResult", t.kr)}}
    return {
        "query": M1,
        "variables": {
            "input": {
                "keyResultId": encode("KeyResult", rng.choice(t.leaf_krs)),
                "value": round(rng.uniform(0, 100), 2),
            }
        },
    }


def limit_path(op: str, t: Target, rng: random.Random) -> str:
    if op == "Q1":
        return f"/q1?org={t.org}&team={t.team}&cycle={t.cycle}"
    if op == "Q2":
        return f"/q2?org={t.org}&cycle={t.cycle}"
    if op == "Q3":
        return f"/q3?org={t.org}&kr={t.kr}"
    if op == "Q4":
        return f"/q4?org={t.org}&kr={t.kr}"
    return f"/m1?org={t.org}&kr={rng.choice(t.leaf_krs)}&value={rng.randint(0, 100)}"


async def drive(
    base: str,
    op: str,
    t: Target,
    seconds: float,
    concurrency: int,
    server_pid: int | list[int],
    limit: bool,
) -> dict:
    """`server_pid`: the process that answers, or several (replicas behind a load
    balancer: their CPU is summed, their peak memory is the largest one's)."""
    latencies: list[float] = []
    statements: list[int] = []
    errors = 0
    servers = [
        psutil.Process(pid) for pid in ([server_pid] if isinstance(server_pid, int) else server_pid)
    ]

    def cpu() -> float:
        return sum(c.user + c.system for c in (s.cpu_times() for s in servers))

    cpu0 = cpu()
    peak = max(s.memory_info().rss for s in servers)
    psutil.cpu_percent()  # the machine's, from here
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {t.token}"}

    async def worker(seed_: int) -> None:
        nonlocal errors
        rng = random.Random(seed_)
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    if limit:
                        r = await http.post(limit_path(op, t, rng))
                    else:
                        r = await http.post(
                            "/graphql", json=okr_request(op, t, rng), headers=headers
                        )
                except httpx.TransportError:  # counted, and the run goes on
                    errors += 1
                    latencies.append((time.perf_counter() - started) * 1000)
                    continue
                # Both sides' responses are parsed inside the timed span: a client reads
                # what it asked for, whoever answered.
                try:
                    body = r.json()
                except ValueError:  # a load balancer's own page (502, 503)
                    body = {"errors": [r.status_code]}
                latencies.append((time.perf_counter() - started) * 1000)
                if r.status_code != 200 or (not limit and "errors" in body):
                    errors += 1
                statements.append(int(r.headers.get("x-sql-statements", 1)))

    async def sample() -> None:
        nonlocal peak
        while time.perf_counter() < deadline:
            peak = max(peak, *(s.memory_info().rss for s in servers))
            await asyncio.sleep(0.2)

    started = time.perf_counter()
    await asyncio.gather(sample(), *(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu1 = cpu()
    machine = psutil.cpu_percent()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "sql_statements_per_request": round(sum(statements) / max(len(statements), 1), 2),
        "server_cpu_share": round((cpu1 - cpu0) / elapsed, 2),
        "machine_cpu_busy_percent": machine,
        "server_peak_rss_mb": round(peak / 2**20, 1),
    }


async def verify_clean(url: str) -> bool:
    from service.db import Database
    from service.verify import verify

    db = Database(url, pool_size=1)
    try:
        async with db.connect() as conn:
            _checked, mismatches = await verify(conn)
        return not mismatches
    finally:
        await db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--ops", nargs="+", default=["Q1", "Q2", "Q3", "Q4", "M1"])
    ap.add_argument(
        "--cache-seconds",
        default="1.0",
        help="the server's OKR_RESPONSE_CACHE_SECONDS (0: no result cache)",
    )
    args = ap.parse_args()

    database = BenchDatabase()
    asyncio.run(database.create())
    dsn = database.dsn(database.name)
    counts = asyncio.run(seed(dsn, args.scale))
    target = asyncio.run(
        pick(dsn, counts["organization_id"], counts["cycle_id"], counts["admin_user_id"])
    )
    okr = ServerProcess(
        database.url, OKR_POOL_SIZE="16", OKR_RESPONSE_CACHE_SECONDS=args.cache_seconds
    )
    limit_port = free_port()
    limit = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.limit:app",
            "--port",
            str(limit_port),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "OKR_BENCH_LIMIT_DSN": dsn},
        stdin=subprocess.DEVNULL,
    )
    results = {}
    try:
        okr.wait_ready()
        time.sleep(1)
        verified = None
        for op in args.ops:
            service = asyncio.run(
                drive(
                    okr.base, op, target, args.seconds, args.concurrency, okr.proc.pid, limit=False
                )
            )
            if op == "M1":  # before the limit's own writes, which keep no roll-up
                verified = asyncio.run(verify_clean(database.url))
            bare = asyncio.run(
                drive(
                    f"http://127.0.0.1:{limit_port}",
                    op,
                    target,
                    args.seconds,
                    args.concurrency,
                    limit.pid,
                    limit=True,
                )
            )
            results[op] = {
                "service": service,
                "limit": bare,
                "rps_ratio_to_limit": round(service["rps"] / bare["rps"], 2)
                if bare["rps"]
                else None,
                "p50_ratio_to_limit": round(service["p50_ms"] / bare["p50_ms"], 2)
                if bare["p50_ms"]
                else None,
            }
            print(op, json.dumps(results[op]), flush=True)
    finally:
        okr.stop()
        limit.terminate()
        limit.wait(15)
        asyncio.run(database.drop())
        database.close()
    report = {
        "benchmark": "load",
        "date": datetime.now().isoformat(timespec="seconds"),
        "cpus": psutil.cpu_count(),
        "scale": args.scale,
        "seed": counts,
        "concurrency": args.concurrency,
        "seconds_per_operation": args.seconds,
        "verify_clean_after_M1": verified,
        "results": results,
    }
    name = "load.json" if float(args.cache_seconds) > 0 else "load-uncached.json"
    write_report(name, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
