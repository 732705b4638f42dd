"""Issue 19, item 7: what client tools hit first, each met as the client meets it, against
a real `okr serve`.

- A browser page on another origin receives live updates: the WebSocket handshake
  follows the same origin setting as HTTP (OKR_CORS_ORIGINS; --demo: localhost ports),
  with both subprotocols, and other origins are refused.
- /readyz names the event listener, answers 503 while it is down and recovers.
- Traces as `okr serve` configures them (OTEL_EXPORTER_OTLP_ENDPOINT, on the ordinary
  install) reach a collector with the GraphQL operation's span under the HTTP span,
  and no span carries a mutation's input, the query text or the token; JSON log lines
  written inside a span carry its trace and span ids.
- GraphiQL works on a network with no way out: its page and every asset it names come
  from the running service, byte for byte the files the page's integrity digests name.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy.engine import make_url

from tests.factories import JWT_SECRET, ROOT, SERVER_LOG, Org, Tree, free_port, start_okr, stop_okr
from tests.sockets import Replica, check_in_on

SUBSCRIPTION = "subscription { progressChanged { checkIn { value } } }"
PROTOCOLS = {
    # subprotocol: (the subscribe message's type, the type an event arrives in)
    "graphql-transport-ws": ("subscribe", "next"),
    "graphql-ws": ("start", "data"),
}


def server_env(database_url: str, tmp_path: Path, **settings: str) -> dict[str, str]:
    return {
        **os.environ,
        "OKR_DATABASE_URL": database_url,
        "OKR_JWT_SECRET": JWT_SECRET,
        "OKR_DATA_DIR": str(tmp_path),
        "OKR_EVENT_POLL_SECONDS": "2",
        **settings,
    }


async def live_update(
    port: int, origin: str, subprotocol: str, org: Org, kr: str, value: float
) -> float:
    """What a browser page on `origin` does: open a socket, subscribe, and wait for the
    check-in made meanwhile. Returns the value it received."""
    subscribe, event = PROTOCOLS[subprotocol]
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/graphql", origin=origin, subprotocols=[subprotocol]
    ) as ws:
        assert ws.subprotocol == subprotocol
        init = {
            "type": "connection_init",
            "payload": {"Authorization": f"Bearer {org.admin_token}"},
        }
        await ws.send(json.dumps(init))
        assert json.loads(await asyncio.wait_for(ws.recv(), 15))["type"] == "connection_ack"
        await ws.send(
            json.dumps({"id": "1", "type": subscribe, "payload": {"query": SUBSCRIPTION}})
        )
        await asyncio.sleep(0.5)
        await check_in_on(Replica(None, port), org.admin_token, kr, value)  # type: ignore[arg-type]
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 15))
            if message["type"] == "ka":
                continue
            assert message["type"] == event, message
            return message["payload"]["data"]["progressChanged"]["checkIn"]["value"]


async def refused(port: int, origin: str, subprotocol: str) -> int:
    with pytest.raises(websockets.InvalidStatus) as caught:
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/graphql", origin=origin, subprotocols=[subprotocol]
        ):
            pass
    return caught.value.response.status_code


@pytest.mark.parametrize(
    ("args", "extra", "allowed", "others"),
    [
        (
            ("--demo",),
            {},
            ["http://localhost:5173", "http://localhost:3000", "http://127.0.0.1:5173"],
            ["https://elsewhere.example", "http://localhost.elsewhere.example:5173"],
        ),
        (
            (),
            {"OKR_CORS_ORIGINS": "https://app.example.com"},
            ["https://app.example.com"],
            ["http://localhost:5173", "https://evil.example.com"],
        ),
    ],
    ids=["demo", "OKR_CORS_ORIGINS"],
)
async def test_a_page_on_an_allowed_origin_receives_live_updates(
    bin_okr, database_url, tmp_path, tree: Tree, org: Org, args, extra, allowed, others
):
    port = free_port()
    env = server_env(database_url, tmp_path, **extra)
    proc = await start_okr(bin_okr, port, env, SERVER_LOG, *args)
    kr = tree.gid("KeyResult", tree.kr_x)
    value = 0
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for origin in allowed:
                # The page may query (CORS) ...
                r = await http.post(
                    "/graphql",
                    headers={"Origin": origin, "Authorization": f"Bearer {org.admin_token}"},
                    json={"query": "{ viewer { name } }"},
                )
                assert r.headers["access-control-allow-origin"] == origin
                # ... and, the same origin, subscribe: with either subprotocol.
                for subprotocol in PROTOCOLS:
                    value += 1
                    got = await live_update(port, origin, subprotocol, org, kr, value)
                    assert got == value
            for origin in others:
                r = await http.post(
                    "/graphql", headers={"Origin": origin}, json={"query": "{ __typename }"}
                )
                assert "access-control-allow-origin" not in r.headers
                for subprotocol in PROTOCOLS:
                    assert await refused(port, origin, subprotocol) == 403
    finally:
        await stop_okr(proc)


async def _ready(http: httpx.AsyncClient, port: int) -> httpx.Response:
    return await http.get(f"http://127.0.0.1:{port}/readyz")


async def test_readyz_is_unavailable_while_the_event_listener_is_down(
    bin_okr, database_url, tmp_path, pg
):
    port = free_port()
    env = server_env(database_url, tmp_path, OKR_LISTENER_HEALTH_SECONDS="0.5")
    proc = await start_okr(bin_okr, port, env, SERVER_LOG)
    name = make_url(database_url).database
    admin = await pg.admin()  # on another database: ours is the one being closed
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            ready = await _ready(http, port)
            assert ready.status_code == 200
            assert ready.json()["listener"] == "ok"
            # The listener is cut off, and cannot come back while the database takes no
            # new connections (the replica's pooled ones still answer).
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'okr-listener' AND datname = $1",
                    name,
                )
                assert killed == 1
                down: dict[str, Any] = {}
                for _ in range(100):
                    r = await _ready(http, port)
                    if r.status_code == 503:
                        down = r.json()
                        break
                    await asyncio.sleep(0.1)
                assert down.get("listener") == "down", down
                assert down["status"] == "unavailable"
                assert "Retry-After" in r.headers
            finally:
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            back: dict[str, Any] = {}
            for _ in range(200):
                r = await _ready(http, port)
                if r.status_code == 200:
                    back = r.json()
                    break
                await asyncio.sleep(0.1)
            assert back.get("listener") == "ok", back
    finally:
        await admin.close()
        await stop_okr(proc)


class Collector:
    """An OTLP/HTTP trace receiver on this machine: every span it was sent, as
    (name, trace id, span id, parent span id, {attribute: value as text})."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        spans = self.spans = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            attributes = {a.key: str(a.value).strip() for a in span.attributes}
                            spans.append(
                                (
                                    span.name,
                                    span.trace_id.hex(),
                                    span.span_id.hex(),
                                    span.parent_span_id.hex(),
                                    attributes,
                                )
                            )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


