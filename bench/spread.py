"""How `okr serve --workers N` spreads sockets and requests over its workers.

Opens `--sockets` WebSockets (all held open at once, `--rate` a second) and makes
`--requests` HTTP requests (each on a fresh connection, `--concurrency` at once) to one
`okr serve --workers N` on a fresh database, and counts per worker pid from the
`x-okr-worker` header of every handshake and response.

    python -m bench.spread --workers 2 --sockets 1000 --requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import httpx
import websockets
from websockets.typing import Subprotocol

from bench.common import BenchDatabase, ServerProcess


async def sockets(port: int, n: int, rate: float) -> tuple[Counter[str], int]:
    started = time.monotonic()
    held: list[websockets.ClientConnection] = []
    where: Counter[str] = Counter()
    failed = 0

    async def one(i: int) -> None:
        nonlocal failed
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        try:
            ws = await websockets.connect(
                f"ws://127.0.0.1:{port}/graphql",
                subprotocols=[Subprotocol("graphql-transport-ws")],
                open_timeout=60,
                ping_interval=None,
            )
        except Exception:
            failed += 1
            return
        held.append(ws)
        assert ws.response is not None
        where[ws.response.headers["x-okr-worker"]] += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    return where, failed


async def requests(base: str, n: int, concurrency: int) -> tuple[Counter[str], int]:
    where: Counter[str] = Counter()
    failed = 0
    todo = iter(range(n))
    limits = httpx.Limits(max_keepalive_connections=0)  # every request a new connection
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def worker() -> None:
            nonlocal failed
            for _ in todo:
                try:
                    r = await http.get(f"{base}/readyz")
                    where[r.headers["x-okr-worker"]] += 1
                except httpx.HTTPError:
                    failed += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return where, failed


def share(where: Counter[str], workers: int) -> dict:
    total = sum(where.values())
    counts = sorted(where.values(), reverse=True) + [0] * (workers - len(where))
    return {
        "per_worker": counts,
        "smallest_share": round(min(counts) / total, 3) if total else None,
        "largest_share": round(max(counts) / total, 3) if total else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sockets", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=500.0, help="sockets opened a second")
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    database = BenchDatabase()
    asyncio.run(database.create())
    server = ServerProcess(database.url, "--workers", str(args.workers))
    try:
        server.wait_ready()
        time.sleep(2)  # every worker up, not just the first
        ws_where, ws_failed = asyncio.run(sockets(server.port, args.sockets, args.rate))
        http_where, http_failed = asyncio.run(
            requests(server.base, args.requests, args.concurrency)
        )
    finally:
        server.stop()
        asyncio.run(database.drop())
        database.close()
    report = {
        "workers": args.workers,
        "sockets": {**share(ws_where, args.workers), "failed": ws_failed},
        "requests": {**share(http_where, args.workers), "failed": http_failed},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
