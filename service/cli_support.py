"""What every `okr` subcommand module needs: the database at this build's migration,
and one piece of async work run against it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from service import migrate
from service.db import Database, direct_url, pooling, resolve_url
from service.domain.principal import Principal
from service.models import pk_of
from service.settings import Settings, get_settings

T = TypeVar("T")


def acting_for(org: Any, role: str = "ADMIN") -> Principal:
    """The command acting for the organization `org` (its row), without a user: as its
    admin (whoever can run `okr` against the database is trusted as an admin is), or as
    the organization itself (`role="SERVICE"`, as `okr metric record` records). Its
    events have no actor."""
    return Principal(
        organization_id=pk_of(org),
        role=role,
        on_track_gap=org.on_track_gap,
        at_risk_gap=org.at_risk_gap,
        check_in_cadence_days=org.check_in_cadence_days,
    )


def run(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        db = Database(url, pool_size=2, **pooling(get_settings(), url))
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def prepare(settings: Settings) -> str:
    """The database's URL, migrated to head (through the direct URL: migrations hold a
    session-level lock, which a pooler in transaction mode cannot keep)."""
    url = resolve_url(settings)
    migrate.upgrade(direct_url(settings, url))
    return url
