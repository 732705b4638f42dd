"""What the service does while its database is down or hung: one place that tells an
outage from a bug, answers it as a clear, retryable error (HTTP 503 with Retry-After,
a JSON body with a code and the request id, a WebSocket close with a reason), and
logs it without flooding the log.

A database that refuses connections fails fast; one that accepts and never answers is
cut off by the connect, pool and statement timeouts (`Settings.db_*`), so no request
waits longer than those bounds. Everything that is not an outage stays a bug: masked
for the client ("Internal server error" and the request id) and logged with its stack.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import uuid
from typing import Any

import asyncpg
import orjson
from sqlalchemy import exc as sa_exc

log = logging.getLogger("okr.outage")

SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
MESSAGE = "the database is unavailable; retry later"
RETRY_AFTER_SECONDS = 5
# WebSocket close code 1013: "Try Again Later" (RFC 6455 registry).
WS_TRY_AGAIN_LATER = 1013

# SQLSTATE classes and codes that mean "the database cannot serve us now", not "your
# statement is wrong": connection exceptions, shutdown, too many connections, and our
# own statement timeout (a hung server).
_UNAVAILABLE_STATES = {"57P01", "57P02", "57P03", "53300", "57014", "08000", "08001", "08003"}
_UNAVAILABLE_CLASSES = ("08",)

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def current_request_id() -> str:
    """The request id of the request this task serves (one is made when there is none)."""
    rid = request_id_var.get()
    if rid is None:
        rid = new_request_id()
        request_id_var.set(rid)
    return rid


class DatabaseUnavailable(Exception):
    """Raised where an outage is recognized; answered with 503."""

    def __init__(self, message: str = MESSAGE) -> None:
        super().__init__(message)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen) or len(seen) > 20:
            continue
        seen.append(e)
        todo.extend([e.__cause__, e.__context__, getattr(e, "orig", None)])
    return seen


def is_unavailable(exc: BaseException) -> bool:
    """Whether this exception (or one it was raised from) says the database is down,
    unreachable, overloaded or not answering in time."""
    for e in _chain(exc):
        if isinstance(e, DatabaseUnavailable):
            return True
        if isinstance(e, sa_exc.TimeoutError):  # no pooled connection in time
            return True
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(
            e,
            asyncpg.PostgresConnectionError
            | asyncpg.exceptions.ConnectionDoesNotExistError
            | asyncpg.exceptions.CannotConnectNowError
            | asyncpg.exceptions.TooManyConnectionsError
            | asyncpg.exceptions.AdminShutdownError
            | asyncpg.exceptions.QueryCanceledError,
        ):
            return True
        if isinstance(e, asyncpg.InterfaceError) and "connection" in str(e).lower():
            return True
        if isinstance(e, OSError | TimeoutError | asyncio.TimeoutError):
            return True
        state = getattr(e, "sqlstate", None)
        if isinstance(state, str) and (
            state in _UNAVAILABLE_STATES or state.startswith(_UNAVAILABLE_CLASSES)
        ):
            return True
    return False


class RateLimitedLog:
    """At most one line per `interval` for each kind of trouble; the lines held back are
    counted and reported with the next one, so an outage costs a few lines a minute,
    not one traceback per request."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, kind: str, message: str, *args: Any) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._held[kind] = self._held.get(kind, 0) + 1
                return False
            held = self._held.pop(kind, 0)
            self._last[kind] = now
        suffix = f" ({held} more like it since the last report)" if held else ""
        self.logger.warning(message + suffix, *args)
        return True


outage_log = RateLimitedLog(log)


def note_outage(exc: BaseException, where: str) -> None:
    outage_log.warning(
        "database", "database unavailable (%s): %s: %s", where, type(exc).__name__, exc
    )


def error_body(request_id: str) -> dict[str, Any]:
    return {
        "data": None,
        "errors": [
            {
                "message": MESSAGE,
                "extensions": {"code": SERVICE_UNAVAILABLE, "requestId": request_id},
            }
        ],
    }


def internal_error_body(request_id: str) -> dict[str, Any]:
    return {
        "data": None,
        "errors": [
            {
                "message": "Internal server error",
                "extensions": {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
            }
        ],
    }


class OutageGuard:
    """ASGI middleware, outermost: gives every HTTP request an id (`x-request-id` on the
    response), and turns what escapes the application into JSON: an outage into 503
    with Retry-After, anything else into a masked 500 logged once with its stack."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # The id service/observability chose (the client's X-Request-ID or a new one).
        rid = scope.get("okr.request_id") or new_request_id()
        token = request_id_var.set(rid)
        if scope["type"] == "websocket":
            try:
                await self.app(scope, receive, send)
            finally:
                request_id_var.reset(token)
            return
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise  # the response is under way; nothing better can be sent
            if is_unavailable(exc):
                note_outage(exc, scope.get("path", ""))
                await _json(send, 503, error_body(rid), retry_after=True, request_id=rid)
            else:
                log.error("unhandled error (request %s)", rid, exc_info=exc)
                await _json(send, 500, internal_error_body(rid), request_id=rid)
        finally:
            request_id_var.reset(token)


async def _json(
    send: Any, status: int, body: dict[str, Any], *, retry_after: bool = False, request_id: str
) -> None:
    data = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if retry_after:
        headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
