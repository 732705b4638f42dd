"""GraphiQL that works on a network with no way out: its page and every asset it loads
(React, GraphiQL, the explorer plugin, js-cookie) are served by the service itself from
service/static/graphiql, installed with it as package data.

The assets are the exact files (same versions, same sha384 digests, kept as the page's
`integrity` attributes) that Strawberry's own page loads from a public CDN; the page is
Strawberry's, with those addresses replaced by `/graphiql/...` (LICENSES.txt there)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

FOLDER = Path(__file__).parent / "static" / "graphiql"
PREFIX = "/graphiql"


@cache
def page() -> str:
    """The GraphiQL page, referring only to this service's own /graphiql/ assets."""
    return (FOLDER / "graphiql.html").read_text(encoding="utf-8")


def mount(app: FastAPI) -> None:
    """Serve the assets at /graphiql/<name>."""
    app.mount(PREFIX, StaticFiles(directory=FOLDER), name="graphiql")