SECRETS = {
    "note": "note-7c1e: the forklift is broken",
    "title": "Title-51aa for the board",
    "email": "secret.person.9f2@acme.example",
}


async def test_okr_serve_exports_graphql_spans_without_inputs_or_tokens(
    bin_okr, database_url, tmp_path, tree: Tree, org: Org
):
    collector = Collector()
    port = free_port()
    env = server_env(
        database_url,
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OKR_LOG_FORMAT="json",
    )
    log_file = tmp_path / "serve.err"
    with open(log_file, "wb") as err:  # noqa: ASYNC230
        proc = await start_okr(bin_okr, port, env, SERVER_LOG, "--log-level", "info", err=err)
        try:
            kr = tree.gid("KeyResult", tree.kr_x)
            auth = {"Authorization": f"Bearer {org.admin_token}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                calls = [
                    # Inputs as variables ...
                    {
                        "query": "mutation CheckIn($i: CheckInInput!) { checkIn(input: $i) "
                        "{ userErrors { message } } }",
                        "variables": {
                            "i": {"keyResultId": kr, "value": 5, "note": SECRETS["note"]}
                        },
                    },
                    # ... and as literals in the query text.
                    {
                        "query": 'mutation NewUser { createUser(input: {name: "Sam", '
                        f'email: "{SECRETS["email"]}", role: MEMBER}}) '
                        "{ userErrors { message } } }"
                    },
                    {
                        "query": "mutation Rename($id: ID!) { updateObjective(input: "
                        f'{{objectiveId: $id, title: "{SECRETS["title"]}"}}) '
                        "{ userErrors { message } } }",
                        "variables": {"id": tree.gid("Objective", tree.obj_x)},
                    },
                    {"query": "query Dashboard { viewer { name } }"},
                    {"query": "query Broken { viewer { "},  # logged: a client mistake
                ]
                for call in calls:
                    r = await http.post("/graphql", headers=auth, json=call)
                    assert r.status_code in (200, 400), r.text
            spans: list[Any] = []
            for _ in range(100):
                spans = list(collector.spans)
                if any(name == "GraphQL Query: Dashboard" for name, *_ in spans):
                    break
                await asyncio.sleep(0.1)
        finally:
            await stop_okr(proc)
            collector.close()
    by_id = {span_id: (name, attributes) for name, _t, span_id, _p, attributes in spans}
    operations = [s for s in spans if s[0].startswith("GraphQL Query: ")]
    names = {s[0] for s in operations}
    assert {"GraphQL Query: CheckIn", "GraphQL Query: Dashboard"} <= names, sorted(
        {s[0] for s in spans}
    )
    for _name, _trace, _span, parent, _attributes in operations:
        assert by_id[parent][0] == "POST /graphql"  # below the request's span
    assert any("postgresql" in s[4].get("db.system", "") for s in spans)  # and SQL
    # The check-in's key result id may be there; its note, the title, the email, the
    # token and the query text may not.
    exported = json.dumps([s[4] for s in spans])
    for secret in (*SECRETS.values(), org.admin_token, "CheckInInput", "createUser("):
        assert secret not in exported, secret
    assert "[filtered]" in exported  # the inputs' place is kept, their values are not
    # Log lines written inside a span carry its ids.
    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
    traced = [line for line in lines if "trace_id" in line]
    assert traced, lines[-5:]
    span_ids = {s[2] for s in spans}
    assert any(line["span_id"] in span_ids for line in traced)


