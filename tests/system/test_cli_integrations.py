"""The operators' commands: `okr webhook list|deliveries|redeliver` and `okr source run`,
run as real processes against the test's database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

from sqlalchemy import text

from service.settings import Settings
from tests import factories as h
from tests.factories import Org, okr_stdout
from tests.receiver import Receiver, Reply


async def _slug(org: Org) -> str:
    async with org.db.connect() as conn:
        q = text("SELECT slug FROM organization WHERE id = :id")
        return (await conn.execute(q, {"id": org.id})).scalar_one()


async def test_webhook_commands_list_show_and_redeliver(
    org: Org, settings: Settings, database_url: str, bin_okr: str
):
    env = {**os.environ, "OKR_DATABASE_URL": database_url, "OKR_DATA_DIR": str(settings.data_dir)}
    slug = await _slug(org)
    hook = (
        await h.ok(
            org,
            "createWebhookEndpoint",
            {"url": "http://127.0.0.1:9/in", "kinds": ["TEAM_CREATED"]},
            "endpoint { id }",
        )
    )["endpoint"]["id"]
    ping = (await h.ok(org, "pingWebhookEndpoint", {"endpointId": hook}, "delivery { id }"))[
        "delivery"
    ]["id"]
    listed = (await okr_stdout(bin_okr, env, "webhook", "list", "--org", slug)).splitlines()
    assert listed[0].split() == ["ID", "ACTIVE", "KINDS", "TEAM", "WAITING", "URL"]
    assert listed[1].split() == [hook, "yes", "TEAM_CREATED", "-", "1", "http://127.0.0.1:9/in"]
    shown = (
        await okr_stdout(bin_okr, env, "webhook", "deliveries", "--org", slug, hook)
    ).splitlines()
    assert shown[1].split()[:3] == [ping, "PENDING", "0"] and shown[1].endswith("ping")
    out = await okr_stdout(bin_okr, env, "webhook", "redeliver", "--org", slug, ping)
    assert out.startswith("queued ") and ping not in out
    async with org.db.connect() as conn:
        n = (await conn.execute(text("SELECT count(*) FROM webhook_delivery"))).scalar_one()
    assert n == 2


async def test_source_run_records_now_and_reports_failures(
    org: Org, settings: Settings, database_url: str, bin_okr: str
):
    env = {**os.environ, "OKR_DATABASE_URL": database_url, "OKR_DATA_DIR": str(settings.data_dir)}
    slug = await _slug(org)
    metric = (
        await h.ok(org, "createMetric", {"key": "on_time", "name": "On time"}, "metric { id }")
    )["metric"]["id"]
    answers = iter([Reply(200, json.dumps({"value": 97.5}).encode())])
    async with Receiver(lambda _r: next(answers, Reply(502, b"bad gateway"))) as r:
        await h.ok(
            org,
            "setMetricSource",
            {
                "metricId": metric,
                "kind": "HTTP_JSON",
                "url": r.url,
                "query": "/value",
                "intervalSeconds": 300,
            },
            "metric { id }",
        )
        out = await okr_stdout(bin_okr, env, "source", "run", "--org", slug, "on_time")
        assert out.startswith("on_time = 97.5 at ")
        proc = await asyncio.create_subprocess_exec(
            bin_okr,
            "source",
            "run",
            "--org",
            slug,
            "on_time",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _, err = await proc.communicate()
    assert proc.returncode == 1 and "HTTP 502: bad gateway" in err.decode()
