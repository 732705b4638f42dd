"""The HTTP side of /graphql, shared by the service's router (service/app.py):

- Apollo's automatic persisted queries, over POST and GET (schema/persisted.py);
- GraphiQL only for a GET whose Accept prefers text/html; every other answer is JSON,
  including the request errors Strawberry answers in plain text;
- batched requests (a JSON array) are not run: each operation is costed and cached on
  its own, and a batch would multiply the limits of one request by its length. The
  answer is an array with one error (BATCHING_NOT_SUPPORTED) per operation, so a
  batching client (Apollo's BatchHttpLink) hands each operation its own error; clients
  send one operation per request (Apollo's default HttpLink does);
- a body is JSON in UTF-8 with no key twice (a gateway in front could read UTF-16, or
  the other of two `"query"` keys, differently from us): anything else is refused;
- `Accept: application/graphql-response+json` answers with that content type and the
  status codes of GraphQL over HTTP (400 when the request did not produce data); every
  other answer of /graphql (401, 413, 429, 503) too, by `GraphQLMediaType`;
- rate limits per API key and per user (service/ratelimit.py), shared with WebSocket
  operations (schema/ws.py) and exports (`limit`)."""

from __future__ import annotations

import contextvars
import json
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from strawberry import UNSET
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLRequestData

from schema.context import Context
from schema.persisted import BAD_REQUEST, PersistedQueries, RequestError
from service.ratelimit import RateLimiter, rate_limited

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
BATCHING_NOT_SUPPORTED = "BATCHING_NOT_SUPPORTED"
# Strawberry's own refusals, answered as JSON with these codes (else BAD_REQUEST).
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}

# The organization of the request being answered (persisted queries are kept per
# organization: schema/persisted.py).
_organization: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "request_organization", default=None
)
# Whether the request being answered asked for application/graphql-response+json.
_wants_graphql_response: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "wants_graphql_response", default=False
)


def _accepted(accept: str) -> dict[str, float]:
    """Media types of an Accept header with their quality (q=1 unless stated)."""
    found: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        found[media.lower()] = max(quality, found.get(media.lower(), 0.0))
    return found


def prefers_html(accept: str) -> bool:
    """A browser asking for a page: text/html accepted at least as well as JSON.
    `*/*` alone (curl, scripts) is not a browser."""
    types = _accepted(accept)
    html = types.get("text/html", 0.0)
    json_q = max(types.get("application/json", 0.0), types.get(GRAPHQL_RESPONSE_JSON, 0.0))
    return html > 0 and html >= json_q


def prefers_graphql_response(accept: str) -> bool:
    types = _accepted(accept)
    ours = types.get(GRAPHQL_RESPONSE_JSON, 0.0)
    return ours > 0 and ours >= types.get("application/json", 0.0)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise RequestError(
                400, f"the JSON body has the key {key!r} more than once", BAD_REQUEST
            )
        found[key] = value
    return found


def parse_body(data: str | bytes) -> Any:
    """A request body: JSON in UTF-8, each key once. RequestError otherwise."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(400, "the request body must be JSON in UTF-8", BAD_REQUEST) from None
    try:
        return json.loads(data, object_pairs_hook=_unique_keys)
    except (RecursionError, ValueError):  # JSONDecodeError included
        raise RequestError(400, "Unable to parse request body as JSON", BAD_REQUEST) from None


class BatchRefused(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _plain_json(name: bytes, value: bytes) -> bool:
    return name.lower() == b"content-type" and value.split(b";")[0].strip() == b"application/json"


def _is_graphql_path(path: str) -> bool:
    return path == "/graphql" or path.startswith("/graphql/")


class GraphQLMediaType:
    """ASGI middleware: a /graphql answer in plain JSON (401 from authentication, 413,
    503 from the outage guard, ...) goes out as application/graphql-response+json when
    the client prefers that, as GraphQL over HTTP asks."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _is_graphql_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        accept = b",".join(v for k, v in scope.get("headers", ()) if k.lower() == b"accept")
        if not prefers_graphql_response(accept.decode("latin-1")):
            await self.app(scope, receive, send)
            return

        async def as_asked(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, GRAPHQL_RESPONSE_JSON.encode())
                    if k.lower() == b"content-type"
                    and v.split(b";")[0].strip() == b"application/json"
                    else (k, v)
                    for k, v in message.get("headers", [])
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, as_asked)


