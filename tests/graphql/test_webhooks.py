"""Webhooks (service/webhooks.py) through the API, delivered by the job runner to a real
HTTP receiver (tests/receiver.py) that verifies every signature with the
`standardwebhooks` package."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from standardwebhooks import Webhook

from schema import ids
from service import background, webhooks
from service.jobs import Runner
from service.settings import Settings
from tests import factories as h
from tests.factories import Org
from tests.receiver import Receiver, Reply, Request

ENDPOINT = "endpoint { id url kinds active disabledReason team { id } }"
DELIVERIES = """query($id: ID!) { node(id: $id) { ... on WebhookEndpoint {
  active disabledReason
  deliveries(first: 100) { totalCount edges { node {
    id status attempts nextAttemptAt lastAttemptAt responseStatus responseBody durationMs
    event { cursor kind } endpoint { id }
  } } }
} } }"""


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """The suite's settings with short retries (the API and the runner share the key)."""
    return settings.model_copy(
        update={"webhook_retry_base_seconds": 0.2, "webhook_disable_after_seconds": 600.0}
    )


def runner(org: Org, settings: Settings) -> Runner:
    return background.runner(org.db, settings)


async def until(run: Runner, done: Callable[[], bool], seconds: float = 20) -> None:
    """Turn the runner until `done()` holds."""
    for _ in range(int(seconds / 0.05)):
        await run.turn()
        if done():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not done in time")


async def endpoint(org: Org, url: str, **extra: Any) -> tuple[str, str]:
    p = await h.ok(org, "createWebhookEndpoint", {"url": url, **extra}, ENDPOINT + " secret")
    assert p["secret"].startswith("whsec_")
    return p["endpoint"]["id"], p["secret"]


