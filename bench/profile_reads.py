"""Profile a read in process (cProfile), the result cache off:

    python -m bench.profile_reads Q1 [Q2 Q3 Q4] [--requests 200] [--executor]

Seeds scale 1 into a fresh database (the embedded PostgreSQL), then runs the operation
through the ASGI app with httpx, 8 at once, and prints the top of the profile.
`--executor` runs graphql-core's executor instead (the test hook schema.plan.SWITCH).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time

import httpx

from bench.common import JWT_SECRET, BenchDatabase
from bench.load import okr_request, pick
from bench.seed import seed


async def run(op: str, requests: int, url: str, dsn: str, counts: dict) -> None:
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
    app.state.db = Database(url, pool_size=16)
    transport = httpx.ASGITransport(app=app)
    import random

    rng = random.Random(1)
    async with httpx.AsyncClient(transport=transport, base_url="http://okr") as http:
        headers = {"Authorization": f"Bearer {target.token}"}
        for _ in range(5):
            r = await http.post("/graphql", json=okr_request(op, target, rng), headers=headers)
            assert "errors" not in r.json(), r.text[:500]
        before = fastpath.SWITCH.planned
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()

        async def one() -> None:
            r = await http.post("/graphql", json=okr_request(op, target, rng), headers=headers)
            r.json()

        for _ in range(requests // 8):
            await asyncio.gather(*(one() for _ in range(8)))
        profile.disable()
        profile.dump_stats(f"/tmp/okr-profile-{op}.prof")
        elapsed = time.perf_counter() - started
        each = elapsed / requests * 1000
        print(
            f"{op}: {requests} requests in {elapsed:.2f}s, {each:.1f} ms each;"
            f" planned {fastpath.SWITCH.planned - before}"
        )
        pstats.Stats(profile).sort_stats("cumulative").print_stats(35)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    await app.state.db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ops", nargs="+")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--executor", action="store_true")
    args = ap.parse_args()
    if args.executor:
        from schema import plan as fastpath

        fastpath.SWITCH.enabled = False
    database = BenchDatabase()
    asyncio.run(database.create())
    try:
        dsn = database.dsn(database.name)
        counts = asyncio.run(seed(dsn, 1))
        for op in args.ops:  # one seed for all of them
            asyncio.run(run(op, args.requests, database.url, dsn, counts))
    finally:
        asyncio.run(database.drop())
        database.close()


if __name__ == "__main__":
    main()
