"""The FastAPI application: GraphQL at /graphql, health, readiness and telemetry
(service/observability).

This is the one module that knows both the core and the GraphQL face."""

from __future__ import annotations

import asyncio
import csv
import gc
import io
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import orjson
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.requests import HTTPConnection, Request
from strawberry import UNSET
from strawberry.exceptions import ConnectionRejectionError

from schema.api import build_schema
from schema.context import Context
from schema.http import GraphQLMediaType, HTTPGraphQLRouter
from schema.persisted import PersistedQueries
from schema.ws import BoundedWebSocket, LegacyWSHandler, TransportWSHandler, refusal
from service import background, graphiql, migrate
from service.auth import Authenticator, bearer
from service.cors import add_cors, origin_allowed
from service.db import Database, count_statements, pooling
from service.domain.errors import Rejected, Unauthenticated
from service.domain.principal import Principal
from service.fanout import EventHub
from service.observability import metrics as telemetry
from service.observability import middleware as observability
from service.observability import tracing
from service.observability.loop import LoopMonitor
from service.outage import MESSAGE as OUTAGE_MESSAGE
from service.outage import (
    RETRY_AFTER_SECONDS,
    SERVICE_UNAVAILABLE,
    OutageGuard,
    current_request_id,
    is_unavailable,
    note_outage,
)
from service.outbound import Outbound
from service.ratelimit import RateLimiter
from service.settings import Settings

log = logging.getLogger("okr")


class BodyTooLarge(Exception):
    pass


