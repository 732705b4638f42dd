"""OpenTelemetry traces, off unless OTEL_EXPORTER_OTLP_ENDPOINT or OKR_TRACING is set.

When on, every HTTP request is a SERVER span (continuing the caller's W3C
`traceparent`), every GraphQL operation a span below it (Strawberry's
OpenTelemetryExtension: parsing, validation, resolvers; `GraphQLSpans` keeps the query
text and every argument value but ids, numbers, booleans and enum values out of
them, so no note, title, email or token is exported), and every SQL statement a
CLIENT span below whatever is current (an engine event hook: no extra package). Spans
go to the OTLP/HTTP exporter, configured by the standard OTEL_* variables
(OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, ...). Tests install a provider of
their own (`install`) with the SDK's InMemorySpanExporter.

`configure` runs first thing in service/app.py's `create_app`, before the schema is
built (the GraphQL extension is added only when tracing is on). The opentelemetry
packages are part of the ordinary install; should they be missing, the service starts
without traces and says so once."""

from __future__ import annotations

import logging
import os
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

_provider: Any = None  # an opentelemetry.sdk.trace.TracerProvider once tracing is on
_hooked = False
_warned = False
log = logging.getLogger("okr.tracing")

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
    except ImportError as exc:  # pragma: no cover - the ordinary install has them
        global _warned
        if not _warned:
            _warned = True
            log.warning(
                "tracing is requested (OTEL_EXPORTER_OTLP_ENDPOINT or OKR_TRACING) but "
                "OpenTelemetry cannot be loaded (%s); serving without traces. Install "
                "opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http.",
                exc,
            )
        return False
    name = os.environ.get("OTEL_SERVICE_NAME", "okr-service")
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    install(provider)
    return True


def tracer(name: str = "okr") -> Any:
    return _provider.get_tracer(name) if _provider is not None else None


# Argument values that name or count things, never the caller's words: kept in spans.
_TRACED_SCALARS = frozenset({"ID", "Int", "Float", "Boolean"})
FILTERED = "[filtered]"


def traced_arguments(args: dict[str, Any], info: Any) -> dict[str, Any]:
    """The resolver arguments a span may carry: ids, numbers, booleans and enum values
    as they are; anything else (strings, dates, input objects: a check-in's note, a
    title, an email, a token) as "[filtered]"."""
    from graphql import GraphQLEnumType, get_named_type

    field = info.parent_type.fields.get(info.field_name)
    definitions = getattr(field, "args", None) or {}
    kept: dict[str, Any] = {}
    for name, value in args.items():
        definition = _argument(definitions, name)
        named = get_named_type(definition.type) if definition is not None else None
        safe = isinstance(named, GraphQLEnumType) or getattr(named, "name", None) in (
            _TRACED_SCALARS
        )
        kept[name] = value if safe else FILTERED
    return kept


def _argument(definitions: dict[str, Any], python_name: str) -> Any:
    """The GraphQL argument a resolver's keyword argument came from (camelCase there)."""
    if python_name in definitions:
        return definitions[python_name]
    head, *rest = python_name.split("_")
    return definitions.get(head + "".join(part.title() for part in rest))


def graphql_extensions() -> list[Any]:
    """The operation's spans (`GraphQLSpans`) bound to our provider, when tracing is on."""
    if _provider is None:
        return []
    return [partial(_graphql_spans(), tracer_provider=_provider, arg_filter=traced_arguments)]


def _graphql_spans() -> type:
    from opentelemetry.trace import SpanKind
    from strawberry.extensions import LifecycleStep
    from strawberry.extensions.tracing import OpenTelemetryExtension

    class GraphQLSpans(OpenTelemetryExtension):
        """Strawberry's extension without the query text (literals in it may be notes,
        emails or tokens): the operation's name and type instead."""

        def on_operation(self) -> Generator[None, None, None]:
            name = self.execution_context.operation_name
            span = self._tracer.start_span(
                f"GraphQL Query: {name}" if name else "GraphQL Query", kind=SpanKind.SERVER
            )
            span.set_attribute("component", "graphql")
            self._span_holder[LifecycleStep.OPERATION] = span
            yield
            name = self.execution_context.operation_name
            if name:
                span.update_name(f"GraphQL Query: {name}")
                span.set_attribute("graphql.operation.name", name)
            try:
                kind = self.execution_context.operation_type.value
            except Exception:  # no document (a syntax error) or no such operation
                kind = None
            if kind:
                span.set_attribute("graphql.operation.type", kind)
            span.end()

    return GraphQLSpans


def current_ids() -> tuple[str, str] | None:
    """The current span's trace id and span id (hex), for log lines; None when off."""
    if _provider is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


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
