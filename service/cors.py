"""Browsers on other origins (CORS): Starlette's middleware, configured from settings.

`OKR_CORS_ORIGINS` lists the allowed origins (none by default: no CORS header is
sent and browsers keep other origins out); `okr serve --demo` also allows any port
of http://localhost and http://127.0.0.1, for a front end in development. The same
setting decides which pages may open a WebSocket (`origin_allowed`, which the GraphQL
router asks on every cross-origin handshake: Strawberry refuses those with 403
otherwise), so a front end that may query also receives live updates. Preflights
(`OPTIONS /graphql`) are answered here; credentials, the Authorization header, JSON
bodies and Apollo's own headers are allowed, and the response headers a client may
read (the request id, Retry-After) are exposed."""

from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from service.settings import Settings

LOCALHOST_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?"
ALLOWED_HEADERS = [
    "authorization",
    "content-type",
    "accept",
    "x-request-id",
    "apollographql-client-name",
    "apollographql-client-version",
    "apollo-require-preflight",
    "x-apollo-operation-name",
]
EXPOSED_HEADERS = ["x-request-id", "x-sql-statements", "retry-after"]
_LOCALHOST = re.compile(LOCALHOST_ORIGINS)


def origin_allowed(settings: Settings, origin: str) -> bool:
    """Whether a page on `origin` may call the service (HTTP and WebSocket alike): an
    origin of OKR_CORS_ORIGINS (or any, with `*`), or a localhost one under --demo."""
    origin = origin.rstrip("/")
    if "*" in settings.cors_origins or origin in settings.cors_origins:
        return True
    return settings.cors_localhost and _LOCALHOST.fullmatch(origin) is not None


def add_cors(app: FastAPI, settings: Settings) -> None:
    """Mount CORS outermost, so every answer (errors and 503s included) carries it."""
    if not settings.cors_origins and not settings.cors_localhost:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_origin_regex=LOCALHOST_ORIGINS if settings.cors_localhost else None,
        # Starlette sends the request's own origin (never `*`) when credentials are on.
        allow_credentials=True,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )
