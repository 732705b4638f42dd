"""OpenTelemetry traces, off unless OTEL_EXPORTER_OTLP_ENDPOINT or OKR_TRACING is set.

When on, every HTTP request is a SERVER span (continuing the caller's W3C
`traceparent`), every GraphQL operation a span below it (Strawberry's
OpenTelemetryExtension: parsing, validation, resolvers), and every SQL statement a
CLIENT span below whatever is current (an engine event hook: no extra package). Spans
go to the OTLP/HTTP exporter, configured by the standard OTEL_* variables
(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, ...). Tests install a provider of
their own (`install`) with the SDK's InMemorySpanExporter.

The opentelemetry packages are needed only when tracing is on (the `tracing` extra)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

_provider: Any = None  # an opentelemetry.sdk.trace.TracerProvider once tracing is on
_hooked = False

FALSE = ("", "0", "false", "no", "off")


def requested() -> bool:
    """Whether the environment asks for traces."""
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        return True
    return os.environ.get("OKR_TRACING", "").strip().lower() not in FALSE


def enabled() -> bool:
    return _provider is not None


def install(provider: Any) -> None:
    """Use `provider` (an SDK TracerProvider) for every span the service makes; None
    turns tracing off again."""
    global _provider
    _provider = provider
    if provider is not None:
        _hook_statements()


def configure() -> bool:
    """At start-up: when the environment asks for traces, a provider exporting to OTLP
    over HTTP. Returns whether tracing is on."""
    if _provider is not None:
        return True
    if not requested():
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "tracing is requested (OTEL_EXPORTER_OTLP_ENDPOINT or OKR_TRACING) but the "
            "OpenTelemetry packages are missing: pip install 'okr-service[tracing]'"
        ) from exc
    name = os.environ.get("OTEL_SERVICE_NAME", "okr-service")
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)
    return True


def tracer(name: str = "okr") -> Any:
    return _provider.get_tracer(name) if _provider is not None else None


def graphql_extensions() -> list[Any]:
    """Strawberry's OpenTelemetryExtension bound to our provider, when tracing is on."""
    if _provider is None:
        return []
    from strawberry.extensions.tracing import OpenTelemetryExtension

    return [partial(OpenTelemetryExtension, tracer_provider=_provider)]


def start_request_span(scope: Any) -> Any:
    """The SERVER span of one HTTP request or WebSocket, made current; None when off.
    Returns (span, context token) for `end_request_span`."""
    if _provider is None:
        return None
    from opentelemetry import context, propagate, trace

    carrier = {
        k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())
    }
    parent = propagate.extract(carrier)
    method = scope.get("method", "WEBSOCKET" if scope["type"] == "websocket" else "GET")
    from service.observability.metrics import route_label

    route = route_label(scope.get("path", ""))
    span = tracer("okr.http").start_span(
        f"{method} {route}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={
            "http.request.method": method,
            "url.path": scope.get("path", ""),
            "http.route": route,
        },
    )
    token = context.attach(trace.set_span_in_context(span, parent))
    return span, token


def end_request_span(started: Any, status: int | None, request_id: str | None) -> None:
    if started is None:
        return
    from opentelemetry import context, trace

    span, token = started
    if status is not None:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(trace.Status(trace.StatusCode.ERROR))
    if request_id:
        span.set_attribute("okr.request_id", request_id)
    span.end()
    context.detach(token)


@contextmanager
def statement_span(statement: str) -> Iterator[None]:
    """A CLIENT span for a statement sent past SQLAlchemy (the planned reads' asyncpg
    calls, service/reads/rows.py); nothing when tracing is off."""
    if _provider is None:
        yield
        return
    from opentelemetry import trace

    verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
    attributes = {"db.system": "postgresql", "db.statement": statement[:2000], "db.operation": verb}
    with tracer("okr.db").start_as_current_span(
        verb, kind=trace.SpanKind.CLIENT, attributes=attributes
    ):
        yield


def _hook_statements() -> None:
    """SQL statements as CLIENT spans: a listener on every SQLAlchemy Engine."""
    global _hooked
    if _hooked:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "before_cursor_execute", _before)
    event.listen(Engine, "after_cursor_execute", _after)
    event.listen(Engine, "handle_error", _failed)
    _hooked = True


_KEY = "_okr_span"


def _before(conn, cursor, statement, parameters, context, executemany) -> None:
    if _provider is None or context is None:
        return
    from opentelemetry import trace

    verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
    span = tracer("okr.db").start_span(
        verb,
        kind=trace.SpanKind.CLIENT,
        attributes={
            "db.system": "postgresql",
            "db.statement": statement[:2000],
            "db.operation": verb,
        },
    )
    setattr(context, _KEY, span)


def _after(conn, cursor, statement, parameters, context, executemany) -> None:
    span = getattr(context, _KEY, None) if context is not None else None
    if span is not None:
        span.end()
        setattr(context, _KEY, None)


def _failed(exception_context) -> None:
    context = exception_context.execution_context
    span = getattr(context, _KEY, None) if context is not None else None
    if span is None:
        return
    from opentelemetry import trace

    span.record_exception(exception_context.original_exception)
    span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.end()
    setattr(context, _KEY, None)
