"""/healthz while the worst long reads run (issue 19, item 2), in wall time.

The goal: /healthz answers within 250 ms while the worst documents found from outside
(aliased `forecast` trees, aliased `cycleReport`s from a MEMBER, nested `descendants`,
the CSV export) run with the cost limit lifted, until the deadline stops them. A
timed test cannot hold that on a shared machine (it measures the machine as much as
the service), so tests/graphql/test_deadlines.py asserts the server's own figure (how long its
work held the loop, in CPU seconds: `okr_event_loop_held_seconds_max`) and this
benchmark measures what a client sees, on bench/seed.py's scale 1 organization.

    .venv/bin/python -m bench.deadlines [--runs 3]

Prints, per run, the /healthz waits (p50, p99, max), the server's held
figure and how late each document was stopped; writes bench/results/deadlines.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import JWT_SECRET, BenchDatabase, ServerProcess, percentile
from bench.seed import seed
from schema.ids import encode
from service.auth import issue_token

DEADLINE = 2.0

NESTED_DESCENDANTS = """query($id: ID!) { node(id: $id) { ... on Objective {
  descendants { id title descendants { id title descendants { id title } } } } } }"""


def forecast_trees(n: int) -> str:
    """`n` aliased trees asking `forecast` on every key result (the finding had 11)."""
    tree = (
        "objectives(first: 10, filter: {rootsOnly: true}) { edges { node { id "
        "keyResults { forecast { value progress status } } "
        "descendants { id keyResults { id forecast { value progress status } } } } } }"
    )
    return "{ " + " ".join(f"t{i}: {tree}" for i in range(n)) + " }"


def cycle_reports(n: int, cycle: str) -> str:
    one = (
        f'cycleReport(cycleId: "{cycle}") {{ teams {{ objectives meanProgress '
        "staleKeyResults checkInRhythm realism { verdict count } } }"
    )
    return "{ " + " ".join(f"r{i}: {one}" for i in range(n)) + " }"


def lifted() -> dict[str, str]:
    """The settings the worst documents run under: the cost limits out of the way, so
    that the deadline alone stops them; the result cache off."""
    return {
        "OKR_EXECUTION_DEADLINE_SECONDS": str(DEADLINE),
        "OKR_MAX_QUERY_COST": str(10**9),
        "OKR_MAX_RESPONSE_OBJECTS": str(10**8),
        "OKR_MAX_RESPONSE_BYTES": str(10**10),
        "OKR_RESPONSE_CACHE_SECONDS": "0",
    }


async def held_seconds(http: httpx.AsyncClient) -> float:
    """The server's `okr_event_loop_held_seconds_max` (service/observability/loop.py)."""
    r = await http.get("/metrics")
    r.raise_for_status()
    for line in r.text.splitlines():
        if line.startswith("okr_event_loop_held_seconds_max "):
            return float(line.split()[1])
    raise RuntimeError("okr_event_loop_held_seconds_max is not in /metrics")


async def one_run(base: str, admin: str, member: str, cycle: str, root: str) -> dict[str, Any]:
    waits: list[float] = []
    stop = asyncio.Event()

    async def probe(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            (await http.get("/healthz")).raise_for_status()
            waits.append(time.perf_counter() - started)
            await asyncio.sleep(0.05)

    async def post(http: httpx.AsyncClient, token: str, query: str, **variables: Any) -> float:
        started = time.perf_counter()
        await http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )
        return round(time.perf_counter() - started, 3)

    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        prober = asyncio.create_task(probe(http))
        took = {
            "forecast_trees": await post(http, admin, forecast_trees(11)),
            "cycle_reports": await post(http, member, cycle_reports(20, cycle)),
            "nested_descendants": await post(http, admin, NESTED_DESCENDANTS, id=root),
        }
        started = time.perf_counter()
        await http.get(f"/export/cycles/{cycle}.csv", headers={"Authorization": f"Bearer {member}"})
        took["csv_export"] = round(time.perf_counter() - started, 3)
        stop.set()
        await prober
        held = await held_seconds(http)
    return {
        "healthz_p50_ms": round(percentile(waits, 50) * 1000, 1),
        "healthz_p99_ms": round(percentile(waits, 99) * 1000, 1),
        "healthz_max_ms": round(max(waits) * 1000, 1),
        "healthz_answers": len(waits),
        "held_max_cpu_ms": round(held * 1000, 1),
        "seconds": took,
    }


async def main(runs: int) -> dict[str, Any]:
    database = BenchDatabase()
    await database.create()
    try:
        dsn = database.dsn(database.name)
        counts = await seed(dsn, 1, slug="deadlines")
        org = counts["organization_id"]
        conn = await asyncpg.connect(dsn)
        try:
            admin = await conn.fetchval(
                "SELECT id FROM app_user WHERE organization_id = $1 AND role = 'ADMIN'", org
            )
            member = await conn.fetchval(
                "SELECT min(id) FROM app_user WHERE organization_id = $1 AND role = 'MEMBER'", org
            )
            cycle = await conn.fetchval("SELECT id FROM cycle WHERE organization_id = $1", org)
            root = await conn.fetchval(
                "SELECT min(id) FROM objective WHERE organization_id = $1 AND parent_id IS NULL",
                org,
            )
        finally:
            await conn.close()
        tokens = (issue_token(JWT_SECRET, admin, org), issue_token(JWT_SECRET, member, org))
        results: dict[str, Any] = {"runs": []}
        for _ in range(runs):
            server = ServerProcess(database.url, **lifted())
            try:
                await asyncio.to_thread(server.wait_ready)
                figures = await one_run(
                    server.base, *tokens, encode("Cycle", cycle), encode("Objective", root)
                )
            finally:
                server.stop()
            print(json.dumps(figures), flush=True)
            results["runs"].append(figures)
        return results
    finally:
        await database.drop()
        database.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    out = asyncio.run(main(args.runs))
    Path(__file__).with_name("results").joinpath("deadlines.json").write_text(
        json.dumps(out, indent=2) + "\n"
    )