def test_tracing_comes_with_the_ordinary_install():
    """README's install (`pip install .` with no extra, or `.[embedded]`) brings what
    `tracing.configure` loads when a platform sets OTEL_EXPORTER_OTLP_ENDPOINT."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    core = {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0] for d in project["project"]["dependencies"]}
    assert {
        "opentelemetry-api",
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
    } <= core
    readme = (ROOT / "README.md").read_text()
    assert 'pip install ".[embedded]"' in readme


def _okr(bin_okr: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [bin_okr, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": str(Path(bin_okr).parent), "OKR_DATA_DIR": str(tmp_path), **env},
        check=False,
    )


def test_bench_seed_help_says_what_scale_means(bin_okr, tmp_path):
    done = _okr(bin_okr, tmp_path, "bench", "seed", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "--scale N" in text
    assert "200 teams" in text and "200,000 check-ins" in text and "N-fold" in text


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"OKR_POOL_SIZE": "lots"}, "OKR_POOL_SIZE takes a whole number"),
        ({"OKR_ENV": "staging"}, "OKR_ENV takes one of development, production"),
        ({"OKR_GRAPHIQL": "maybe"}, "OKR_GRAPHIQL takes true or false"),
        ({"OKR_READINESS_TIMEOUT_SECONDS": "-1"}, "OKR_READINESS_TIMEOUT_SECONDS takes a number"),
        ({"OKR_CORS_ORIGINS": "ftp://x"}, "OKR_CORS_ORIGINS: each origin is http(s)://"),
    ],
)
def test_a_refused_setting_is_named_with_what_it_accepts(bin_okr, tmp_path, env, says):
    done = _okr(bin_okr, tmp_path, "export-schema", **env)
    assert done.returncode == 2
    assert says in done.stderr, done.stderr
    assert "pydantic" not in done.stderr and "http" not in done.stderr.replace("http(s)", "")
    assert "Traceback" not in done.stderr


ASSET = re.compile(r"""<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)"[^>]*>""", re.S)
INTEGRITY = re.compile(r'integrity="(sha384-[^"]+)"')


async def test_graphiql_loads_everything_from_the_service_itself(bin_okr, database_url, tmp_path):
    port = free_port()
    proc = await start_okr(bin_okr, port, server_env(database_url, tmp_path), SERVER_LOG)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            r = await http.get("/graphql", headers={"Accept": "text/html"})
            assert r.status_code == 200 and "text/html" in r.headers["content-type"]
            html = r.text
            assert 'id="graphiql"' in html
            tags = [m.group(0) for m in ASSET.finditer(html)]
            urls = [m.group(1) for m in ASSET.finditer(html)]
            assert len(urls) >= 7, urls  # React, ReactDOM, js-cookie, GraphiQL's, the plugin's
            # Nothing from another host: every address is this service's own or inline.
            for url in re.findall(r"""(?:src|href)=["']([^"']+)""", html):
                assert url.startswith(("/", "data:")), url
            assert not re.search(r"(?:https?:)?//(?!www\.w3\.org/2000/svg)[\w.-]+\.\w", html)
            for tag, url in zip(tags, urls, strict=True):
                if url.startswith("data:"):
                    continue
                asset = await http.get(url)
                assert asset.status_code == 200, url
                digest = base64.b64encode(hashlib.sha384(asset.content).digest()).decode()
                (integrity,) = INTEGRITY.findall(tag)
                assert integrity == f"sha384-{digest}", url  # the very bytes the page names
                if url.endswith(".css"):
                    # Fonts and images inside the style sheets are inline too.
                    for ref in re.findall(r"url\(([^)]*)\)", asset.text):
                        assert ref.strip("'\"").startswith("data:"), ref[:80]
    finally:
        await stop_okr(proc)
