"""Per request: the request id (taken from X-Request-ID or made, returned in the
response header, carried by every log line), the HTTP span, and the request's figures
(latency by route and by GraphQL operation, SQL statements, error codes)."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from strawberry.extensions import SchemaExtension

from service.observability import logs, metrics, tracing

SCOPE_KEY = "okr.request_id"  # OutageGuard (service/outage.py) adopts it


@dataclass
class RequestFacts:
    """What the GraphQL layer learned about a request, for its metrics."""

    operation: tuple[str | None, str | None] | None = None
    errors: list[Any] = field(default_factory=list)  # read when the response is done
    # The caller's organization, when it was authenticated and its operation validated:
    # only such operations name a label (service/observability/metrics.py).
    organization: int | None = None

    @property
    def codes(self) -> list[str]:
        """Each error's code as answered: read at the end, since some are given their
        code after the operation's extensions ran (schema/api.py, Schema.execute)."""
        found = ((getattr(e, "extensions", None) or {}).get("code") for e in self.errors)
        return [code if isinstance(code, str) else "UNCODED" for code in found]


facts_var: contextvars.ContextVar[RequestFacts | None] = contextvars.ContextVar(
    "okr_request_facts", default=None
)
sampler = metrics.Sampler()

# Refusals answered before any GraphQL operation runs (no error list to read).
_STATUS_CODES = {401: "UNAUTHENTICATED", 413: "PAYLOAD_TOO_LARGE", 429: "RATE_LIMITED"}


class ObservedRequests:
    """ASGI middleware, outermost."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = logs.request_id_from(scope.get("headers"))
        scope[SCOPE_KEY] = rid
        log_token = logs.request_id.set(rid)
        span = tracing.start_request_span(scope)
        if scope["type"] == "websocket":
            try:
                await self.app(scope, receive, send)
            finally:
                tracing.end_request_span(span, None, rid)
                logs.request_id.reset(log_token)
            return
        facts = RequestFacts()
        facts_token = facts_var.set(facts)
        status = 500
        statements: int | None = None
        started = time.perf_counter()

        async def observed_send(message: Any) -> None:
            nonlocal status, statements
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = []
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-request-id":
                        continue  # one id per request: ours
                    if name.lower() == b"x-sql-statements":
                        statements = int(value)
                    headers.append((name, value))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            seconds = time.perf_counter() - started
            codes = list(facts.codes)
            if not codes and status in _STATUS_CODES:
                codes.append(_STATUS_CODES[status])
            elif not codes and status == 503:
                codes.append("SERVICE_UNAVAILABLE")
            path = scope.get("path", "")
            is_graphql = metrics.route_label(path) == "/graphql"
            operation = facts.operation if facts.operation else (None, None)
            metrics.observe_request(
                path=path,
                method=scope.get("method", "GET"),
                status=status,
                seconds=seconds,
                statements=statements,
                operation=operation if is_graphql and _is_operation(scope, facts) else None,
                codes=codes,
                organization=facts.organization,
            )
            app = scope.get("app")
            if app is not None:
                sampler.sample(app.state)
            tracing.end_request_span(span, status, rid)
            facts_var.reset(facts_token)
            logs.request_id.reset(log_token)


def _is_operation(scope: Any, facts: RequestFacts) -> bool:
    """A GraphQL request, not the GraphiQL page (a GET without a query)."""
    if facts.operation is not None or scope.get("method") == "POST":
        return True
    return b"query=" in scope.get("query_string", b"")


class OperationFacts(SchemaExtension):
    """Notes each operation's name, type and error codes for the request's metrics."""

    def on_operation(self) -> Iterator[None]:
        yield
        facts = facts_var.get()
        if facts is None:
            return  # a subscription over a WebSocket: no HTTP request to describe
        ctx = self.execution_context
        try:
            kind: str | None = ctx.operation_type.value
        except Exception:  # no document (a syntax error) or no such operation
            kind = None
        facts.operation = (ctx.operation_name, kind)
        errors = list(getattr(ctx, "pre_execution_errors", None) or [])
        context = ctx.context
        if kind is not None and not errors and getattr(context, "is_authenticated", False):
            facts.organization = context.principal.organization_id
        result = getattr(ctx, "result", None)
        if result is not None and result.errors:
            errors.extend(e for e in result.errors if all(e is not x for x in errors))
        facts.errors.extend(errors)


def schema_extensions() -> list[Any]:
    """The schema extensions observability adds: operation facts, and traces when on."""
    return [OperationFacts, *tracing.graphql_extensions()]