class HTTPGraphQLRouter(GraphQLRouter[Context, None]):
    """Set `persisted` and `rate_limiter` on the instance (see service/app.py)."""

    persisted: PersistedQueries = PersistedQueries(1000, 100_000)
    rate_limiter: RateLimiter | None = None

    def should_render_graphql_ide(self, request: Any) -> bool:
        params = request.query_params
        return (
            request.method == "GET"
            and params.get("query") is None
            and params.get("extensions") is None
            and prefers_html(request.headers.get("accept", ""))
        )

    def _validate_batch_request(self, request_data: Any, protocol: Any) -> None:
        raise BatchRefused(len(request_data))

    def parse_json(self, data: str | bytes) -> Any:
        return parse_body(data)

    async def parse_http_body(self, request: Any) -> Any:
        data = await super().parse_http_body(request)
        if isinstance(data, GraphQLRequestData):  # a batch was refused above
            data.query = self.persisted.resolve(data.query, data.extensions, _organization.get())
        return data

    def create_response(self, response_data: Any, sub_response: Any) -> Response:
        if not _wants_graphql_response.get():
            return super().create_response(response_data, sub_response)
        # GraphQL over HTTP: a request that produced no data (it did not parse or
        # validate, or its variables did not fit) is the client's error: 400, and no
        # `data` entry. Errors of execution carry a path; an outage stays 503.
        errors = response_data.get("errors") if isinstance(response_data, dict) else None
        failed = (
            errors is not None
            and len(errors) > 0
            and response_data.get("data") is None
            and all(
                "path" not in e and (e.get("extensions") or {}).get("code") != "SERVICE_UNAVAILABLE"
                for e in errors
            )
        )
        if failed:
            response_data = {k: v for k, v in response_data.items() if k != "data"}
        response = super().create_response(response_data, sub_response)
        response.headers["content-type"] = GRAPHQL_RESPONSE_JSON
        if failed and response.status_code == 200:
            response.status_code = 400
        return response

    def limit(self, principal: Any) -> Response | None:
        """A 429 when `principal` has used up its allowance (one request taken), else
        None. The same allowance as its WebSocket operations and exports."""
        error = rate_limited(self.rate_limiter, principal)
        if error is None:
            return None
        retry_after = str(error["extensions"]["retryAfter"])
        return JSONResponse(
            {"errors": [error]}, status_code=429, headers={"Retry-After": retry_after}
        )

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        if not isinstance(request, Request):  # a WebSocket: schema/ws.py
            return await super().run(request, context, root_value)
        authenticated = getattr(context, "is_authenticated", False)
        limited = self.limit(context.principal) if authenticated else None
        if limited is not None:
            return limited
        token = _wants_graphql_response.set(
            prefers_graphql_response(request.headers.get("accept", ""))
        )
        org = _organization.set(context.principal.organization_id if authenticated else None)
        try:
            return await super().run(request, context, root_value)
        except BatchRefused as exc:
            return self._batch_refused(exc.size)
        except RequestError as exc:
            return self._error(exc.status, exc.body(), exc.headers)
        except HTTPException as exc:
            status = exc.status_code
            code = _HTTP_CODES.get(status, BAD_REQUEST)
            body = {"errors": [{"message": exc.reason, "extensions": {"code": code}}]}
            return self._error(status, body, {})
        finally:
            _organization.reset(org)
            _wants_graphql_response.reset(token)

    def _batch_refused(self, size: int) -> Response:
        """One error per operation, in an array as long as the batch (200 in plain JSON,
        as batching clients expect; 400 under GraphQL over HTTP, as for any request that
        produced no data). An empty array is one error."""
        error = {
            "message": "batched requests (a JSON array) are not supported: "
            "send one operation per request",
            "extensions": {"code": BATCHING_NOT_SUPPORTED},
        }
        if size == 0:
            return self._error(400, {"errors": [error]}, {})
        body: Any = [{"errors": [error]} for _ in range(size)]
        if _wants_graphql_response.get():
            return Response(
                self.encode_json(body), status_code=400, media_type=GRAPHQL_RESPONSE_JSON
            )
        return JSONResponse(body, status_code=200)

    def _error(self, status: int, body: dict, headers: dict[str, str]) -> Response:
        if _wants_graphql_response.get():
            return Response(
                self.encode_json(body),
                status_code=status,
                headers=headers,
                media_type=GRAPHQL_RESPONSE_JSON,
            )
        return JSONResponse(body, status_code=status, headers=headers)
