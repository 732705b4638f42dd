"""Metrics that feed key results (issue 15, items 1, 2, 3 and 7): createMetric,
bindKeyResult, the metric queries, recordMeasurements in one transaction with one
roll-up and one CHECK_IN event per key result, `okr metric record`, and access and bad
input for every role, driven through the API as a client would."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any

import pytest
from gql import Client
from sqlalchemy import text

from schema.ids import decode_as, encode
from service.db import Database
from service.domain.errors import Rejected
from service.domain.principal import Principal
from service.usecases import metrics, organizations
from service.verify import verify, verify_event_sequences
from tests import factories as h
from tests.factories import (
    NOW,
    TODAY,
    Org,
    at,
    bind,
    counts,
    create_metric,
    cycle_now,
    env_for,
    okr,
    service_token,
)
from tests.sockets import collect, next_event, transport

RECORD = "measurements { value measuredAt source createdAt } checkIns { id value note }"


# --- helpers -----------------------------------------------------------------------------------


async def events_of(db: Database, kind: str) -> list[Any]:
    async with db.connect() as conn:
        return list(
            (
                await conn.execute(
                    text("SELECT * FROM event WHERE kind = :k ORDER BY seq"), {"k": kind}
                )
            ).all()
        )


async def assert_consistent(db: Database) -> None:
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        assert mismatches == []
        assert await verify_event_sequences(conn) == []


async def record(org: Org, items: list[dict[str, Any]], token: str | None = None) -> dict:
    return await h.mutate(org, "recordMeasurements", {"measurements": items}, RECORD, token)


async def kr_state(org: Org, kr: str) -> dict[str, Any]:
    q = """query($id: ID!) { node(id: $id) { ... on KeyResult {
      currentValue progress lastCheckIn { value } checkIns(first: 100) { totalCount }
      objective { progress } metric { key } } } }"""
    return (await org.call(q, {"id": kr}))["node"]


class Tree:
    """Root <- Leaf objectives; one DECREASE key result on each, both bound to a metric."""

    def __init__(self, cycle: str, root: str, leaf: str, kr_root: str, kr_leaf: str, metric: str):
        self.cycle, self.root, self.leaf = cycle, root, leaf
        self.kr_root, self.kr_leaf, self.metric = kr_root, kr_leaf, metric


async def tree(org: Org) -> Tree:
    cycle = await cycle_now(org)
    root = await h.objective(org, cycle, "Cheaper distribution")
    leaf = await h.objective(org, cycle, "Route planning", parentId=root)
    kr_root = await h.key_result(org, root, "Cost per order", "DECREASE", 4.2, 3.6)
    kr_leaf = await h.key_result(org, leaf, "Cost per order (routes)", "DECREASE", 4.2, 3.0)
    metric = await create_metric(org)
    for kr in (kr_root, kr_leaf):
        assert (await bind(org, kr, metric))["userErrors"] == []
    return Tree(cycle, root, leaf, kr_root, kr_leaf, metric)


# --- item 1: metrics, binding, queries --------------------------------------------------------


async def test_item1_an_admin_creates_a_metric_found_by_key_id_search_and_node(org: Org, db):
    metric = await create_metric(
        org, unit="EUR", description="Distribution cost divided by orders shipped"
    )
    q = """query($key: String!, $id: ID!) {
      metric(key: $key) { id key name unit description latest { value } keyResults { id } }
      node(id: $id) { ... on Metric { key } }
      nodes(ids: [$id]) { ... on Metric { name } }
      metrics(first: 10, search: "COST") { totalCount edges { node { key } } }
      none: metrics(search: "on-time") { totalCount }
    }"""
    data = await org.call(q, {"key": "cost_per_order", "id": metric})
    assert data["metric"] == {
        "id": metric,
        "key": "cost_per_order",
        "name": "Cost per order",
        "unit": "EUR",
        "description": "Distribution cost divided by orders shipped",
        "latest": None,
        "keyResults": [],
    }
    assert data["node"] == {"key": "cost_per_order"}
    assert data["nodes"] == [{"name": "Cost per order"}]
    assert data["metrics"] == {"totalCount": 1, "edges": [{"node": {"key": "cost_per_order"}}]}
    assert data["none"] == {"totalCount": 0}
    assert (await org.call('{ metric(key: "nope") { id } }'))["metric"] is None
    [event] = await events_of(db, "METRIC_CREATED")
    assert (event.subject_type, event.subject_id) == ("Metric", decode_as(metric, "Metric"))
    # Metrics are org-wide: a viewer reads the metric and its event.
    viewer = org.token(decode_as(await h.user(org, "Vera Viewer", "VIEWER"), "User"))
    feed = await org.call("{ events(first: 50) { edges { node { kind } } } }", token=viewer)
    assert "METRIC_CREATED" in [e["node"]["kind"] for e in feed["events"]["edges"]]
    seen = await org.call('{ metric(key: "cost_per_order") { key } }', token=viewer)
    assert seen["metric"] == {"key": "cost_per_order"}


@pytest.mark.parametrize(
    "key",
    ["", "Cost", "1cost", "cost per order", "cost/order", "x" * 101, "coût", "cost\u200b", " cost"],
)
async def test_item1_a_badly_formed_metric_key_is_invalid_and_writes_nothing(
    org: Org, db, key: str
):
    before = await counts(db)
    p = await h.mutate(org, "createMetric", {"key": key, "name": "N"}, "metric { id }")
    assert p["metric"] is None
    assert [(e["code"], e["field"]) for e in p["userErrors"]] == [("INVALID", ["key"])]
    assert await counts(db) == before


async def test_item1_a_duplicate_key_is_a_conflict_and_keys_are_per_organization(
    org: Org, db, client
):
    await create_metric(org, "on_time_dispatch", name="On-time dispatch")
    before = await counts(db)
    p = await h.mutate(
        org, "createMetric", {"key": "on_time_dispatch", "name": "Again"}, "metric { id }"
    )
    assert [(e["code"], e["field"]) for e in p["userErrors"]] == [("CONFLICT", ["key"])]
    assert await counts(db) == before
    created, admin = await db.transaction(
        lambda s: organizations.create_organization(s, "Other Co", "boss@other.example")
    )
    other = Org(client, db, created.id, admin.id)
    mine = await create_metric(other, "on_time_dispatch", name="Theirs")
    # Neither organization sees the other's metric, by key or by id.
    assert (await org.call('{ metric(key: "on_time_dispatch") { name } }'))["metric"] == {
        "name": "On-time dispatch"
    }
    node = await org.call("query($id: ID!) { node(id: $id) { id } }", {"id": mine})
    assert node["node"] is None


@pytest.mark.parametrize("role", ["MEMBER", "VIEWER", "SERVICE"])
async def test_item1_only_an_admin_creates_metrics(org: Org, db, role: str):
    if role == "SERVICE":
        token = await service_token(org)
    else:
        token = org.token(decode_as(await h.user(org, f"{role.title()} One", role), "User"))
    before = await counts(db)
    p = await h.mutate(
        org, "createMetric", {"key": "picks_per_hour", "name": "Picks"}, "metric { id }", token
    )
    assert [e["code"] for e in p["userErrors"]] == ["FORBIDDEN"]
    assert await counts(db) == before


async def test_item1_whoever_may_edit_the_key_result_may_bind_it(org: Org, db):
    cycle = await cycle_now(org)
    team = await h.team(org, "Dispatch")
    member = await h.user(org, "Mo Member")
    await h.ok(org, "addTeamMember", {"teamId": team, "userId": member}, "team { id }")
    member_token = org.token(decode_as(member, "User"))
    outsider_token = org.token(decode_as(await h.user(org, "Otto Outsider"), "User"))
    viewer_token = org.token(decode_as(await h.user(org, "Vi Viewer", "VIEWER"), "User"))
    service = await service_token(org)
    team_objective = await h.objective(org, cycle, "On time", teamId=team, visibility="TEAM")
    kr = await h.key_result(org, team_objective, "On-time dispatch", "INCREASE", 90, 98)
    metric = await create_metric(org, "on_time_dispatch", name="On-time dispatch")

    before = await counts(db)
    # An outsider cannot see the TEAM objective: NOT_FOUND, not a hint that it exists.
    assert [e["code"] for e in (await bind(org, kr, metric, outsider_token))["userErrors"]] == [
        "NOT_FOUND"
    ]
    for token in (viewer_token, service):
        # A viewer and a service see nothing of a TEAM objective either; a PUBLIC one
        # they may see, but not edit.
        assert (await bind(org, kr, metric, token))["userErrors"][0]["code"] in (
            "NOT_FOUND",
            "FORBIDDEN",
        )
    assert await counts(db) == before

    p = await bind(org, kr, metric, member_token)
    assert p["userErrors"] == []
    assert p["keyResult"] == {"id": kr, "metric": {"key": "on_time_dispatch"}}
    again = await bind(org, kr, metric, member_token)  # the same binding writes nothing
    assert again["userErrors"] == [] and (await counts(db))["event"] == before["event"] + 1
    [event] = await events_of(db, "KEY_RESULT_BOUND")
    assert event.payload["after"] == {"metric_id": decode_as(metric, "Metric")}

    # The metric lists the key result to those who may see it, and to nobody else.
    q = '{ metric(key: "on_time_dispatch") { keyResults { id } } }'
    assert (await org.call(q, token=member_token))["metric"]["keyResults"] == [{"id": kr}]
    assert (await org.call(q))["metric"]["keyResults"] == [{"id": kr}]
    assert (await org.call(q, token=outsider_token))["metric"]["keyResults"] == []
    assert (await org.call(q, token=service))["metric"]["keyResults"] == []

    public_kr = await h.key_result(org, await h.objective(org, cycle, "Public"), "KR")
    for token in (viewer_token, service):
        p = await bind(org, public_kr, metric, token)
        assert [e["code"] for e in p["userErrors"]] == ["FORBIDDEN"]

    unbound = await bind(org, kr, None, member_token)
    assert unbound["userErrors"] == [] and unbound["keyResult"]["metric"] is None
    missing = await bind(org, kr, encode("Metric", 999_999))
    assert [(e["code"], e["field"]) for e in missing["userErrors"]] == [("NOT_FOUND", ["metricId"])]
    wrong = await bind(org, kr, kr)
    assert [(e["code"], e["field"]) for e in wrong["userErrors"]] == [("INVALID", ["metricId"])]


async def test_item1_measurements_come_newest_first_in_pages_within_a_window(org: Org):
    await create_metric(org, "picks_per_hour", name="Picks per hour")
    # Sent out of order: the connection orders by measuredAt, not by arrival.
    values = {10: 110.0, 2: 102.0, 7: 107.0, 5: 105.0, 1: 101.0, 3: 103.0}
    p = await record(
        org,
        [
            {"metricKey": "picks_per_hour", "value": v, "measuredAt": at(d)}
            for d, v in values.items()
        ],
    )
    assert p["userErrors"] == []
    q = """query($after: String, $from: DateTime, $to: DateTime) {
      metric(key: "picks_per_hour") { latest { value }
        measurements(first: 2, after: $after, from: $from, to: $to) {
          totalCount pageInfo { hasNextPage endCursor } edges { node { value } } } } }"""
    seen, after = [], None
    while True:
        m = (await org.call(q, {"after": after}))["metric"]
        assert m["latest"] == {"value": 101.0}
        assert m["measurements"]["totalCount"] == 6
        seen += [e["node"]["value"] for e in m["measurements"]["edges"]]
        if not m["measurements"]["pageInfo"]["hasNextPage"]:
            break
        after = m["measurements"]["pageInfo"]["endCursor"]
    assert seen == [101.0, 102.0, 103.0, 105.0, 107.0, 110.0]
    window = (await org.call(q, {"from": at(7.5), "to": at(2.5)}))["metric"]["measurements"]
    assert window["totalCount"] == 3
    assert [e["node"]["value"] for e in window["edges"]] == [103.0, 105.0]
    bad = await org.call(q, {"after": "nonsense"}, expect_errors=True)
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    too_many = await org.call(
        '{ metric(key: "picks_per_hour") { measurements(first: 101) { totalCount } } }',
        expect_errors=True,
    )
    assert "first must be between 0 and 100" in too_many["errors"][0]["message"]


# --- item 2: recordMeasurements ---------------------------------------------------------------


async def test_item2_a_batch_checks_in_on_every_bound_key_result_and_rolls_up_once(org: Org, db):
    t = await tree(org)
    before = await counts(db)
    p = await record(
        org,
        [
            {"metricKey": "cost_per_order", "value": 4.0, "measuredAt": at(14), "source": "wk46"},
            {"metricKey": "cost_per_order", "value": 3.6, "measuredAt": at(1), "source": "wk48"},
            {"metricKey": "cost_per_order", "value": 3.8, "measuredAt": at(7), "source": "wk47"},
        ],
    )
    assert p["userErrors"] == []
    assert [m["value"] for m in p["measurements"]] == [4.0, 3.6, 3.8]
    assert [m["source"] for m in p["measurements"]] == ["wk46", "wk48", "wk47"]
    assert len(p["checkIns"]) == 6  # three values on two key results
    assert {c["note"] for c in p["checkIns"]} == {"wk46", "wk47", "wk48"}
    after = await counts(db)
    assert after["measurement"] == before["measurement"] + 3
    assert after["check_in"] == before["check_in"] + 6
    # One MEASUREMENTS_RECORDED for the metric, one CHECK_IN per key result: 3 events.
    assert after["event"] == before["event"] + 3
    check_in_events = await events_of(db, "CHECK_IN")
    assert sorted(e.subject_id for e in check_in_events) == sorted(
        decode_as(k, "KeyResult") for k in (t.kr_root, t.kr_leaf)
    )

    # The current value is the one measured last (3.6, a day ago), not the last sent.
    root, leaf = await kr_state(org, t.kr_root), await kr_state(org, t.kr_leaf)
    assert root["currentValue"] == 3.6 and math.isclose(root["progress"], 1.0)
    assert leaf["currentValue"] == 3.6 and math.isclose(leaf["progress"], 0.5)
    assert root["lastCheckIn"] == {"value": 3.6}
    assert root["checkIns"]["totalCount"] == 3
    assert math.isclose(leaf["objective"]["progress"], 0.5)
    assert math.isclose(root["objective"]["progress"], 0.75)  # its KR 1.0, the leaf 0.5

    # Each event: the key result's last check-in, progress before and after the batch,
    # and its own chain only (subscriptions read these fields).
    leaf_event = next(
        e for e in check_in_events if e.subject_id == decode_as(t.kr_leaf, "KeyResult")
    )
    changes = leaf_event.payload["changes"]
    assert [(c["type"], c["id"]) for c in changes] == [
        ("KeyResult", decode_as(t.kr_leaf, "KeyResult")),
        ("Objective", decode_as(t.leaf, "Objective")),
        ("Objective", decode_as(t.root, "Objective")),
    ]
    assert changes[0]["previous"] == 0 and math.isclose(changes[0]["progress"], 0.5)
    assert leaf_event.payload["objective_ids"] == [
        decode_as(t.leaf, "Objective"),
        decode_as(t.root, "Objective"),
    ]
    root_event = next(
        e for e in check_in_events if e.subject_id == decode_as(t.kr_root, "KeyResult")
    )
    assert [c["id"] for c in root_event.payload["changes"][1:]] == [decode_as(t.root, "Objective")]
    q = """{ events(first: 20) { edges { node { kind checkIn { value measuredAt }
      changes { previousProgress progress node { id } } } } } }"""
    feed = [
        e["node"] for e in (await org.call(q))["events"]["edges"] if e["node"]["kind"] == "CHECK_IN"
    ]
    assert {f["checkIn"]["value"] for f in feed} == {3.6}  # the batch's last check-in
    await assert_consistent(db)


async def test_item2_a_subscriber_gets_one_progress_event_per_key_result_per_batch(
    replicas, org: Org, db
):
    """progressChanged reads a batch's events as it reads a check-in's, over a real
    WebSocket: one per key result, with its last check-in and its own chain."""
    t = await tree(org)
    server = await replicas()
    edges = (await org.call("{ events(first: 100) { edges { cursor } } }"))["events"]["edges"]
    p = await record(
        org,
        [
            {"metricKey": "cost_per_order", "value": v, "measuredAt": at(d)}
            for d, v in ((9, 4.0), (2, 3.9), (5, 3.95))
        ],
    )
    assert p["userErrors"] == []
    events: asyncio.Queue = asyncio.Queue()
    async with Client(transport=transport(server, org.admin_token)) as session:
        task = asyncio.create_task(collect(session, {"after": edges[-1]["cursor"]}, 2, events))
        got = [await next_event(events) for _ in range(2)]
        await asyncio.sleep(0.5)
        assert events.empty()  # three values, two key results: two events, not six
        task.cancel()
    assert [g["checkIn"]["value"] for g in got] == [3.9, 3.9]  # each one's last check-in
    assert [[c["node"]["id"] for c in g["changes"]] for g in got] == [
        [t.kr_root, t.root],
        [t.kr_leaf, t.leaf, t.root],
    ]
    first = got[1]["changes"][0]
    assert first["previousProgress"] == 0 and first["progress"] == pytest.approx(0.25)


async def test_item2_a_measurement_outside_every_running_cycle_is_record_only(org: Org, db):
    t = await tree(org)
    planned = await h.active_cycle(
        org, str(TODAY - timedelta(days=5)), str(TODAY + timedelta(days=5)), status="PLANNING"
    )
    planned_kr = await h.key_result(
        org, await h.objective(org, planned, "Planned"), "Planned KR", "DECREASE", 4.2, 3.6
    )
    assert (await bind(org, planned_kr, t.metric))["userErrors"] == []
    before = await counts(db)
    p = await record(
        org,
        [
            {"metricKey": "cost_per_order", "value": 4.4, "measuredAt": "2025-02-01T00:00:00Z"},
            {"metricKey": "cost_per_order", "value": 4.3, "measuredAt": at(45)},  # before start
        ],
    )
    assert p["userErrors"] == [] and p["checkIns"] == []
    after = await counts(db)
    assert after["measurement"] == before["measurement"] + 2
    assert after["check_in"] == before["check_in"]
    assert after["event"] == before["event"] + 1  # MEASUREMENTS_RECORDED only
    assert (await kr_state(org, t.kr_root))["checkIns"]["totalCount"] == 0
    # A PLANNING cycle's key result takes nothing, even for an instant inside it.
    p = await record(org, [{"metricKey": "cost_per_order", "value": 4.1, "measuredAt": at(1)}])
    assert sorted(c["id"] for c in p["checkIns"]) != [] and len(p["checkIns"]) == 2
    assert (await kr_state(org, planned_kr))["checkIns"]["totalCount"] == 0
    await assert_consistent(db)


async def test_item2_a_backfill_older_than_the_last_check_in_keeps_the_current_value(org: Org, db):
    t = await tree(org)
    await h.check_in(org, t.kr_root, 3.9)  # a manual check-in, now
    p = await record(
        org,
        [
            {"metricKey": "cost_per_order", "value": 3.6 + i / 100, "measuredAt": at(20 - i)}
            for i in range(10)
        ],
    )
    assert p["userErrors"] == [] and len(p["checkIns"]) == 20
    root = await kr_state(org, t.kr_root)
    assert root["currentValue"] == 3.9 and root["lastCheckIn"] == {"value": 3.9}
    assert root["checkIns"]["totalCount"] == 11
    leaf = await kr_state(org, t.kr_leaf)
    assert math.isclose(leaf["currentValue"], 3.69)  # measured last: 11 days ago
    # A bound key result still takes manual check-ins.
    await h.check_in(org, t.kr_leaf, 3.5)
    assert (await kr_state(org, t.kr_leaf))["currentValue"] == 3.5
    await assert_consistent(db)


async def test_item2_idempotency_per_metric_and_caller_with_the_check_in_rule(org: Org, db):
    await tree(org)
    service = await service_token(org)
    item = {
        "metricKey": "cost_per_order",
        "value": 3.9,
        "measuredAt": at(3),
        "idempotencyKey": "w47",
    }
    first = await record(org, [item], service)
    assert first["userErrors"] == [] and len(first["checkIns"]) == 2
    before = await counts(db)
    again = await record(org, [item], service)
    assert again["userErrors"] == []
    assert again["measurements"] == first["measurements"]  # the first one, createdAt and all
    assert again["checkIns"] == []
    assert await counts(db) == before  # nothing written, no event

    changed = await record(org, [{**item, "value": 3.8}], service)
    assert [(e["code"], e["field"]) for e in changed["userErrors"]] == [
        ("CONFLICT", ["measurements", "0", "idempotencyKey"])
    ]
    moved = await record(org, [{**item, "measuredAt": at(4)}], service)
    assert moved["userErrors"][0]["code"] == "CONFLICT"
    assert await counts(db) == before
    # Another caller's key is its own; so is another metric's.
    mine = await record(org, [item])
    assert mine["userErrors"] == [] and len(mine["checkIns"]) == 2
    await create_metric(org, "on_time_dispatch", name="On time")
    other = await record(org, [{**item, "metricKey": "on_time_dispatch", "value": 97}], service)
    assert other["userErrors"] == []
    # A retried batch with one new item: the retried one returns the first, the new is new.
    mixed = await record(
        org,
        [item, {**item, "idempotencyKey": "w48", "value": 3.7, "measuredAt": at(1)}],
        service,
    )
    assert mixed["userErrors"] == []
    assert mixed["measurements"][0] == first["measurements"][0]
    assert [c["value"] for c in mixed["checkIns"]] == [3.7, 3.7]
    await assert_consistent(db)


async def test_item2_the_payload_lists_only_check_ins_the_caller_may_see(org: Org, db):
    cycle = await cycle_now(org)
    team = await h.team(org, "Finance")
    public_kr = await h.key_result(
        org, await h.objective(org, cycle, "Public"), "Cost", "DECREASE", 4.2, 3.6
    )
    team_kr = await h.key_result(
        org,
        await h.objective(org, cycle, "Team only", teamId=team, visibility="TEAM"),
        "Cost",
        "DECREASE",
        4.2,
        3.6,
    )
    metric = await create_metric(org)
    for kr in (public_kr, team_kr):
        assert (await bind(org, kr, metric))["userErrors"] == []
    service = await service_token(org)
    p = await h.mutate(
        org,
        "recordMeasurements",
        {"measurements": [{"metricKey": "cost_per_order", "value": 3.9, "measuredAt": at(1)}]},
        "checkIns { value keyResult { id } }",
        service,
    )
    assert p["userErrors"] == []
    assert p["checkIns"] == [{"value": 3.9, "keyResult": {"id": public_kr}}]
    # Both were written: the binding was made by someone who may edit the hidden one.
    assert (await kr_state(org, team_kr))["currentValue"] == 3.9
    assert len(await events_of(db, "CHECK_IN")) == 2
    await assert_consistent(db)


async def test_item2_a_batch_of_1000_over_10_bound_key_results(org: Org, db):
    cycle = await cycle_now(org)
    root = await h.objective(org, cycle, "Root")
    await create_metric(org, "picks_per_hour", name="Picks per hour")
    metric = (await org.call('{ metric(key: "picks_per_hour") { id } }'))["metric"]["id"]
    krs = []
    for i in range(10):
        leaf = await h.objective(org, cycle, f"Site {i}", parentId=root)
        kr = await h.key_result(org, leaf, "Picks", "INCREASE", 0, 2000)
        assert (await bind(org, kr, metric))["userErrors"] == []
        krs.append(kr)
    before = await counts(db)
    items = [
        {
            "metricKey": "picks_per_hour",
            "value": float(i),
            "measuredAt": (NOW - timedelta(minutes=1000 - i)).isoformat(),
            "idempotencyKey": f"k{i}",
        }
        for i in range(1000)
    ]
    p = await h.mutate(
        org, "recordMeasurements", {"measurements": items}, "checkIns { id } measurements { value }"
    )
    assert p["userErrors"] == []
    assert len(p["measurements"]) == 1000 and len(p["checkIns"]) == 10_000
    after = await counts(db)
    assert after["measurement"] - before["measurement"] == 1000
    assert after["check_in"] - before["check_in"] == 10_000
    assert after["event"] - before["event"] == 11  # 10 CHECK_IN and one MEASUREMENTS_RECORDED
    for kr in krs:
        state = await kr_state(org, kr)
        assert state["currentValue"] == 999.0 and math.isclose(state["progress"], 999 / 2000)
    assert math.isclose(await h.progress(org, root), 999 / 2000)
    await assert_consistent(db)


# --- item 3: the command ------------------------------------------------------------------------


async def test_item3_okr_metric_record_posts_one_measurement(
    bin_okr, database_url, tmp_path, org: Org, db
):
    t = await tree(org)
    env = env_for(database_url, tmp_path)
    code, out, err = await okr(
        bin_okr,
        env,
        "metric",
        "record",
        "--org",
        "acme-logistics",
        "cost_per_order",
        "3.9",
        "--at",
        at(2),
        "--source",
        "nightly job",
        "--idempotency-key",
        "n1",
    )
    assert code == 0, err
    assert out.startswith("recorded cost_per_order = 3.9 at ") and "2 check-in(s)" in out
    assert (await kr_state(org, t.kr_root))["currentValue"] == 3.9
    before = await counts(db)
    code, out, err = await okr(
        bin_okr,
        env,
        "metric",
        "record",
        "--org",
        "acme-logistics",
        "cost_per_order",
        "3.9",
        "--at",
        at(2),
        "--idempotency-key",
        "n1",
    )
    assert code == 0 and await counts(db) == before  # a cron retry writes nothing
    [event] = [e for e in await events_of(db, "CHECK_IN")][:1]
    assert event.actor_user_id is None and event.actor_api_key_id is None  # the org itself

    for args, says in (
        (["--org", "nope", "cost_per_order", "1"], "organization 'nope' not found"),
        (["--org", "acme-logistics", "nope", "1"], "metric 'nope' not found"),
        (["--org", "acme-logistics", "cost_per_order", "cheap"], "must be a number"),
        (["--org", "acme-logistics", "cost_per_order", "nan"], "finite"),
        (["--org", "acme-logistics", "cost_per_order", "1e16"], "between"),
        (["--org", "acme-logistics", "cost_per_order", "1", "--at", "tomorrow"], "ISO"),
        (
            [
                "--org",
                "acme-logistics",
                "cost_per_order",
                "1",
                "--at",
                (NOW + timedelta(days=1)).isoformat(),
            ],
            "future",
        ),
    ):
        code, _out, err = await okr(bin_okr, env, "metric", "record", *args)
        assert code == 2, (args, err)
        assert says in err, err
    assert await counts(db) == before
    await assert_consistent(db)


# --- item 7: access and bad input ---------------------------------------------------------------


@pytest.mark.parametrize("role", ["ADMIN", "MEMBER", "VIEWER", "SERVICE"])
async def test_item7_admin_and_service_record_members_and_viewers_may_not(org: Org, db, role: str):
    t = await tree(org)
    if role == "SERVICE":
        token = await service_token(org)
    elif role == "ADMIN":
        token = org.admin_token
    else:
        token = org.token(decode_as(await h.user(org, f"{role.title()} Two", role), "User"))
    before = await counts(db)
    # An unknown key too: authorization comes first, whatever else the batch holds.
    p = await record(
        org,
        [
            {"metricKey": "cost_per_order", "value": 3.9, "measuredAt": at(1)},
            {"metricKey": "no_such_metric", "value": 1},
        ],
        token,
    )
    if role in ("MEMBER", "VIEWER"):
        assert [(e["code"], e["field"]) for e in p["userErrors"]] == [
            ("FORBIDDEN", ["measurements"])
        ]
    else:
        assert [(e["code"], e["field"]) for e in p["userErrors"]] == [
            ("NOT_FOUND", ["measurements", "1", "metricKey"])
        ]
    assert await counts(db) == before
    p = await record(org, [{"metricKey": "cost_per_order", "value": 3.9}], token)
    if role in ("MEMBER", "VIEWER"):
        assert p["userErrors"][0]["code"] == "FORBIDDEN" and await counts(db) == before
    else:
        assert p["userErrors"] == [] and len(p["checkIns"]) == 2
        assert (await kr_state(org, t.kr_leaf))["currentValue"] == 3.9
        await assert_consistent(db)


BAD_BATCHES = [
    # (items, [(code, field)] expected)
    (
        [{"metricKey": "cost_per_order", "value": 3.9}, {"metricKey": "nope", "value": 1}],
        [("NOT_FOUND", ["measurements", "1", "metricKey"])],
    ),
    (
        [{"metricKey": "cost_per_order", "value": 1e16}],
        [("INVALID", ["measurements", "0", "value"])],
    ),
    (
        [
            {"metricKey": "cost_per_order", "value": 3.9},
            {"metricKey": "cost_per_order", "value": 4, "measuredAt": "2999-01-01T00:00:00Z"},
        ],
        [("INVALID", ["measurements", "1", "measuredAt"])],
    ),
    (
        [
            {"metricKey": "cost_per_order", "value": 3.9, "idempotencyKey": "a"},
            {"metricKey": "cost_per_order", "value": 3.8, "idempotencyKey": "b"},
            {"metricKey": "cost_per_order", "value": 3.7, "idempotencyKey": "a"},
        ],
        [("INVALID", ["measurements", "2", "idempotencyKey"])],
    ),
    (
        [{"metricKey": "cost_per_order", "value": 3.9, "source": "x" * 201}],
        [("INVALID", ["measurements", "0", "source"])],
    ),
    (
        [
            {"metricKey": "Cost Per Order", "value": 3.9},
            {"metricKey": "cost_per_order", "value": -2e15},
        ],
        [
            ("INVALID", ["measurements", "0", "metricKey"]),
            ("INVALID", ["measurements", "1", "value"]),
        ],
    ),
    ([], [("INVALID", ["measurements"])]),
    (
        [{"metricKey": "cost_per_order", "value": 3.9}] * 1001,
        [("INVALID", ["measurements"])],
    ),
]


@pytest.mark.parametrize(("items", "expected"), BAD_BATCHES)
async def test_item7_a_bad_batch_names_each_index_and_writes_nothing(
    org: Org, db, items: list, expected: list
):
    await tree(org)
    before = await counts(db)
    p = await record(org, items)
    assert [(e["code"], e["field"]) for e in p["userErrors"]] == expected
    assert all(e["message"] for e in p["userErrors"])
    assert p["measurements"] == [] and p["checkIns"] == []
    assert await counts(db) == before
    await assert_consistent(db)


async def test_item7_a_non_finite_value_is_refused_before_anything_runs(org: Org, db, client):
    """JSON and GraphQL's Float carry no NaN or Infinity: the request is refused whole."""
    import json

    await tree(org)
    before = await counts(db)
    query = (
        "mutation($input: RecordMeasurementsInput!) { recordMeasurements(input: $input) "
        f"{{ {RECORD} userErrors {{ code }} }} }}"
    )
    for value in (float("nan"), float("inf"), -float("inf")):
        content = json.dumps(
            {
                "query": query,
                "variables": {
                    "input": {"measurements": [{"metricKey": "cost_per_order", "value": value}]}
                },
            }
        )
        r = await client.post(
            "/graphql",
            content=content,
            headers={
                "Authorization": f"Bearer {org.admin_token}",
                "Content-Type": "application/json",
            },
        )
        body = r.json()
        assert body.get("errors") and "Internal server error" not in json.dumps(body)
    assert await counts(db) == before


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_item7_a_non_finite_value_is_refused_by_the_use_case_at_its_index(
    org: Org, db, value: float
):
    """The same rule where no JSON stands in between (the command line's path)."""
    await tree(org)
    before = await counts(db)
    p = Principal(organization_id=org.id, role="SERVICE")
    batch = [
        metrics.MeasurementInput("cost_per_order", 3.9),
        metrics.MeasurementInput("cost_per_order", value),
    ]
    with pytest.raises(Rejected) as refused:
        await db.transaction(lambda s: metrics.record_measurements(s, p, batch))
    assert refused.value.field == ["measurements", "1", "value"]
    assert "finite" in refused.value.message
    assert await counts(db) == before