def verified(secret: str, r: Request) -> dict[str, Any]:
    headers = {k: r.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    return Webhook(secret).verify(r.body, headers)


async def deliveries(org: Org, endpoint_id: str) -> dict[str, Any]:
    """The delivery log. Attempts are not events: a cached answer lives out its second
    (OKR_RESPONSE_CACHE_SECONDS), so the log is read past it."""
    await asyncio.sleep(1.05)
    return (await org.call(DELIVERIES, {"id": endpoint_id}))["node"]


async def feed(org: Org, kind: str) -> list[dict[str, Any]]:
    q = "{ events(first: 100) { edges { node { cursor sequence kind } } } }"
    edges = (await org.call(q))["events"]["edges"]
    return [e["node"] for e in edges if e["node"]["kind"] == kind]


async def test_events_are_delivered_signed_once_each(org: Org, fast: Settings):
    async with Receiver() as r:
        hook, secret = await endpoint(org, r.url + "/hooks", description="chat")
        cycle = await h.active_cycle(org)
        obj = await h.objective(org, cycle, "Ship faster")
        kr = await h.key_result(org, obj, "Lead time")
        await h.check_in(org, kr, 40)
        run = runner(org, fast)
        await until(run, lambda: len(r.requests) >= 5)
        await asyncio.sleep(0.3)
        await run.turn()
    bodies = [verified(secret, req) for req in r.requests]
    kinds = [b["type"] for b in bodies]
    assert sorted(kinds) == sorted(
        [
            "CYCLE_CREATED",
            "CYCLE_STATUS_CHANGED",
            "OBJECTIVE_CREATED",
            "KEY_RESULT_CREATED",
            "CHECK_IN",
        ]
    )  # once each; the endpoint's own WEBHOOK_ENDPOINT_CREATED is for admins only
    [check_in] = [b for b in bodies if b["type"] == "CHECK_IN"]
    [event] = await feed(org, "CHECK_IN")
    data = check_in["data"]
    assert data["cursor"] == event["cursor"] and data["sequence"] == event["sequence"]
    assert data["subject"] == {"typename": "KeyResult", "id": kr}
    assert data["actorId"] == ids.encode("User", org.admin_id)
    assert set(data) == {
        "cursor",
        "sequence",
        "kind",
        "occurredAt",
        "actorId",
        "subject",
        "before",
        "after",
    }
    [req] = [q for q in r.requests if json.loads(q.body)["type"] == "CHECK_IN"]
    assert req.headers["webhook-id"] == event["cursor"]  # receivers deduplicate on it
    assert req.headers["content-type"] == "application/json"

    log = await deliveries(org, hook)
    assert log["deliveries"]["totalCount"] == 5
    for edge in log["deliveries"]["edges"]:
        d = edge["node"]
        assert (d["status"], d["attempts"], d["responseStatus"]) == ("SUCCEEDED", 1, 200)
        assert d["responseBody"] == "ok" and d["durationMs"] > 0 and d["nextAttemptAt"] is None
        assert d["endpoint"]["id"] == hook and d["event"]["kind"] is not None


async def test_an_endpoint_sees_what_a_service_key_sees_plus_its_team(org: Org, fast: Settings):
    transport = await h.team(org, "Transport")
    other = await h.team(org, "Other")
    cycle = await h.active_cycle(org)
    async with Receiver() as plain, Receiver() as teamed, Receiver() as picky:
        _, plain_secret = await endpoint(org, plain.url)
        _, team_secret = await endpoint(org, teamed.url, teamId=transport)
        await endpoint(org, picky.url, kinds=["CHECK_IN"])
        own = await h.objective(org, cycle, "Trucks", teamId=transport, visibility="TEAM")
        await h.objective(org, cycle, "Elsewhere", teamId=other, visibility="TEAM")
        await h.objective(org, cycle, "Secret", visibility="PRIVATE")
        public = await h.objective(org, cycle, "Public")
        kr = await h.key_result(org, public)
        await h.check_in(org, kr, 10)
        run = runner(org, fast)
        await until(run, lambda: len(plain.requests) >= 3 and len(teamed.requests) >= 4)
        await asyncio.sleep(0.3)
        await run.turn()

    def subjects(r: Receiver, secret: str | None = None) -> list[tuple[str, str]]:
        out = []
        for req in r.requests:
            body = verified(secret, req) if secret else json.loads(req.body)
            out.append((body["type"], body["data"]["subject"]["id"]))
        return sorted(out)  # not ordered: each carries its cursor

    assert subjects(plain, plain_secret) == sorted(
        [("OBJECTIVE_CREATED", public), ("KEY_RESULT_CREATED", kr), ("CHECK_IN", kr)]
    )
    assert subjects(teamed, team_secret) == sorted(
        [
            ("OBJECTIVE_CREATED", own),
            ("OBJECTIVE_CREATED", public),
            ("KEY_RESULT_CREATED", kr),
            ("CHECK_IN", kr),
        ]
    )
    assert subjects(picky) == [("CHECK_IN", kr)]


async def test_failures_are_retried_with_the_same_id_until_one_succeeds(org: Org, fast: Settings):
    answers = iter([Reply(500, b"boom"), Reply(503, b"later")])
    async with Receiver(lambda _r: next(answers, Reply(204, b""))) as r:
        hook, secret = await endpoint(org, r.url, kinds=["TEAM_CREATED"])
        await h.team(org, "Transport")
        run = runner(org, fast)
        await until(run, lambda: len(r.requests) >= 1)
        [d] = [e["node"] for e in (await deliveries(org, hook))["deliveries"]["edges"]]
        assert (d["status"], d["attempts"], d["responseStatus"]) == ("RETRYING", 1, 500)
        assert d["responseBody"] == "boom" and d["nextAttemptAt"] is not None
        await until(run, lambda: len(r.requests) >= 3)
        await run.turn()
    assert len({req.headers["webhook-id"] for req in r.requests}) == 1
    for req in r.requests:
        verified(secret, req)
    [d] = [e["node"] for e in (await deliveries(org, hook))["deliveries"]["edges"]]
    assert (d["status"], d["attempts"], d["responseStatus"]) == ("SUCCEEDED", 3, 204)
    # Filtered by status, and paged from the newest.
    q = """query($id: ID!) { node(id: $id) { ... on WebhookEndpoint {
      failed: deliveries(status: [FAILED]) { totalCount }
      newest: deliveries(last: 1) { edges { node { id } } }
    } } }"""
    node = (await org.call(q, {"id": hook}))["node"]
    assert node["failed"]["totalCount"] == 0 and node["newest"]["edges"][0]["node"]["id"] == d["id"]


async def test_an_endpoint_failing_past_the_window_is_disabled_with_an_event(
    org: Org, fast: Settings
):
    quick = fast.model_copy(update={"webhook_disable_after_seconds": 1.0})
    async with Receiver(lambda _r: Reply(500, b"down")) as r:
        hook, _ = await endpoint(org, r.url, kinds=["TEAM_CREATED"])
        await h.team(org, "Transport")
        run = runner(org, quick)

        async def disabled() -> bool:
            async with org.db.connect() as conn:
                q = text("SELECT active FROM webhook_endpoint")
                return not (await conn.execute(q)).scalar_one()

        for _ in range(200):
            await run.turn()
            if await disabled():
                break
            await asyncio.sleep(0.05)
    log = await deliveries(org, hook)
    assert not log["active"] and "failed for" in log["disabledReason"]
    [d] = [e["node"] for e in log["deliveries"]["edges"]]
    assert d["status"] == "FAILED" and d["attempts"] >= 2
    [event] = await feed(org, "WEBHOOK_DISABLED")
    assert event["kind"] == "WEBHOOK_DISABLED"
    # Back on: it needs nothing more than `active: true`, and gets only what comes next.
    p = await h.ok(org, "updateWebhookEndpoint", {"endpointId": hook, "active": True}, ENDPOINT)
    assert p["endpoint"]["active"] and p["endpoint"]["disabledReason"] is None


async def test_rotation_signs_with_both_secrets_for_a_day(org: Org, fast: Settings):
    async with Receiver() as r:
        hook, old = await endpoint(org, r.url, kinds=["TEAM_CREATED"])
        p = await h.ok(org, "rotateWebhookSecret", {"endpointId": hook}, ENDPOINT + " secret")
        new = p["secret"]
        assert new.startswith("whsec_") and new != old
        await h.team(org, "Transport")
        await until(runner(org, fast), lambda: len(r.requests) >= 1)
    [req] = r.requests
    assert len(req.headers["webhook-signature"].split(" ")) == 2
    assert verified(old, req) == verified(new, req)
    # The secret is never read back: no field holds it, and the row holds it sealed.
    q = "query($id: ID!) { node(id: $id) { ... on WebhookEndpoint { secret } } }"
    body = await org.call(q, {"id": hook}, expect_errors=True)
    assert "errors" in body
    async with org.db.connect() as conn:
        stored = (await conn.execute(text("SELECT secret, old_secret FROM webhook_endpoint"))).one()
    assert new not in stored.secret and old not in stored.old_secret
    assert new.removeprefix("whsec_") not in json.dumps(list(stored))


async def test_ping_once_and_redeliver_with_the_same_id(org: Org, fast: Settings):
    answers = iter([Reply(500, b"no")])
    async with Receiver(lambda _r: next(answers, Reply())) as r:
        hook, secret = await endpoint(org, r.url, kinds=["TEAM_CREATED"])
        failed = await h.ok(
            org, "pingWebhookEndpoint", {"endpointId": hook}, "delivery { id status event { id } }"
        )
        assert failed["delivery"]["status"] == "PENDING" and failed["delivery"]["event"] is None
        run = runner(org, fast)
        await until(run, lambda: len(r.requests) >= 1)
        await asyncio.sleep(0.5)
        await run.turn()
        assert len(r.requests) == 1  # a failed ping is not retried
        assert verified(secret, r.requests[0])["type"] == "ping"
        await h.team(org, "Transport")
        await until(run, lambda: len(r.requests) >= 2)
        first = (await deliveries(org, hook))["deliveries"]["edges"][-1]["node"]
        again = await h.ok(
            org, "redeliverWebhook", {"deliveryId": first["id"]}, "delivery { id status }"
        )
        assert again["delivery"]["id"] != first["id"]
        await until(run, lambda: len(r.requests) >= 3)
    assert r.requests[1].headers["webhook-id"] == r.requests[2].headers["webhook-id"]
    log = [e["node"] for e in (await deliveries(org, hook))["deliveries"]["edges"]]
    assert [(d["status"], d["attempts"]) for d in log] == [
        ("FAILED", 1),
        ("SUCCEEDED", 1),
        ("SUCCEEDED", 1),
    ]


async def test_admins_only_and_bad_input_changes_nothing(org: Org):
    member = await h.user(org, "Mia Member")
    token = org.token(ids.decode_as(member, "User"))
    body = await org.call("{ webhookEndpoints { totalCount } }", token=token, expect_errors=True)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    p = await h.mutate(
        org, "createWebhookEndpoint", {"url": "https://example.com/x"}, ENDPOINT, token=token
    )
    assert p["userErrors"][0]["code"] == "FORBIDDEN"
    for url, reason in [
        ("ftp://example.com/x", "http(s)"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
    ]:
        p = await h.mutate(org, "createWebhookEndpoint", {"url": url}, ENDPOINT)
        assert p["userErrors"][0]["field"] == ["url"] and reason in p["userErrors"][0]["message"]
    hook = (await h.ok(org, "createWebhookEndpoint", {"url": "http://127.0.0.1:9/x"}, ENDPOINT))[
        "endpoint"
    ]["id"]
    node = "query($id: ID!) { node(id: $id) { id } }"
    assert (await org.call(node, {"id": hook}, token=token))["node"] is None
    assert (await org.call(node, {"id": hook}))["node"]["id"] == hook
    p = await h.mutate(
        org, "updateWebhookEndpoint", {"endpointId": hook, "url": "gopher://x"}, ENDPOINT
    )
    assert p["userErrors"][0]["field"] == ["url"]
    listed = await org.call("{ webhookEndpoints { totalCount edges { node { url } } } }")
    assert listed["webhookEndpoints"]["totalCount"] == 1
    assert listed["webhookEndpoints"]["edges"][0]["node"]["url"] == "http://127.0.0.1:9/x"
    # Endpoint changes are events for admins only.
    assert [e["kind"] for e in await feed(org, "WEBHOOK_ENDPOINT_CREATED")]
    q = "{ events(first: 100) { edges { node { kind } } } }"
    seen = (await org.call(q, token=token))["events"]["edges"]
    assert not [e for e in seen if e["node"]["kind"].startswith("WEBHOOK")]


def test_global_ids_and_cursors_match_the_schema():
    assert webhooks.global_id("KeyResult", 42) == ids.encode("KeyResult", 42)
    assert webhooks.cursor_of(1234) == ids.cursor(1234)
