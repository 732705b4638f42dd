"""`okr serve --workers N`: N stateless server processes on one port.

The parent applies migrations and resolves the database once (starting the embedded
one if none is configured), then hands the URL to its workers in the environment;
uvicorn's supervisor binds the port once and forks N workers that accept on the same
socket, restarts one that dies, and on SIGTERM/SIGINT drains them (lifespan shutdown:
the event hub and the pools close; open WebSockets get a 1012 close).

Each worker is a whole service: its own pools, its own event listener (so a
subscription on any worker sees every commit, in order, with replay from the outbox)
and its own reminder timer, of which the advisory lock in service/reminders.py lets one
write at a time across workers and replicas.

Every HTTP response and every WebSocket handshake carries `x-okr-worker: <pid>`, so an
operator (and the tests) can tell which process answered.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.settings import Settings

WORKER_HEADER = b"x-okr-worker"
URL_ENV = "OKR_SERVE_DATABASE_URL"  # the parent's resolved URL, for its workers


class WorkerHeader:
    """ASGI middleware: names the answering process in a response header."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pid = str(os.getpid()).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def named(message: Any) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                headers = list(message.get("headers") or [])
                headers.append((WORKER_HEADER, self.pid))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, named)

    def __getattr__(self, name: str) -> Any:  # app.state and friends, for tools and tests
        return getattr(self.app, name)


def build(database_url: str, settings: Settings | None = None) -> WorkerHeader:
    from service.app import create_app
    from service.settings import get_settings

    return WorkerHeader(create_app(settings or get_settings(), database_url))


def app_factory() -> WorkerHeader:
    """uvicorn's factory in each worker process: the URL the parent resolved."""
    url = os.environ.get(URL_ENV)
    if not url:
        raise RuntimeError(f"{URL_ENV} is not set: start workers with `okr serve --workers N`")
    from service import clock
    from service.settings import get_settings

    clock.start_from_environment(get_settings().clock_start)  # the parent's clock
    return build(url)