async def test_item7_a_milestone_takes_the_values_it_can_and_never_blocks_the_feed(org: Org, db):
    """A bound MILESTONE takes 0 and 1; any other value stays record for it. Found from
    outside: refusing the batch let any member who binds a milestone (even on a PRIVATE
    objective of theirs) stop a metric's feed for everyone, and the error named the
    hidden key result to the poster."""
    cycle = await cycle_now(org)
    kr = await h.key_result(
        org, await h.objective(org, cycle, "Go live"), "Live", "MILESTONE", None, None
    )
    cost = await h.key_result(
        org, await h.objective(org, cycle, "Cheaper"), "Cost", "DECREASE", 4.2, 3.6
    )
    metric = await create_metric(org, "site_live", name="Site live")
    assert (await bind(org, kr, metric))["userErrors"] == []
    assert (await bind(org, cost, metric))["userErrors"] == []
    p = await record(
        org,
        [
            {"metricKey": "site_live", "value": 0, "measuredAt": at(2)},
            {"metricKey": "site_live", "value": 3.9},
        ],
        token=await service_token(org),
    )
    assert p["userErrors"] == [] and len(p["measurements"]) == 2
    assert "Live" not in str(p["userErrors"])
    assert (await kr_state(org, kr))["progress"] == 0.0  # took the 0, kept 3.9 as record
    assert (await kr_state(org, cost))["progress"] == pytest.approx(0.5)
    p = await record(org, [{"metricKey": "site_live", "value": 1}])
    assert p["userErrors"] == [] and (await kr_state(org, kr))["progress"] == 1.0
    await assert_consistent(db)


