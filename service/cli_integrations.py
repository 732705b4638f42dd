"""The `okr` subcommands for work that happens later: `okr jobs`, `okr webhook ...`,
`okr source run` (kept apart from service/cli.py, which holds the rest)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from service import migrate
from service.db import Database, resolve_url
from service.settings import Settings

T = TypeVar("T")


def _prepare(settings: Settings) -> str:
    url = resolve_url(settings)
    migrate.upgrade(url)
    return url


def _run(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        db = Database(url, pool_size=2)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


def table(rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; the last column as it is."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]) - 1)]
    for row in cells:
        print("  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]))


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    from service import jobs

    url = _prepare(settings)

    async def listed(db: Database) -> list[Any]:
        return await jobs.list_jobs(db, args.status, args.limit)

    rows: list[Sequence[Any]] = [("ID", "KIND", "STATUS", "RUN AT", "ATTEMPTS", "BY", "ERROR")]
    rows += [
        (
            j.id,
            j.kind,
            j.status,
            _when(j.run_at),
            j.attempts,
            j.locked_by or "-",
            (j.last_error or "-").replace("\n", " ")[:120],
        )
        for j in _run(url, listed)
    ]
    table(rows)
    return 0


def register(sub: Any) -> None:
    """Add the subcommands to `okr`'s parser."""
    jobs = sub.add_parser("jobs", help="jobs not done yet: pending, running, failed")
    jobs.add_argument("--status", choices=["PENDING", "RUNNING", "FAILED"])
    jobs.add_argument("--limit", type=int, default=100)
    jobs.set_defaults(func=cmd_jobs)
