"""The service beside PostGraphile v4 on the same seeded database (issue 20):

    python -m bench.postgraphile [--rounds 3] [--seconds 10] [--concurrency 16]

Seeds bench/seed.py's organization (scale 1) into a fresh database, serves it with
`okr serve` (the result cache off) and with PostGraphile 4.14.1 (installed with npm into
bench/.postgraphile on first use; Node.js must be on the PATH), and drives the same reads
through each in turn, alternating, each for `--seconds` at `--concurrency`:

- Q1, the team dashboard: a team's objectives in the cycle (50), each with its owner's
  name and its key results, each with its latest check-in;
- Q2, the whole tree: the cycle's root objectives (100) and their descendants, four
  levels (PostGraphile nests `objectivesByParentId`; the service's `descendants`).

PostGraphile answers from the tables alone: it computes no status, stale, or visibility
(it runs as the database's owner, every row visible), so its documents select the stored
columns only; the service's select status too, as bench/load.py's do. Writes
bench/results/postgraphile.json: each round's rps and p50 per side, and the median ratio
(service / PostGraphile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import BenchDatabase, ServerProcess, free_port, percentile, write_report
from bench.load import Q1, Q2, pick
from bench.seed import seed
from schema.ids import encode

VERSION = "4.14.1"
FOLDER = Path(__file__).parent / ".postgraphile"

PG_Q1 = """query($team: BigInt!, $cycle: BigInt!) { teamById(id: $team) {
  objectivesByTeamId(condition: {cycleId: $cycle, archivedAt: null}, first: 50,
    orderBy: ID_ASC) { nodes {
    id title progress appUserByOwnerId { name }
    keyResultsByObjectiveId(condition: {archivedAt: null}, orderBy: ID_ASC) { nodes {
      title progress currentValue
      checkInsByKeyResultId(first: 1, orderBy: [MEASURED_AT_DESC, ID_DESC]) {
        nodes { value createdAt } } } } } } } }"""
_LEVEL = (
    "objectivesByParentId(condition: {archivedAt: null}, orderBy: ID_ASC) "
    "{ nodes { id title progress %s } }"
)
_TREE = ""
for _ in range(4):
    _TREE = _LEVEL % _TREE
PG_Q2 = (
    "query($cycle: BigInt!) { allObjectives(condition: {cycleId: $cycle, parentId: null, "
    "archivedAt: null}, first: 100, orderBy: ID_ASC) { nodes { id title progress TREE } } }"
).replace("TREE", _TREE)


def postgraphile() -> str:
    """The PostGraphile command, installed on first use (a pinned version)."""
    command = FOLDER / "node_modules" / ".bin" / "postgraphile"
    if not command.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("bench.postgraphile: Node.js and npm are needed (npm not found)")
        FOLDER.mkdir(exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(FOLDER),
                "--no-audit",
                "--no-fund",
                f"postgraphile@{VERSION}",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    return str(command)


async def drive(base: str, body: dict[str, Any], headers: dict, seconds: float, n: int) -> dict:
    """`n` clients posting `body` for `seconds`; a response with errors counts as one."""
    latencies: list[float] = []
    errors = 0
    size = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors, size
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                r = await http.post("/graphql", json=body, headers=headers)
                answer = r.json()  # parsed inside the timed span, on both sides
                latencies.append((time.perf_counter() - started) * 1000)
                size = len(r.content)
                if r.status_code != 200 or "errors" in answer:
                    errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(n)))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "response_bytes": size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    command = postgraphile()
    database = BenchDatabase()
    asyncio.run(database.create())
    dsn = database.dsn(database.name)
    counts = asyncio.run(seed(dsn, 1))
    target = asyncio.run(
        pick(dsn, counts["organization_id"], counts["cycle_id"], counts["admin_user_id"])
    )
    okr = ServerProcess(database.url, OKR_POOL_SIZE="16", OKR_RESPONSE_CACHE_SECONDS="0")
    port = free_port()
    graphile = subprocess.Popen(
        [
            command,
            "-c",
            dsn.replace("postgresql://", "postgres://", 1),
            "-s",
            "public",
            "-p",
            str(port),
            "-n",
            "127.0.0.1",
            "--disable-query-log",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NODE_ENV": "production"},
    )
    graphile_base = f"http://127.0.0.1:{port}"
    team, cycle = str(target.team), str(target.cycle)
    sides = {
        "Q1": (
            {
                "query": Q1,
                "variables": {
                    "team": encode("Team", target.team),
                    "cycle": encode("Cycle", target.cycle),
                },
            },
            {"query": PG_Q1, "variables": {"team": team, "cycle": cycle}},
        ),
        "Q2": (
            {"query": Q2, "variables": {"cycle": encode("Cycle", target.cycle)}},
            {"query": PG_Q2, "variables": {"cycle": cycle}},
        ),
    }
    rounds: list[dict[str, Any]] = []
    try:
        okr.wait_ready()
        for _ in range(600):
            try:
                httpx.post(f"{graphile_base}/graphql", json={"query": "{ __typename }"})
                break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {target.token}"}
        for i in range(args.rounds):
            got: dict[str, Any] = {}
            for op, (ours, theirs) in sides.items():
                a = asyncio.run(drive(okr.base, ours, headers, args.seconds, args.concurrency))
                b = asyncio.run(drive(graphile_base, theirs, {}, args.seconds, args.concurrency))
                got[op] = {
                    "service": a,
                    "postgraphile": b,
                    "ratio": round(a["rps"] / b["rps"], 2) if b["rps"] else None,
                }
                print(i + 1, op, json.dumps(got[op]), flush=True)
            rounds.append(got)
    finally:
        okr.stop()
        graphile.terminate()
        graphile.wait(15)
        asyncio.run(database.drop())
        database.close()
    medians = {
        op: statistics.median(r[op]["ratio"] for r in rounds if r[op]["ratio"]) for op in sides
    }
    report = {
        "benchmark": "postgraphile",
        "date": datetime.now().isoformat(timespec="seconds"),
        "postgraphile": VERSION,
        "seed": counts,
        "concurrency": args.concurrency,
        "seconds_per_side": args.seconds,
        "rounds": rounds,
        "median_ratio_service_to_postgraphile": medians,
    }
    write_report("postgraphile.json", report)
    print(json.dumps(medians))


if __name__ == "__main__":
    main()