async def _reply(send, status: int, body: dict) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class StatementCounter:
    """ASGI middleware: counts each request's SQL statements and reports them in the
    `x-sql-statements` header (benchmarks and tests read it)."""

    def __init__(self, app, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    def _too_large(self, scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value) > self.max_body
                except ValueError:
                    return True
        return False

    def _limited(self, receive):
        """Bodies sent without a length are cut off at the limit too."""
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge()
            return message

        return limited

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._too_large(scope):
            await _reply(
                send,
                413,
                {
                    "errors": [
                        {
                            "message": f"the request body is larger than {self.max_body} bytes",
                            "extensions": {"code": "PAYLOAD_TOO_LARGE"},
                        }
                    ]
                },
            )
            return
        receive = self._limited(receive)
        holder = count_statements()

        async def counted_send(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-sql-statements", str(holder.n).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, counted_send)


def create_app(settings: Settings, database_url: str) -> FastAPI:
    # Traces first: the schema below takes the GraphQL span's extension only when on.
    tracing.configure()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(
            database_url,
            pool_size=settings.pool_size,
            connect_timeout=settings.db_connect_timeout_seconds,
            pool_timeout=settings.db_pool_timeout_seconds,
            statement_timeout=settings.db_statement_timeout_seconds,
            **pooling(settings, database_url),
        )
        # The event hub reads through a small pool of its own, so that revocations and
        # progress reach sockets even while requests hold every pooled connection.
        app.state.hub_db = Database(
            database_url,
            pool_size=2,
            connect_timeout=settings.db_connect_timeout_seconds,
            pool_timeout=settings.db_pool_timeout_seconds,
            statement_timeout=settings.db_statement_timeout_seconds,
            **pooling(settings, database_url),
        )
        app.state.hub = EventHub(
            app.state.hub_db,
            queue_size=settings.subscriber_queue_size,
            poll_seconds=settings.event_poll_seconds,
            health_seconds=settings.listener_health_seconds,
        )
        await app.state.hub.start()
        # Work that happens later: reminders, webhooks, metric sources (service/jobs.py).
        app.state.outbound = Outbound.from_settings(settings)
        app.state.jobs = background.runner(app.state.db, settings, app.state.outbound)
        jobs = asyncio.create_task(app.state.jobs.run_forever())
        app.state.loop_monitor = LoopMonitor()  # how long the loop is held (/metrics)
        # What start-up built (the schema, modules, settings) lives as long as the process:
        # out of the collector's sight, a full collection scans only what requests made.
        gc.collect()
        gc.freeze()
        monitor = asyncio.create_task(app.state.loop_monitor.run_forever())
        try:
            yield
        finally:
            monitor.cancel()
            jobs.cancel()
            await app.state.outbound.close()
            await app.state.hub.stop()
            await app.state.hub_db.dispose()
            await app.state.db.dispose()

    app = FastAPI(
        title="okr-service", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.settings = settings

    def authenticator(application) -> Authenticator:
        state = application.state
        if getattr(state, "authenticator", None) is None or state.authenticator.db is not state.db:
            old = getattr(state, "authenticator", None)
            state.authenticator = Authenticator(settings, state.db)
            hub = getattr(state, "hub", None)
            if old is not None and hub is not None and old.cache.notice in hub.notice_hooks:
                hub.notice_hooks.remove(old.cache.notice)
            if hub is not None:  # the cache forgets by the replica's notifications
                hub.notice_hooks.append(state.authenticator.cache.notice)
                state.authenticator.cache.listening = lambda: hub.listening
                state.authenticator.healthy = lambda: hub.listening
        return state.authenticator

    async def get_context(connection: HTTPConnection) -> Context:
        db: Database = connection.app.state.db
        ctx = Context(db, settings, request_id=current_request_id())
        ctx.hub = getattr(connection.app.state, "hub", None)
        if connection.scope["type"] != "http":
            return ctx  # WebSockets authenticate on connection_init
        request = Request(connection.scope)
        if request.method == "GET" and not {"query", "extensions"} & set(request.query_params):
            return ctx  # the GraphiQL page itself
        token = bearer(connection.headers.get("authorization"))
        ctx.authenticate_as(await authenticator(connection.app).authenticate(token))
        return ctx

    class Router(HTTPGraphQLRouter):
        """WebSockets authenticate on connection_init and again for every operation, and
        close when their credential ends (schema/ws.py)."""

        graphql_transport_ws_handler_class = TransportWSHandler
        graphql_ws_handler_class = LegacyWSHandler
        # Strawberry's own GraphQLRouter needs the same ignore: the stub's Callable takes
        # WebSocket[State] where the adapter's __init__ takes WebSocket.
        websocket_adapter_class = BoundedWebSocket  # type: ignore[assignment]
        max_message_bytes = settings.max_body_bytes

        @property
        def graphql_ide_html(self) -> str:
            """GraphiQL from this service's own assets, not a CDN (service/graphiql.py)."""
            return graphiql.page()

        def is_websocket_origin_allowed(self, request: object, origin: str) -> bool:
            """Pages on other origins open sockets as they may query (service/cors.py)."""
            return origin_allowed(settings, origin)

        def encode_json(self, data: object) -> str:
            return orjson.dumps(data).decode()

        def decode_json(self, data: str | bytes) -> object:
            """JSON nested too deep, not UTF-8, or with a number of thousands of digits is
            unreadable JSON (400, or 4400 on a socket), not an internal error."""
            try:
                return json.loads(data)
            except json.JSONDecodeError:
                raise
            except (RecursionError, ValueError) as exc:
                raise json.JSONDecodeError(
                    f"unreadable JSON ({type(exc).__name__})", "", 0
                ) from None

        def create_response(self, response_data, sub_response):  # type: ignore[no-untyped-def]
            """A result that failed because the database is out is a 503 with
            Retry-After, so clients and proxies retry it rather than give up."""
            response = super().create_response(response_data, sub_response)
            results = response_data if isinstance(response_data, list) else [response_data]
            if any(
                (e.get("extensions") or {}).get("code") == SERVICE_UNAVAILABLE
                for r in results
                for e in (r.get("errors") or [])
            ):
                response.status_code = 503
                response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response

        async def authenticate_token(
            self, context: Context, token: str, *, cached: bool = False
        ) -> Principal:
            request = context.request
            if request is None:  # never: a socket's context always carries its connection
                raise ConnectionRejectionError(refusal("no connection to authenticate"))
            try:
                return await authenticator(request.app).authenticate(token, cached=cached)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                note_outage(exc, "websocket authentication")
                raise ConnectionRejectionError(
                    {"message": OUTAGE_MESSAGE, "extensions": {"code": SERVICE_UNAVAILABLE}}
                ) from None

        async def on_ws_connect(self, context: Context):
            """The handlers have authenticated connection_init before this runs."""
            if not context.is_authenticated:
                raise ConnectionRejectionError(refusal("authentication required"))
            return UNSET

    schema = build_schema(settings)
    schema.extensions = (*schema.extensions, *observability.schema_extensions())
    graphql = Router(
        schema,
        context_getter=get_context,
        graphql_ide="graphiql" if settings.graphiql_enabled else None,
        keep_alive=True,
        keep_alive_interval=15,
        connection_init_wait_timeout=timedelta(seconds=settings.ws_init_timeout_seconds),
    )
    # HTTP: persisted queries and rate limits (schema/http.py), CORS (service/cors.py).
    graphql.persisted = PersistedQueries(settings.persisted_queries_size)
    if settings.rate_limit_per_minute:
        graphql.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
    app.include_router(graphql, prefix="/graphql")
    if settings.graphiql_enabled:
        graphiql.mount(app)  # its assets, for a network with no way out

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(_request: Request, exc: Unauthenticated) -> JSONResponse:
        return JSONResponse(
            {
                "data": None,
                "errors": [{"message": str(exc), "extensions": {"code": "UNAUTHENTICATED"}}],
            },
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.get("/export/cycles/{cycle_id}.csv")
    async def export_cycle(cycle_id: str, request: Request) -> Response:
        """The cycle report as a spreadsheet: one row per key result."""
        from schema.ids import BadId, decode_as
        from service import clock
        from service.reports import CSV_COLUMNS, ReportRefused, bounded_report, csv_rows

        principal = await authenticator(request.app).authenticate(
            bearer(request.headers.get("authorization"))
        )
        limited = graphql.limit(principal)  # the same allowance as /graphql
        if limited is not None:
            return limited
        try:
            pk = decode_as(cycle_id, "Cycle")
        except BadId:
            return PlainTextResponse("not a cycle id\n", status_code=404)
        try:
            report = await bounded_report(
                request.app.state.db,
                principal,
                pk,
                clock.now(),
                settings.max_query_cost,
                settings.execution_deadline_seconds,
            )
        except Rejected:
            return PlainTextResponse("cycle not found\n", status_code=404)
        except ReportRefused as refused:  # too costly, or past the deadline
            return PlainTextResponse(f"{refused}\n", status_code=refused.status)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(report))
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", report.cycle.name)
        return PlainTextResponse(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        db: Database = app.state.db
        try:
            async with asyncio.timeout(settings.readiness_timeout_seconds):
                async with db.connect() as conn:
                    current = await conn.run_sync(migrate.revision_of)
        except Exception as exc:  # unreachable, or not answering in time: not ready
            note_outage(exc, "readiness check")
            return JSONResponse(
                {"status": "unavailable", "database": "unreachable"},
                503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        head = migrate.head_revision()
        # At this build's head or newer (a later build's migration, in a rolling deploy)
        # is ready; behind is not (docs/design.md, "Transport").
        standing = migrate.readiness(current)
        if standing == "behind":
            return JSONResponse({"status": "unavailable", "migration": current, "head": head}, 503)
        # The event listener (service/fanout.py): without it this replica's subscriptions
        # go stale, so it is not ready until the hub has reconnected. (No hub: the app is
        # served without its lifespan, as in tests that call it in-process.)
        hub = getattr(app.state, "hub", None)
        listener = {} if hub is None else {"listener": "ok" if hub.listening else "down"}
        if listener.get("listener") == "down":
            return JSONResponse(
                {"status": "unavailable", **listener, "migration": current, "head": head},
                503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return JSONResponse({"status": "ok", **listener, "migration": current, "head": head})

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        if not telemetry.token_accepted(
            settings.metrics_token, request.headers.get("authorization")
        ):
            return PlainTextResponse(
                "a metrics token is required\n",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        observability.sampler.sample(app.state)
        body, content_type = telemetry.render()
        return Response(body, media_type=content_type)

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(_request: Request, _exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(
            {
                "errors": [
                    {
                        "message": "the request body is larger than "
                        f"{settings.max_body_bytes} bytes",
                        "extensions": {"code": "PAYLOAD_TOO_LARGE"},
                    }
                ]
            },
            status_code=413,
        )

    app.add_middleware(StatementCounter, max_body=settings.max_body_bytes)
    # Observability (service/observability): request id, metrics, traces.
    app.add_middleware(OutageGuard)  # whatever escapes becomes JSON
    app.add_middleware(GraphQLMediaType)  # in the media type the client asked for
    app.add_middleware(observability.ObservedRequests)  # outermost: id, figures, span
    add_cors(app, settings)  # outermost, so that errors and preflights carry CORS headers
    return app
