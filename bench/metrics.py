"""M2: `recordMeasurements` with a batch of 1,000 measurements over 10 bound key results,
against one `okr serve` process, beside the bare limit of the same writes.

    python -m bench.metrics            # seeds scale 1, runs M2, prints JSON

Two shapes of the same batch size:
- fan-out: one metric bound to 10 key results: 1,000 measurements, 10,000 check-ins;
- spread: 10 metrics, each bound to one key result, 100 measurements each: 1,000
  check-ins.
Each key result sits on its own objective under one root in the seeded active cycle,
so every batch rolls up 11 objectives and writes one CHECK_IN event per key result.
Batches run one after another (a backfill is one client's job); each sends fresh
idempotency keys and instants over the last 16 hours. The limit: the same rows
written by bare asyncpg in one transaction (unnest inserts, the 10 key results, one
event), with nothing computed and no HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from bench.common import JWT_SECRET, BenchDatabase, ServerProcess, percentile, step, write_report
from bench.load import verify_clean
from bench.seed import seed
from service.auth import issue_token
from service.domain.principal import Principal
from service.models import pk_of

M2 = """mutation($input: RecordMeasurementsInput!) { recordMeasurements(input: $input) {
  userErrors { code field message } } }"""
M2_ECHO = """mutation($input: RecordMeasurementsInput!) { recordMeasurements(input: $input) {
  measurements { measuredAt } checkIns { id } userErrors { code field message } } }"""

LIMIT = """
WITH m AS (
    INSERT INTO measurement (organization_id, metric_id, value, measured_at, caller,
                             idempotency_key)
    SELECT $1, metric, value, at, 'bench', key
    FROM unnest($2::bigint[], $3::float8[], $4::timestamptz[], $5::text[])
         AS u(metric, value, at, key)
    RETURNING id
), c AS (
    INSERT INTO check_in (organization_id, key_result_id, value, progress, caller,
                          measured_at)
    SELECT $1, kr, value, 0.5, 'bench', at
    FROM unnest($6::bigint[], $7::float8[], $8::timestamptz[]) AS u(kr, value, at)
    RETURNING id
), k AS (
    UPDATE key_result SET last_check_in_at = now() WHERE id = ANY($9::bigint[]) RETURNING id
), s AS (
    UPDATE organization SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq
)
INSERT INTO event (organization_id, seq, kind, subject_type, subject_id, payload)
SELECT $1, s.event_seq, 'CHECK_IN', 'KeyResult', $9[1], '{}'::jsonb FROM s
RETURNING (SELECT count(*) FROM m), (SELECT count(*) FROM c), (SELECT count(*) FROM k)
"""


async def prepare(url: str, org: int, cycle: int, admin: int) -> dict[str, list]:
    """A root objective with 10 leaves, a key result on each; the metrics bound to them."""
    from service.db import Database
    from service.domain import enums as domain_enums
    from service.usecases import commands, key_results, metrics, objectives

    db = Database(url, pool_size=2)
    p = Principal(organization_id=org, role="ADMIN", user_id=admin)
    try:
        root = await db.transaction(
            lambda s: objectives.create_objective(
                s, p, commands.CreateObjective(cycle_id=cycle, title="Picking")
            )
        )
        krs = []
        for i in range(10):
            leaf = await db.transaction(
                step(
                    objectives.create_objective,
                    p,
                    commands.CreateObjective(
                        cycle_id=cycle, title=f"Site {i}", parent_id=pk_of(root)
                    ),
                )
            )
            kr = await db.transaction(
                step(
                    key_results.create_key_result,
                    p,
                    commands.CreateKeyResult(
                        objective_id=pk_of(leaf),
                        title="Picks per hour",
                        type=domain_enums.KeyResultType.INCREASE,
                        start_value=0,
                        target_value=2000,
                    ),
                )
            )
            krs.append(pk_of(kr))
        shared = await db.transaction(
            lambda s: metrics.create_metric(
                s, p, commands.CreateMetric(key="picks_per_hour", name="Picks per hour")
            )
        )
        spread = []
        for i, kr_id in enumerate(krs):
            await db.transaction(
                step(metrics.bind_key_result, p, commands.BindKeyResult(kr_id, pk_of(shared)))
            )
            own = await db.transaction(
                step(
                    metrics.create_metric,
                    p,
                    commands.CreateMetric(key=f"picks_site_{i}", name=f"Site {i}"),
                )
            )
            spread.append(pk_of(own))
        return {"key_results": krs, "shared": [pk_of(shared)], "spread": spread}
    finally:
        await db.dispose()


async def rebind(url: str, org: int, admin: int, krs: list[int], metric_ids: list[int]) -> None:
    from service.db import Database
    from service.usecases import commands, metrics

    db = Database(url, pool_size=2)
    p = Principal(organization_id=org, role="ADMIN", user_id=admin)
    try:
        for kr, metric in zip(krs, metric_ids, strict=True):
            await db.transaction(
                step(metrics.bind_key_result, p, commands.BindKeyResult(kr, metric))
            )
    finally:
        await db.dispose()


def batch(keys: list[str], run: int, shape: str) -> list[dict]:
    now = datetime.now(UTC)
    items = []
    for i in range(1000):
        items.append(
            {
                "metricKey": keys[i % len(keys)],
                "value": float(500 + (i % 97)),
                "measuredAt": (now - timedelta(minutes=1000 - i)).isoformat(),
                "idempotencyKey": f"{shape}-{run}-{i}",
            }
        )
    return items


async def drive(base: str, token: str, keys: list[str], shape: str, runs: int, query: str):
    latencies, statements = [], []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for run in range(-1, runs):  # run -1 warms the server up and is not counted
            body = {
                "query": query,
                "variables": {"input": {"measurements": batch(keys, run, shape)}},
            }
            started = time.perf_counter()
            r = await client.post(
                "/graphql", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            elapsed = (time.perf_counter() - started) * 1000
            payload = r.json()
            errors = payload.get("errors") or payload["data"]["recordMeasurements"]["userErrors"]
            assert not errors, errors
            if run >= 0:
                latencies.append(elapsed)
                statements.append(int(r.headers.get("x-sql-statements", 0)))
    return {
        "batches": runs,
        "p50_ms": round(percentile(latencies, 50), 1),
        "max_ms": round(max(latencies), 1),
        "mean_ms": round(statistics.mean(latencies), 1),
        "sql_statements_per_batch": round(statistics.mean(statements), 1),
        "measurements_per_s": round(1000 / (percentile(latencies, 50) / 1000)),
    }


async def bare_limit(dsn: str, org: int, krs: list[int], metric_ids: list[int], runs: int):
    conn = await asyncpg.connect(dsn)
    latencies = []
    try:
        for run in range(-1, runs):
            now = datetime.now(UTC)
            at = [now - timedelta(minutes=1000 - i) for i in range(1000)]
            metric = [metric_ids[i % len(metric_ids)] for i in range(1000)]
            values = [float(500 + i % 97) for i in range(1000)]
            keys = [f"limit-{len(metric_ids)}-{run}-{i}" for i in range(1000)]
            if len(metric_ids) == 1:  # fan-out: every key result takes every value
                bound = {metric_ids[0]: krs}
            else:
                bound = {m: [kr] for kr, m in zip(krs, metric_ids, strict=True)}
            kr_col, value_col, at_col = [], [], []
            for i in range(1000):
                for kr in bound[metric[i]]:
                    kr_col.append(kr)
                    value_col.append(values[i])
                    at_col.append(at[i])
            started = time.perf_counter()
            async with conn.transaction():
                await conn.fetchrow(
                    LIMIT, org, metric, values, at, keys, kr_col, value_col, at_col, krs
                )
            if run >= 0:
                latencies.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    return {"p50_ms": round(percentile(latencies, 50), 1), "max_ms": round(max(latencies), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10, help="timed batches per shape")
    args = ap.parse_args()

    database = BenchDatabase()
    asyncio.run(database.create())
    dsn = database.dsn(database.name)
    counts = asyncio.run(seed(dsn, args.scale))
    org, cycle, admin = counts["organization_id"], counts["cycle_id"], counts["admin_user_id"]
    made = asyncio.run(prepare(database.url, org, cycle, admin))
    token = issue_token(JWT_SECRET, admin, org)
    okr = ServerProcess(database.url, OKR_POOL_SIZE="16")
    results: dict[str, dict] = {}
    try:
        okr.wait_ready()
        time.sleep(1)
        results["fan-out"] = asyncio.run(
            drive(okr.base, token, ["picks_per_hour"], "fan", args.runs, M2)
        )
        results["fan-out, payload echoed"] = asyncio.run(
            drive(okr.base, token, ["picks_per_hour"], "echo", args.runs, M2_ECHO)
        )
        # Spread: each key result bound to a metric of its own instead.
        asyncio.run(rebind(database.url, org, admin, made["key_results"], made["spread"]))
        keys = [f"picks_site_{i}" for i in range(10)]
        results["spread"] = asyncio.run(drive(okr.base, token, keys, "spread", args.runs, M2))
        verified = asyncio.run(verify_clean(database.url))
        # The limit last: its rows keep no roll-up.
        results["fan-out"]["limit"] = asyncio.run(
            bare_limit(dsn, org, made["key_results"], made["shared"], args.runs)
        )
        results["spread"]["limit"] = asyncio.run(
            bare_limit(dsn, org, made["key_results"], made["spread"], args.runs)
        )
        for shape in ("fan-out", "spread"):
            r = results[shape]
            r["p50_ratio_to_limit"] = round(r["p50_ms"] / r["limit"]["p50_ms"], 2)
    finally:
        okr.stop()
        asyncio.run(database.drop())
        database.close()
    report = {
        "benchmark": "metrics (M2)",
        "date": datetime.now().isoformat(timespec="seconds"),
        "scale": args.scale,
        "batch": "1,000 measurements over 10 bound key results",
        "verify_clean_after_M2": verified,
        "results": results,
    }
    write_report("metrics.json", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
