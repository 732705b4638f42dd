"""One replica against three behind a load balancer: the same reads and check-ins as
bench/load.py, on one seeded database, in four arrangements run one after another:

- `direct`: one `okr serve`, straight to PostgreSQL (what bench/load.py measures);
- `direct-no-cache`: the same with OKR_DATABASE_PREPARED_STATEMENTS=false, which is what
  the service does behind PgBouncer 1.18 (every statement parsed again): the cost of
  losing asyncpg's statement cache, alone;
- `pooled-1`: one replica through PgBouncer (transaction mode), behind HAProxy;
- `pooled-3`: three replicas through PgBouncer, behind HAProxy (round robin).

    python -m bench.replicas --seconds 5 --ops Q1 Q3 Q4 M1

Needs Debian's pgbouncer and haproxy (`apt-get install pgbouncer haproxy`). The load
driver runs on the same machine as everything else, so on a machine of few cores the
figures say what the cores allow, not what the arrangement would do on several
machines: `machine_cpu_busy_percent` tells how close to that bound each run was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from datetime import datetime

import httpx
import psutil

from bench.common import BenchDatabase, ServerProcess, write_report
from bench.load import drive, pick, verify_clean
from bench.seed import seed
from bench.topology import HAProxy, PgBouncer

ARRANGEMENTS = ["direct", "direct-no-cache", "pooled-1", "pooled-3"]


class Arrangement:
    def __init__(self, name: str, database: BenchDatabase, settings: dict[str, str]) -> None:
        self.name = name
        self.servers: list[ServerProcess] = []
        self.bouncer: PgBouncer | None = None
        self.balancer: HAProxy | None = None
        url = database.url
        if name == "direct-no-cache":
            settings = {**settings, "OKR_DATABASE_PREPARED_STATEMENTS": "false"}
        replicas = 3 if name == "pooled-3" else 1
        if name.startswith("pooled"):
            self.bouncer = PgBouncer(database.dsn(database.name), pool_size=20)
            settings = {
                **settings,
                "OKR_DATABASE_DIRECT_URL": url,
                "OKR_DATABASE_POOLER": "pgbouncer",
            }
            url = self.bouncer.url
        for _ in range(replicas):
            self.servers.append(ServerProcess(url, **settings))
        for server in self.servers:
            server.wait_ready()
        if self.bouncer is not None:
            self.balancer = HAProxy([s.port for s in self.servers])
        self.base = self.balancer.base if self.balancer else self.servers[0].base
        self.wait_all_in()

    def wait_all_in(self, timeout: float = 60) -> None:
        """Until the balancer has answered from every replica (its health checks bring
        each one in)."""
        seen: set[str] = set()
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                r = httpx.get(f"{self.base}/readyz")
                if r.status_code == 200:
                    seen.add(r.headers["x-okr-worker"])
            except httpx.TransportError:
                pass
            if seen >= {str(pid) for pid in self.pids}:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the balancer reached only {sorted(seen)} of {self.pids}")

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.servers]

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        for server in self.servers:
            server.stop()
        if self.bouncer is not None:
            self.bouncer.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--warmup", type=float, default=1, help="untimed seconds per operation")
    ap.add_argument("--ops", nargs="+", default=["Q1", "Q3", "Q4", "M1"])
    ap.add_argument("--rounds", type=int, default=1, help="each arrangement this many times")
    ap.add_argument("--out", default="replicas.json", help="the file in bench/results/")
    ap.add_argument("--arrangements", nargs="+", default=ARRANGEMENTS, choices=ARRANGEMENTS)
    ap.add_argument(
        "--cache-seconds",
        default="0",
        help="the servers' OKR_RESPONSE_CACHE_SECONDS (default 0: every read does its work)",
    )
    args = ap.parse_args()

    database = BenchDatabase()
    asyncio.run(database.create())
    dsn = database.dsn(database.name)
    counts = asyncio.run(seed(dsn, args.scale))
    target = asyncio.run(
        pick(dsn, counts["organization_id"], counts["cycle_id"], counts["admin_user_id"])
    )
    settings = {"OKR_POOL_SIZE": "16", "OKR_RESPONSE_CACHE_SECONDS": args.cache_seconds}
    runs: dict[str, dict[str, list[dict]]] = {
        name: {op: [] for op in args.ops} for name in args.arrangements
    }
    try:
        # Round after round, every arrangement in turn: a neighbour's load on a shared
        # machine then weighs on all of them alike, and the median of the rounds counts.
        for name in [n for _ in range(args.rounds) for n in args.arrangements]:
            arrangement = Arrangement(name, database, settings)
            try:
                for op in args.ops:  # each process's first requests do one-time work
                    asyncio.run(
                        drive(arrangement.base, op, target, args.warmup, 4, arrangement.pids, False)
                    )
                for op in args.ops:
                    figures = asyncio.run(
                        drive(
                            arrangement.base,
                            op,
                            target,
                            args.seconds,
                            args.concurrency,
                            arrangement.pids,
                            limit=False,
                        )
                    )
                    figures["load_average"] = round(os.getloadavg()[0], 1)
                    runs[name][op].append(figures)
                    print(name, op, json.dumps(figures), flush=True)
            finally:
                arrangement.stop()
        verified = asyncio.run(verify_clean(database.url))
        results = {
            name: {op: median_run(figures) for op, figures in ops.items()}
            for name, ops in runs.items()
        }
    finally:
        asyncio.run(database.drop())
        database.close()
    report = {
        "benchmark": "replicas",
        "date": datetime.now().isoformat(timespec="seconds"),
        "cpus": psutil.cpu_count(),
        "scale": args.scale,
        "concurrency": args.concurrency,
        "seconds_per_operation": args.seconds,
        "result_cache_seconds": args.cache_seconds,
        "verify_clean_after": verified,
        "load_average_after": os.getloadavg(),
        "rounds": args.rounds,
        "results": results,
        "runs": runs,
    }
    write_report(args.out, report)
    print(table(results, args.ops))


def median_run(figures: list[dict]) -> dict:
    """The run of median throughput (with its own latencies and CPU)."""
    ordered = sorted(figures, key=lambda f: f["rps"])
    return ordered[(len(ordered) - 1) // 2]


def table(results: dict[str, dict], ops: list[str]) -> str:
    """rps (p50 ms) per arrangement, and each one's ratio to `direct`."""
    names = list(results)
    lines = [
        "| op | " + " | ".join(f"{n} rps (p50 ms)" for n in names) + " | pooled-3 ÷ pooled-1 |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for op in ops:
        cells = [f"{results[n][op]['rps']} ({results[n][op]['p50_ms']})" for n in names]
        one, three = results.get("pooled-1", {}).get(op), results.get("pooled-3", {}).get(op)
        ratio = f"{three['rps'] / one['rps']:.2f}" if one and three and one["rps"] else ""
        lines.append(f"| {op} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
