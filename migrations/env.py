"""Alembic environment: async, one advisory lock so that replicas starting together
migrate one at a time."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from service import models

MIGRATION_LOCK = 7_461_001  # pg_advisory_lock key held while migrating

config = context.config
target_metadata = models.metadata


def _newer(connection) -> str | None:
    """The database's revision when a later build wrote it (one this build does not
    know): `okr serve` and `okr migrate` then leave it alone (service/migrate.py)."""
    from alembic.runtime.migration import MigrationContext

    from service.migrate import known_revisions

    current = MigrationContext.configure(connection).get_current_revision()
    return current if current is not None and current not in known_revisions() else None


def _run(connection) -> None:
    # Read under the lock: a newer build may have migrated while this one waited.
    if config.attributes.get("skip_if_newer") and (newer := _newer(connection)):
        config.attributes["newer_revision"] = newer
        return
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=False,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic: sqlalchemy.url is not set")
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
        await conn.commit()
        try:
            await conn.run_sync(_run)
            await conn.commit()
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
            await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())
