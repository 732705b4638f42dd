"""The database: one async engine per process, sessions for use cases, a statement counter.

Use cases own their transactions through `Database.transaction`; data loaders open
their own connection per batch (`Database.connect`), so sibling resolvers never
share one.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
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
    ) -> None:
        """`connect_timeout` bounds opening a connection, `pool_timeout` waiting for a
        pooled one; `statement_timeout` (None: none) is set on the server for every
        statement, and the client gives up two seconds after it, so a server that
        accepts and never answers cannot hold a request (see service/outage.py)."""
        self.url = to_async_url(url)
        connect_args: dict[str, Any] = {"timeout": connect_timeout}
        if statement_timeout is not None:
            connect_args["command_timeout"] = statement_timeout + 2.0
            connect_args["server_settings"] = {
                "statement_timeout": str(int(statement_timeout * 1000))
            }
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
                if sqlstate(exc) in RETRYABLE and attempt < MAX_ATTEMPTS:
                    log.info("retrying transaction after %s (attempt %d)", sqlstate(exc), attempt)
                    await asyncio.sleep(0.005 * attempt)
                    continue
                raise
        raise AssertionError("unreachable")
