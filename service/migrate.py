"""Alembic driven from code: `okr migrate`, `okr serve` and the tests share this."""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

import migrations
from service.db import to_async_url

log = logging.getLogger("okr.migrate")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", to_async_url(url).replace("%", "%%"))
    return cfg


def _in_thread(fn, *args) -> None:
    # env.py runs its own event loop; keep it off any loop that is running here.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        fn(*args)
        return
    raise RuntimeError("call upgrade() through asyncio.to_thread inside an event loop")


def upgrade(url: str, revision: str = "head") -> str | None:
    """Migrate to `revision` under the advisory lock of migrations/env.py, so that
    workers and replicas starting at once migrate one at a time (the others wait and
    find nothing left to do). A database at a revision this build does not know (a
    later build migrated it, in a rolling deploy) is left as it is: that revision is
    returned, and None when the database was migrated or already current.

    The lock is a session's (`pg_advisory_lock`), held across the migration's
    transaction, so `url` is PostgreSQL itself: never a pooler in transaction mode, which
    could hand the lock's server connection to another client between transactions
    (`OKR_DATABASE_DIRECT_URL`, service/db.py `direct_url`)."""
    cfg = alembic_config(url)
    cfg.attributes["skip_if_newer"] = True
    _in_thread(command.upgrade, cfg, revision)
    newer = cfg.attributes.get("newer_revision")
    if newer is not None:
        log.warning(
            "the database is at revision %s, newer than this build's head %s: not migrating",
            newer,
            head_revision(),
        )
    return newer


def downgrade(url: str, revision: str = "base") -> None:
    _in_thread(command.downgrade, alembic_config(url), revision)


@functools.cache
def head_revision() -> str | None:
    """The newest revision shipped (read once: the files do not change while running)."""
    return ScriptDirectory.from_config(alembic_config("postgresql://x/y")).get_current_head()


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision this build ships."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://x/y"))
    return frozenset(r.revision for r in script.walk_revisions())


def readiness(current: str | None) -> str:
    """How the database's revision stands to this build: "current" (its head), "newer"
    (a revision this build does not know: a later build migrated it, and this one keeps
    serving through a rolling deploy), or "behind" (a known older revision, or none)."""
    if current is not None and current == head_revision():
        return "current"
    if current is not None and current not in known_revisions():
        return "newer"
    return "behind"


def revision_of(sync_connection) -> str | None:
    return MigrationContext.configure(sync_connection).get_current_revision()


async def current_revision(url: str) -> str | None:
    engine = create_async_engine(to_async_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(revision_of)
    finally:
        await engine.dispose()
