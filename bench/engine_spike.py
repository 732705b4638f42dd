"""The read-engine spike (issue 20): what each engine shape costs per request, in process.

    python -m bench.engine_spike [--requests 60] [--ops Q1 Q2 Q3 Q4]

Seeds scale 1 into a fresh database (the embedded PostgreSQL unless
OKR_BENCH_DATABASE_URL), then, per operation, one request at a time through the ASGI app
(the result cache off), and prints per operation the mean wall time of:

- `planned`: today's plan (set-based statements, the response built column by column);
- `executor`: graphql-core's executor over the Strawberry resolvers and the data loaders
  (the test hook schema.plan.SWITCH, enabled = False);
- `walk`: graphql-core's executor alone over the planned response held in memory: a
  schema built from schema/schema.graphql with no resolvers of its own, every field a
  synchronous dict lookup, no SQL, no Strawberry, no rule computed. It is the least any
  "prefetch, then the standard executor" engine can add on top of its statements: such
  an engine runs at least the plan's statements and at least this walk.

`prefetch >=` is (planned + walk) / planned, an optimistic bound for the first shape
(the plan's own assembly of the dicts is not taken off, the resolvers' own work and
Strawberry's wrappers are not added). The issue takes the first shape if it stays
within 15% of the planned figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from statistics import mean
from typing import Any

import httpx
from graphql import GraphQLSchema, build_schema, execute, parse

from bench.common import JWT_SECRET, BenchDatabase, write_report
from bench.load import okr_request, pick
from bench.seed import seed

_SDL = Path(__file__).resolve().parent.parent / "schema" / "schema.graphql"


def _walk_schema() -> GraphQLSchema:
    return build_schema(_SDL.read_text())


def _by_response_key(source: Any, info: Any, **_: Any) -> Any:
    return source.get(info.path.key) if isinstance(source, dict) else None


def _type_of(value: Any, info: Any, abstract: Any) -> str:
    return value["__t"]


def _tag(data: Any, typename: str) -> Any:
    """The walk resolves `node` to the type the bench's documents select on."""
    return {**data, "__t": typename}


_NODE_TYPE = {"Q1": "Team", "Q3": "KeyResult", "Q4": "KeyResult"}


async def run(ops: list[str], requests: int, url: str, dsn: str, counts: dict) -> dict:
    from pydantic import SecretStr

    from schema import plan as fastpath
    from service.app import create_app
    from service.db import Database
    from service.settings import Settings

    target = await pick(dsn, counts["organization_id"], counts["cycle_id"], counts["admin_user_id"])
    settings = Settings(
        jwt_secret=SecretStr(JWT_SECRET), response_cache_seconds=0, database_url=SecretStr(url)
    )
    app = create_app(settings, url)
    app.state.db = Database(url, pool_size=4)
    walk_schema = _walk_schema()
    import random

    report: dict[str, Any] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://okr") as http:
        headers = {"Authorization": f"Bearer {target.token}"}

        async def timed(op: str, planned: bool) -> tuple[float, Any]:
            fastpath.SWITCH.enabled = planned
            rng = random.Random(1)
            body = okr_request(op, target, rng)
            for _ in range(5):  # warm: statements prepared, caches filled
                r = await http.post("/graphql", json=body, headers=headers)
                assert "errors" not in r.json(), r.text[:500]
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                r = await http.post("/graphql", json=body, headers=headers)
                got = r.json()
                times.append(time.perf_counter() - started)
            return mean(times) * 1000, (body, got)

        for op in ops:
            planned_ms, (body, got) = await timed(op, True)
            executor_ms, (_, got_ex) = await timed(op, False)
            fastpath.SWITCH.enabled = True
            same = json.dumps(got, sort_keys=True) == json.dumps(got_ex, sort_keys=True)
            data = got["data"]
            if op in _NODE_TYPE:
                data = {**data, "node": _tag(data["node"], _NODE_TYPE[op])}
            document = parse(body["query"])
            walk_times = []
            for _ in range(5 + requests):
                started = time.perf_counter()
                result = execute(
                    walk_schema,
                    document,
                    root_value=data,
                    variable_values=body.get("variables"),
                    field_resolver=_by_response_key,
                    type_resolver=_type_of,
                )
                walk_times.append(time.perf_counter() - started)
            assert not result.errors, result.errors  # type: ignore[union-attr]
            assert result.data == got["data"], "the walk gives the planned answer back"  # type: ignore[union-attr]
            walk_ms = mean(walk_times[5:]) * 1000
            report[op] = {
                "planned_ms": round(planned_ms, 2),
                "executor_ms": round(executor_ms, 2),
                "walk_ms": round(walk_ms, 2),
                "prefetch_at_least": round((planned_ms + walk_ms) / planned_ms, 2),
                "executor_over_planned": round(executor_ms / planned_ms, 2),
                "same_answer": same,
                "response_bytes": len(json.dumps(got)),
            }
            print(op, report[op], flush=True)
    await app.state.db.dispose()
    return report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", nargs="+", default=["Q1", "Q2", "Q3", "Q4"])
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--out", default="engine_spike.json")
    args = ap.parse_args()
    database = BenchDatabase()
    asyncio.run(database.create())
    try:
        dsn = database.dsn(database.name)
        counts = asyncio.run(seed(dsn, 1))
        report = asyncio.run(run(args.ops, args.requests, database.url, dsn, counts))
        write_report(args.out, {"requests": args.requests, "ops": report})
    finally:
        asyncio.run(database.drop())
        database.close()


if __name__ == "__main__":
    main()
