"""The demo's integrations (service/demo.py): a webhook endpoint pointing at nothing
reachable, whose deliveries fail and are retried, and the damage rate pulled from a
local Prometheus; neither writes an event, so the README's sequences hold."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from service import background, demo, events
from service.db import Database
from service.domain.principal import Principal
from service.settings import Settings, get_settings


@pytest.fixture
def demo_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings):
    monkeypatch.setenv("OKR_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    yield settings.model_copy(update={"webhook_retry_base_seconds": 30.0})
    get_settings.cache_clear()


async def test_the_demo_has_a_failing_endpoint_and_a_prometheus_source(
    db: Database, demo_settings: Settings
):
    org_id, _admin = await demo.seed(db)
    async with db.connect() as conn:
        seq = (
            await conn.execute(
                text("SELECT event_seq FROM organization WHERE id = :id"), {"id": org_id}
            )
        ).scalar_one()
        endpoint = (await conn.execute(text("SELECT * FROM webhook_endpoint"))).one()
        source = (
            await conn.execute(
                text("SELECT s.*, m.key FROM metric_source s JOIN metric m ON m.id = s.metric_id")
            )
        ).one()
    assert endpoint.url == demo.DEMO_WEBHOOK_URL and endpoint.last_seq == seq
    assert (source.key, source.kind, source.query) == (
        "damage_rate",
        "PROMETHEUS",
        demo.DEMO_PROMQL,
    )

    # A change after the seed is delivered to nothing: the attempt fails and is retried.
    admin = Principal(organization_id=org_id, role="ADMIN")
    await db.transaction(
        lambda s: events.record(s, admin, org_id, events.team_created(1, "Night shift", None))
    )
    run = background.runner(db, demo_settings)
    for _ in range(3):
        await run.turn()
    async with db.connect() as conn:
        d = (await conn.execute(text("SELECT * FROM webhook_delivery"))).one()
        job = (await conn.execute(text("SELECT * FROM job WHERE kind = 'webhook.deliver'"))).one()
    assert (d.status, d.attempts, d.response_status) == ("RETRYING", 1, None)
    assert "Connect" in d.response_body and d.next_attempt_at is not None
    assert job.status == "PENDING" and job.run_at == d.next_attempt_at
