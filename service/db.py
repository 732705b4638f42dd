"""The database: one async engine per process, sessions for use cases, a statement counter.

Use cases own their transactions through `Database.transaction`; data loaders open
their own connection per batch (`Database.connect`), so sibling resolvers never
share one.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATEs after which the whole transaction may simply run again.
RETRYABLE = {"40001", "40P01"}  # serialization_failure, deadlock_detected
MAX_ATTEMPTS = 6


@dataclass
class StatementCount:
    n: int = 0


# Set per request; data loaders run in child tasks that inherit the same holder.
_statement_count: contextvars.ContextVar[StatementCount | None] = contextvars.ContextVar(
    "statement_count", default=None
)


def count_statements() -> StatementCount:
    """Start counting the SQL statements run by this task and its children."""
    holder = StatementCount()
    _statement_count.set(holder)
    return holder


def _on_execute(conn, cursor, statement, parameters, context, executemany) -> None:
    holder = _statement_count.get()
    if holder is not None:
        holder.n += 1


def to_async_url(url: str) -> str:
    """Accept plain postgres:// URLs and point them at the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('://')[0]}://…")


def direct_url(settings: Settings, url: str) -> str:
    """Where what needs a session of its own connects (the event listener, migrations
    under their advisory lock): OKR_DATABASE_DIRECT_URL when set (OKR_DATABASE_URL then
    names a pooler), else `url`, the resolved OKR_DATABASE_URL."""
    if settings.database_direct_url is not None and settings.database_url is not None:
        return to_async_url(settings.database_direct_url.get_secret_value())
    return url


def pooling(settings: Settings, url: str) -> dict[str, Any]:
    """`Database` arguments for the pooler settings (see `Database`)."""
    embedded = settings.database_url is None
    return {
        "pooler": "none" if embedded else settings.database_pooler,
        "prepared_statements": settings.database_prepared_statements,
        "direct_url": direct_url(settings, url),
    }


def resolve_url(settings: Settings) -> str:
    """The configured database, or the embedded one (started on first use)."""
    if settings.database_url:
        return to_async_url(settings.database_url.get_secret_value())
    from service import embedded

    server = embedded.start(settings.data_dir)
    asyncio_run_or_sync(embedded.ensure_database(server))
    _keep.append(server)
    return embedded.async_url(server)


_keep: list = []  # the embedded server object lives as long as the process


def asyncio_run_or_sync(coro: Awaitable[None]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    raise RuntimeError("resolve_url must be called outside a running event loop")


def _unnamed() -> str:
    return ""  # asyncpg's unnamed statement: parsed again with every execution


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(
        getattr(orig, "__cause__", None), "sqlstate", None
    )


class Database:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        connect_timeout: float = 10.0,
        pool_timeout: float = 30.0,
        statement_timeout: float | None = None,
        pooler: str = "none",
        prepared_statements: bool | None = None,
        direct_url: str | None = None,
    ) -> None:
        """`connect_timeout` bounds opening a connection, `pool_timeout` waiting for a
        pooled one; `statement_timeout` (None: none) is set on the server for every
        statement, and the client gives up two seconds after it, so a server that
        accepts and never answers cannot hold a request (see service/outage.py).

        `pooler="pgbouncer"`: `url` is PgBouncer in transaction mode, where consecutive
        transactions of one client connection may run on different server connections.
        Nothing may then rely on session state:

        - no startup parameter PgBouncer does not track: the server-side statement
          timeout is the role's or the database's (`ALTER ROLE … SET
          statement_timeout`, or PgBouncer's `connect_query`; README, "Operating it"),
          and the client's own timeout still bounds every statement;
        - no named prepared statements unless `prepared_statements` (PgBouncer 1.21 and
          later track them with `max_prepared_statements`): asyncpg's statement cache
          and SQLAlchemy's are off, and SQLAlchemy's statements are unnamed, so asyncpg
          parses each again in the same message batch as its execution (a name would
          leak a statement on whichever server connection ran it, and could collide
          with another client's name there).

        `direct_url`: PostgreSQL itself, for a session of its own (the event listener in
        service/fanout.py); `url` when unset."""
        self.url = to_async_url(url)
        self.direct_url = to_async_url(direct_url) if direct_url else self.url
        self.pooled = pooler != "none"
        prepared = (not self.pooled) if prepared_statements is None else prepared_statements
        self.prepared_statements = prepared
        connect_args: dict[str, Any] = {"timeout": connect_timeout}
        if statement_timeout is not None:
            connect_args["command_timeout"] = statement_timeout + 2.0
            if not self.pooled:
                connect_args["server_settings"] = {
                    "statement_timeout": str(int(statement_timeout * 1000))
                }
        if not prepared:
            connect_args["statement_cache_size"] = 0  # asyncpg's own
            connect_args["prepared_statement_cache_size"] = 0  # SQLAlchemy's
            connect_args["prepared_statement_name_func"] = _unnamed
        self.engine: AsyncEngine = create_async_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=pool_timeout,
            pool_pre_ping=False,  # a dropped connection is invalidated on error instead
            echo=echo,
            connect_args=connect_args,
        )
        event.listen(self.engine.sync_engine, "before_cursor_execute", _on_execute)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Transactions run again, by SQLSTATE (40P01 deadlock, 40001 serialization):
        # the lock order (service/usecases/common.py) keeps 40P01 at zero.
        self.retries: Counter[str] = Counter()

    async def dispose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (data loaders): one per batch, never shared."""
        async with self.engine.connect() as conn:
            yield conn

    async def transaction(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `work` in one transaction; run it again after a deadlock or serialization
        failure. Any exception (a `Rejected` included) rolls everything back."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self.sessions() as session, session.begin():
                    return await work(session)
            except DBAPIError as exc:
                state = sqlstate(exc)
                if state in RETRYABLE:
                    self.retries[state] += 1
                if state in RETRYABLE and attempt < MAX_ATTEMPTS:
                    log.info("retrying transaction after %s (attempt %d)", state, attempt)
                    await asyncio.sleep(0.005 * attempt)
                    continue
                raise
        raise AssertionError("unreachable")
