"""The HTTP side of /graphql, shared by the service's router (service/app.py):

- Apollo's automatic persisted queries, over POST and GET (schema/persisted.py);
- GraphiQL only for a GET whose Accept prefers text/html; every other answer is JSON,
  including the request errors Strawberry answers in plain text;
- batched requests (a JSON array) are refused with a JSON error (BATCHING_NOT_SUPPORTED):
  each operation is costed and cached on its own, and a batch would multiply the limits
  of one request by its length; clients send one operation per request (Apollo's
  default HttpLink does);
- `Accept: application/graphql-response+json` answers with that content type and the
  status codes of GraphQL over HTTP (400 when the request did not produce data);
- rate limits per API key and per user (service/ratelimit.py)."""

from __future__ import annotations

import contextvars
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from strawberry import UNSET
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLRequestData

from schema.context import Context
from schema.persisted import BAD_REQUEST, PersistedQueries, RequestError
from service.ratelimit import RATE_LIMITED, RateLimiter, caller_key

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
BATCHING_NOT_SUPPORTED = "BATCHING_NOT_SUPPORTED"
# Strawberry's own refusals, answered as JSON with these codes (else BAD_REQUEST).
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}

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
        raise RequestError(
            400,
            "batched requests (a JSON array) are not supported: send one operation per request",
            BATCHING_NOT_SUPPORTED,
        )

    async def parse_http_body(self, request: Any) -> Any:
        data = await super().parse_http_body(request)
        if isinstance(data, GraphQLRequestData):  # a batch was refused above
            data.query = self.persisted.resolve(data.query, data.extensions)
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

    def _limited(self, context: Any) -> Response | None:
        if self.rate_limiter is None or not getattr(context, "is_authenticated", False):
            return None
        key = caller_key(context.principal)
        if key is None:
            return None
        wait = self.rate_limiter.take(key)
        if not wait:
            return None
        retry_after = self.rate_limiter.retry_after(wait)
        return JSONResponse(
            {
                "errors": [
                    {
                        "message": f"rate limit exceeded; retry in {retry_after} s",
                        "extensions": {"code": RATE_LIMITED, "retryAfter": int(retry_after)},
                    }
                ]
            },
            status_code=429,
            headers={"Retry-After": retry_after},
        )

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        if not isinstance(request, Request):  # a WebSocket: schema/ws.py
            return await super().run(request, context, root_value)
        limited = self._limited(context)
        if limited is not None:
            return limited
        token = _wants_graphql_response.set(
            prefers_graphql_response(request.headers.get("accept", ""))
        )
        try:
            return await super().run(request, context, root_value)
        except RequestError as exc:
            return self._error(exc.status, exc.body(), exc.headers)
        except HTTPException as exc:
            status = exc.status_code
            code = _HTTP_CODES.get(status, BAD_REQUEST)
            body = {"errors": [{"message": exc.reason, "extensions": {"code": code}}]}
            return self._error(status, body, {})
        finally:
            _wants_graphql_response.reset(token)

    def _error(self, status: int, body: dict, headers: dict[str, str]) -> Response:
        if _wants_graphql_response.get():
            return Response(
                self.encode_json(body),
                status_code=status,
                headers=headers,
                media_type=GRAPHQL_RESPONSE_JSON,
            )
        return JSONResponse(body, status_code=status, headers=headers)
