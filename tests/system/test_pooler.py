"""Issue 24, item 1, in the default suite: what the pooler settings change, shown on the
test PostgreSQL without PgBouncer (tests/system/test_topology.py runs them behind the real one).

- `OKR_DATABASE_POOLER=pgbouncer` leaves no named prepared statement on a server
  connection (a pooler in transaction mode would hand it to another client), and sends
  no startup parameter; the default keeps asyncpg's statement cache.
- What needs a session goes to `OKR_DATABASE_DIRECT_URL`: the event listener, and
  `okr migrate` (a session-level advisory lock) even when `OKR_DATABASE_URL` names a
  server that cannot be reached.
- The settings refuse a pooler without a direct URL.
"""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from service.db import Database, direct_url, pooling
from service.fanout import EventHub
from service.settings import Settings
from tests.factories import JWT_SECRET, free_port, okr

NOWHERE = "postgresql://nobody@127.0.0.1:{port}/nothing"


async def named_statements(db: Database) -> tuple[int, str]:
    """Named prepared statements left on one session after some work through SQLAlchemy
    and through the reads' raw asyncpg path (service/reads/rows.py), and the session's
    statement timeout."""
    async with db.engine.connect() as conn:
        for i in range(3):
            await conn.execute(text("SELECT count(*) FROM organization WHERE id > :i"), {"i": i})
        timeout = (await conn.execute(text("SHOW statement_timeout"))).scalar()
        await conn.commit()
        raw = (await conn.get_raw_connection()).driver_connection
        await raw.fetch("SELECT $1::int", 1)
        left = await raw.fetchval("SELECT count(*) FROM pg_prepared_statements")
    return left, timeout


async def test_behind_a_pooler_no_named_statement_or_startup_parameter_is_left(database_url):
    direct = Database(database_url, pool_size=1, statement_timeout=15)
    pooled = Database(
        database_url, pool_size=1, statement_timeout=15, pooler="pgbouncer",
        direct_url=database_url,
    )  # fmt: skip
    try:
        kept, timeout = await named_statements(direct)
        assert kept > 0 and timeout == "15s"  # the statement cache, the startup parameter
        kept, timeout = await named_statements(pooled)
        assert kept == 0  # nothing a pooler could hand to another client
        assert timeout != "15s"  # the role's or the pooler's, not a startup parameter
        assert pooled.prepared_statements is False and pooled.pooled
    finally:
        await direct.dispose()
        await pooled.dispose()
    # PgBouncer 1.21+ tracks named statements: the cache may stay on behind it.
    tracked = Database(database_url, pooler="pgbouncer", prepared_statements=True)
    try:
        assert (await named_statements(tracked))[0] > 0
    finally:
        await tracked.dispose()


async def test_the_event_listener_connects_to_the_direct_url(database_url):
    pooled = Database(
        NOWHERE.format(port=free_port()), pool_size=1, pooler="pgbouncer",
        direct_url=database_url,
    )  # fmt: skip
    hub = EventHub(pooled, health_seconds=0.5)
    try:
        await hub.start()
        assert hub.listening
    finally:
        await hub.stop()
        await pooled.dispose()


async def test_okr_migrate_uses_the_direct_url(bin_okr, database_url, tmp_path):
    env = {
        **os.environ,
        "OKR_DATABASE_URL": NOWHERE.format(port=free_port()),
        "OKR_DATABASE_DIRECT_URL": database_url,
        "OKR_DATABASE_POOLER": "pgbouncer",
        "OKR_JWT_SECRET": JWT_SECRET,
        "OKR_DATA_DIR": str(tmp_path),
    }
    code, out, err = await okr(bin_okr, env, "migrate")
    assert code == 0, err
    assert out.startswith("migrated to ")


def test_the_settings_refuse_a_pooler_without_a_direct_url(tmp_path):
    with pytest.raises(ValidationError, match="OKR_DATABASE_DIRECT_URL"):
        Settings(database_url="postgresql://a@pgbouncer/okr", database_pooler="pgbouncer")
    with pytest.raises(ValidationError, match="OKR_DATABASE_URL is not"):
        Settings(database_direct_url="postgresql://a@postgres/okr")
    settings = Settings(
        database_url="postgresql://a@pgbouncer/okr",
        database_direct_url="postgresql://a@postgres/okr",
        database_pooler="pgbouncer",
        data_dir=tmp_path,
    )
    url = "postgresql+asyncpg://a@pgbouncer/okr"
    assert direct_url(settings, url) == "postgresql+asyncpg://a@postgres/okr"
    assert pooling(settings, url) == {
        "pooler": "pgbouncer",
        "prepared_statements": None,
        "direct_url": "postgresql+asyncpg://a@postgres/okr",
    }
    # Without a pooler, one URL serves for both.
    plain = Settings(database_url="postgresql://a@db/okr", data_dir=tmp_path)
    assert direct_url(plain, "postgresql+asyncpg://a@db/okr") == "postgresql+asyncpg://a@db/okr"
