"""`okr serve --workers N`: N stateless server processes on one port.

The parent applies migrations and resolves the database once (starting the embedded
one if none is configured), then hands the URL to its workers in the environment;
uvicorn's supervisor starts N workers, restarts one that dies, and on SIGTERM/SIGINT
drains them (lifespan shutdown: the event hub and the pools close; open WebSockets get
a 1012 close).

Each worker listens on a socket of its own, bound to the one port with `SO_REUSEPORT`
(`run`): the kernel hands every new connection to one of the workers' sockets by a
hash of its addresses, so connections spread evenly whoever happens to be awake. With
one socket shared by all (uvicorn's own `--workers`), every worker waits on it and the
first to wake takes the connection: under load one worker may take most of them
(bench/spread.py measures it). The supervisor holds a bound socket of the same group
that never listens, so the port is claimed before any worker starts.

Each worker is a whole service: its own pools, its own event listener (so a
subscription on any worker sees every commit, in order, with replay from the outbox)
and its own reminder timer, of which the advisory lock in service/reminders.py lets one
write at a time across workers and replicas.

Every HTTP response and every WebSocket handshake carries `x-okr-worker: <pid>`, so an
operator (and the tests) can tell which process answered.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from uvicorn.supervisors import multiprocess

from schema.ws import RAW_SEND

if TYPE_CHECKING:
    from uvicorn import Config

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
        if scope["type"] == "websocket":
            # The server's own send, for a socket's frames once it is open
            # (schema/broadcast.py's Outlet): no middleware acts on `websocket.send`, so
            # each frame skips their wrappers (this one, Starlette's).
            scope[RAW_SEND] = send

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


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT (not yet listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class OwnSocketProcess(multiprocess.Process):
    """A uvicorn worker that listens on a socket of its own in the port's SO_REUSEPORT
    group, instead of the supervisor's (which never listens)."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover
        for inherited in sockets or []:
            inherited.close()
        super().target([reuse_port_socket(self.config.host, self.config.port)])


def run(config: Config) -> None:
    """`okr serve --workers N`: uvicorn's supervisor over workers with sockets of their
    own (see the module doc)."""
    import logging

    try:
        holder = reuse_port_socket(config.host, config.port)
    except OSError as exc:
        logging.getLogger("uvicorn.error").error(exc)
        sys.exit(1)
    holder.set_inheritable(True)
    # The supervisor makes its workers with the module's `Process`: ours, in this
    # process only (the supervisor of `okr serve --workers`).
    multiprocess.Process = OwnSocketProcess  # type: ignore[misc]
    try:
        multiprocess.Multiprocess(config, sockets=[holder]).run()
    finally:
        holder.close()