async def test_item7_a_closed_cycles_key_result_cannot_be_bound(org: Org, db):
    cycle = await h.active_cycle(org, "2025-01-01", "2025-03-31", status="REVIEW")
    kr = await h.key_result(org, await h.objective(org, cycle, "Old"), "Old KR")
    await h.ok(org, "setCycleStatus", {"cycleId": cycle, "status": "CLOSED"}, "cycle { id }")
    metric = await create_metric(org)
    before = await counts(db)
    p = await bind(org, kr, metric)
    assert [e["code"] for e in p["userErrors"]] == ["CYCLE_CLOSED"]
    assert await counts(db) == before


async def test_item2_concurrent_batches_check_ins_and_bindings_lose_nothing(org: Org, db):
    """Retries of one batch racing each other write it once; batches, manual check-ins and
    re-bindings on the same chain at once leave `okr verify` clean and the sequence
    gapless (locks in one order: metric, key results, chain)."""
    t = await tree(org)
    service = await service_token(org)
    retry = [
        {"metricKey": "cost_per_order", "value": 3.9, "measuredAt": at(3), "idempotencyKey": "r"}
    ]
    payloads = await asyncio.gather(*(record(org, retry, service) for _ in range(6)))
    assert [p["userErrors"] for p in payloads] == [[]] * 6
    assert len({p["measurements"][0]["createdAt"] for p in payloads}) == 1
    async with db.connect() as conn:
        n = await conn.scalar(text("SELECT count(*) FROM measurement WHERE idempotency_key = 'r'"))
    assert n == 1

    async def batch(i: int) -> dict:
        items = [
            {"metricKey": "cost_per_order", "value": 3.5 + (i * 10 + j) / 1000, "measuredAt": at(j)}
            for j in range(10)
        ]
        return await record(org, items, service)

    async def manual(i: int) -> dict:
        return await h.check_in(org, t.kr_leaf, 3.1 + i / 100)

    async def rebind(i: int) -> dict:
        return await bind(org, t.kr_root, t.metric if i % 2 else None)

    results = await asyncio.gather(*(f(i) for i in range(5) for f in (batch, manual, rebind)))
    assert all(r.get("userErrors", []) == [] for r in results)
    await assert_consistent(db)


