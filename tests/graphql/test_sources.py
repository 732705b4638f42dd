"""Metric sources (service/sources.py) through the API: a real Prometheus (Debian's
package) fed with known series by `promtool tsdb create-blocks-from openmetrics`, and a
real HTTP receiver serving JSON. Recorded values are checked against the series by hand."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from service import background, sources
from service.settings import Settings
from tests import factories as h
from tests.factories import Org
from tests.receiver import Receiver, Reply

STEP = 300  # seconds between samples of the fed series
NOW = datetime.now(UTC)
T0 = math.floor((NOW - timedelta(days=40)).timestamp() / STEP) * STEP
T1 = math.floor((NOW + timedelta(hours=2)).timestamp() / STEP) * STEP


def cost(ts: float) -> float:
    """The fed series: hours since T0, so any value can be checked by hand."""
    return round((ts - T0) / 3600, 4)


def at_instant(t: datetime) -> float:
    """What an instant query at `t` answers: the latest sample at or before it."""
    return cost(math.floor(t.timestamp() / STEP) * STEP)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        pytest.skip("Prometheus is not installed (apt-get install prometheus; .ci/run does)")
    folder = tmp_path_factory.mktemp("prometheus")
    lines = ["# HELP orders_cost Cost per order.", "# TYPE orders_cost gauge"]
    lines += [f"orders_cost {cost(ts)} {ts}" for ts in range(T0, T1 + 1, STEP)]
    lines += ["# HELP two_series Two series.", "# TYPE two_series gauge"]
    for zone in ("a", "b"):
        lines += [f'two_series{{zone="{zone}"}} 1 {ts}' for ts in range(T1 - 86400, T1 + 1, STEP)]
    lines.append("# EOF")
    data = folder / "data.om"
    data.write_text("\n".join(lines) + "\n")
    tsdb = folder / "tsdb"
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(data), str(tsdb)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    config = folder / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1h\n")
    port = h.free_port()
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tsdb}",
            "--storage.tsdb.retention.time=10y",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise AssertionError((folder / "prometheus.log").read_text())
            time.sleep(0.1)
        else:
            raise AssertionError("Prometheus did not come up")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


METRIC = """query($key: String!) { metric(key: $key) {
  source { kind url query intervalSeconds lastRunAt lastValue lastError nextRunAt }
  measurements(first: 100) { edges { node { value measuredAt source } } }
  keyResults { currentValue realism { basis } }
} }"""
SOURCE = "metric { source { kind lastValue lastError lastRunAt } }"


async def metric_with_kr(org: Org, key: str) -> tuple[str, str]:
    today = NOW.date()
    cycle = await h.active_cycle(
        org,
        (today - timedelta(days=20)).isoformat(),
        (today + timedelta(days=40)).isoformat(),
    )
    obj = await h.objective(org, cycle, "Cheaper orders")
    kr = await h.key_result(org, obj, "Cost", start=0, target=100_000)
    metric = (await h.ok(org, "createMetric", {"key": key, "name": key}, "metric { id }"))[
        "metric"
    ]["id"]
    await h.ok(org, "bindKeyResult", {"keyResultId": kr, "metricId": metric}, "keyResult { id }")
    return metric, kr


async def drain(org: Org, settings: Settings) -> None:
    run = background.runner(org.db, settings)
    for _ in range(200):
        await run.turn()
        async with org.db.connect() as conn:
            if not (await conn.execute(text("SELECT count(*) FROM job"))).scalar_one():
                return
        await asyncio.sleep(0.05)
    raise AssertionError("jobs left")


async def read(org: Org, key: str) -> dict[str, Any]:
    await asyncio.sleep(1.05)  # past the response cache: a run that writes nothing is no event
    return (await org.call(METRIC, {"key": key}))["metric"]


async def kinds(org: Org, kind: str) -> int:
    q = "{ events(first: 100) { edges { node { kind } } } }"
    return sum(e["node"]["kind"] == kind for e in (await org.call(q))["events"]["edges"])


@pytest.mark.system
async def test_prometheus_backfill_runs_and_failures(org: Org, settings: Settings, prometheus: str):
    metric, _kr = await metric_with_kr(org, "cost_per_order")
    p = await h.ok(
        org,
        "setMetricSource",
        {
            "metricId": metric,
            "kind": "PROMETHEUS",
            "url": prometheus,
            "query": "orders_cost",
            "intervalSeconds": 3600,
            "backfill": True,
        },
        SOURCE,
    )
    assert p["metric"]["source"]["kind"] == "PROMETHEUS"
    await drain(org, settings)
    got = await read(org, "cost_per_order")

    # By hand: the cycle's start, every 7 days (the cadence) up to the run's instant,
    # then the run's instant itself.
    start = datetime.combine(NOW.date() - timedelta(days=20), datetime.min.time(), UTC)
    instant = sources.instant_of(NOW, 3600)
    expected = []
    t = start
    while t <= instant:
        expected.append((t, at_instant(t)))
        t += timedelta(days=7)
    if expected[-1][0] != instant:
        expected.append((instant, at_instant(instant)))
    measured = sorted(
        (datetime.fromisoformat(e["node"]["measuredAt"]), e["node"]["value"], e["node"]["source"])
        for e in got["measurements"]["edges"]
    )
    assert [(m[0], m[1]) for m in measured] == expected
    assert {m[2] for m in measured} == {"prometheus"}
    [kr] = got["keyResults"]
    assert kr["currentValue"] == expected[-1][1] and kr["realism"]["basis"] == len(expected)
    assert got["source"]["lastValue"] == expected[-1][1] and got["source"]["lastError"] is None
    next_run = datetime.fromisoformat(got["source"]["nextRunAt"])
    assert next_run == instant + timedelta(hours=1)

    # The same instant again writes nothing.
    await sources.run_source(org.db, *_clients(settings), _pk(metric), instant)
    assert len((await read(org, "cost_per_order"))["measurements"]["edges"]) == len(expected)

    # Now, once.
    before = datetime.now(UTC).replace(microsecond=0)
    p = await h.ok(org, "runMetricSource", {"metricId": metric}, SOURCE)
    ran = datetime.fromisoformat(p["metric"]["source"]["lastRunAt"])
    assert before <= ran <= datetime.now(UTC) and ran.microsecond == 0
    assert p["metric"]["source"]["lastValue"] == at_instant(ran)

    # Two samples: a clear lastError, and one METRIC_SOURCE_FAILED however many runs.
    await h.ok(
        org,
        "setMetricSource",
        {
            "metricId": metric,
            "kind": "PROMETHEUS",
            "url": prometheus,
            "query": "two_series",
            "intervalSeconds": 60,
        },
        SOURCE,
    )
    for _ in range(2):
        p = await h.ok(org, "runMetricSource", {"metricId": metric}, SOURCE)
        assert "returned 2 samples; exactly one is needed" in p["metric"]["source"]["lastError"]
    assert await kinds(org, "METRIC_SOURCE_FAILED") == 1


def _pk(gid: str) -> int:
    from schema.ids import decode_as

    return decode_as(gid, "Metric")


def _clients(settings: Settings) -> tuple[Any, Any]:
    from service.outbound import Outbound
    from service.secrets import Box

    return Outbound.from_settings(settings), Box.from_settings(settings)


async def test_http_json_fails_once_recovers_and_keeps_headers_secret(org: Org, settings: Settings):
    answers = iter([Reply(500, b"down"), Reply(500, b"down")])

    def answer(_r: Any) -> Reply:
        return next(answers, Reply(200, json.dumps({"a": {"b": [1, 42.5]}}).encode()))

    metric, _ = await metric_with_kr(org, "pick_rate")
    async with Receiver(answer) as r:
        p = await h.ok(
            org,
            "setMetricSource",
            {
                "metricId": metric,
                "kind": "HTTP_JSON",
                "url": r.url + "/numbers",
                "query": "/a/b/1",
                "intervalSeconds": 60,
                "headers": [{"name": "Authorization", "value": "Bearer s3cr3t-token"}],
            },
            SOURCE,
        )
        for _ in range(2):
            p = await h.ok(org, "runMetricSource", {"metricId": metric}, SOURCE)
            assert p["metric"]["source"]["lastError"] == "HTTP 500: down"
        p = await h.ok(org, "runMetricSource", {"metricId": metric}, SOURCE)
        assert p["metric"]["source"]["lastValue"] == 42.5
        assert p["metric"]["source"]["lastError"] is None
    assert all(req.headers["authorization"] == "Bearer s3cr3t-token" for req in r.requests)
    assert await kinds(org, "METRIC_SOURCE_FAILED") == 1
    assert await kinds(org, "METRIC_SOURCE_RECOVERED") == 1
    got = await read(org, "pick_rate")
    [m] = got["measurements"]["edges"]
    assert m["node"]["value"] == 42.5 and m["node"]["source"] == "http_json"
    assert got["keyResults"][0]["currentValue"] == 42.5
    async with org.db.connect() as conn:
        stored = (await conn.execute(text("SELECT headers FROM metric_source"))).scalar_one()
    assert "s3cr3t" not in stored


async def test_bad_sources_are_refused_and_change_nothing(org: Org):
    metric, _ = await metric_with_kr(org, "uptime")
    base = {
        "metricId": metric,
        "kind": "PROMETHEUS",
        "url": "http://127.0.0.1:9090",
        "query": "up",
        "intervalSeconds": 60,
    }
    for change, field in [
        ({"intervalSeconds": 59}, "intervalSeconds"),
        ({"query": " "}, "query"),
        ({"url": "ftp://x"}, "url"),
        ({"url": "http://169.254.169.254/"}, "url"),
        ({"kind": "HTTP_JSON", "query": "a/b"}, "query"),
        ({"kind": "HTTP_JSON", "query": "/a", "backfill": True}, "backfill"),
    ]:
        p = await h.mutate(org, "setMetricSource", base | change, SOURCE)
        assert p["userErrors"][0]["field"] == [field], (change, p)
    got = (await org.call(METRIC, {"key": "uptime"}))["metric"]
    assert got["source"] is None
    member = await h.user(org, "Vic Viewer", "VIEWER")
    from schema.ids import decode_as

    token = org.token(decode_as(member, "User"))
    p = await h.mutate(org, "setMetricSource", base, SOURCE, token=token)
    assert p["userErrors"][0]["code"] == "FORBIDDEN"
    p = await h.mutate(org, "runMetricSource", {"metricId": metric}, SOURCE)
    assert p["userErrors"][0]["code"] == "CONFLICT"  # no source
    await h.ok(org, "setMetricSource", base, SOURCE)
    p = await h.ok(org, "setMetricSource", {"metricId": metric, "kind": None}, SOURCE)
    assert p["metric"]["source"] is None


def test_json_pointer_follows_rfc_6901():
    doc = {"a/b": {"m~n": [10, 20]}, "": 1}
    assert sources.json_pointer(doc, "/a~1b/m~0n/1") == 20
    assert sources.json_pointer(doc, "") == doc
    with pytest.raises(sources.SourceFailed, match="nothing at"):
        sources.json_pointer(doc, "/missing")
