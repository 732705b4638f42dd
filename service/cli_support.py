"""What every `okr` subcommand module needs: the database at this build's migration,
and one piece of async work run against it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service import migrate
from service.db import Database, resolve_url
from service.settings import Settings

T = TypeVar("T")


def run(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        db = Database(url, pool_size=2)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def prepare(settings: Settings) -> str:
    """The database's URL, migrated to head."""
    url = resolve_url(settings)
    migrate.upgrade(url)
    return url