async def test_item1_a_carried_over_key_result_stays_bound_to_its_metric(org: Org, db):
    t = await tree(org)
    later = await h.active_cycle(
        org, str(TODAY + timedelta(days=61)), str(TODAY + timedelta(days=150)), "PLANNING"
    )
    p = await h.ok(
        org,
        "carryOverObjective",
        {"objectiveId": t.leaf, "toCycleId": later, "keyResultIds": [t.kr_leaf]},
        "keyResults { id metric { key } }",
    )
    [carried] = p["keyResults"]
    assert carried["metric"] == {"key": "cost_per_order"}
    q = '{ metric(key: "cost_per_order") { keyResults { id } } }'
    bound = {k["id"] for k in (await org.call(q))["metric"]["keyResults"]}
    assert bound == {t.kr_root, t.kr_leaf, carried["id"]}
    # Its cycle is PLANNING: a measurement now feeds only the running cycle's two.
    p = await record(org, [{"metricKey": "cost_per_order", "value": 3.9}])
    assert len(p["checkIns"]) == 2
    await assert_consistent(db)


async def test_item2_a_cycle_in_review_takes_late_numbers_inside_it_only(org: Org, db):
    cycle = await h.active_cycle(
        org, str(TODAY - timedelta(days=100)), str(TODAY - timedelta(days=10)), "REVIEW"
    )
    kr = await h.key_result(
        org, await h.objective(org, cycle, "Last quarter"), "Cost", "DECREASE", 4.2, 3.6
    )
    metric = await create_metric(org)
    assert (await bind(org, kr, metric))["userErrors"] == []
    p = await record(
        org,
        [
            {"metricKey": "cost_per_order", "value": 3.9, "measuredAt": at(20)},  # inside
            {"metricKey": "cost_per_order", "value": 3.7, "measuredAt": at(5)},  # after its end
        ],
    )
    assert p["userErrors"] == [] and [c["value"] for c in p["checkIns"]] == [3.9]
    assert (await kr_state(org, kr))["currentValue"] == 3.9
    await assert_consistent(db)
