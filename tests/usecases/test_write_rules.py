"""Writes as an outside caller meets them (issue 10, items 5 to 8 and createCycle's dates
from 11): idempotent retries racing each other, idempotency keys scoped to their caller
and checked after authorization, numbers and dates inside the rules' bounds, weights
under parents the caller may not edit, and objectives owned by their creator."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from schema.ids import decode_as, encode
from service import migrate
from service.db import Database
from service.usecases import organizations
from service.verify import verify, verify_event_sequences
from tests import factories as h
from tests.factories import Org

CHECK_IN = "checkIn { id value } keyResult { currentValue }"


async def events_written(db: Database) -> int:
    async with db.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM event")))


async def check_in_rows(db: Database, kr: str) -> list[Any]:
    async with db.connect() as conn:
        return (
            await conn.execute(
                text("SELECT id, value, caller FROM check_in WHERE key_result_id = :k ORDER BY id"),
                {"k": decode_as(kr, "KeyResult")},
            )
        ).all()


async def assert_consistent(db: Database) -> None:
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        assert mismatches == []
        assert await verify_event_sequences(conn) == []


async def member_of(org: Org, name: str, team: str, role: str = "MEMBER") -> tuple[str, str]:
    user = await h.user(org, name, role)
    await h.ok(org, "addTeamMember", {"teamId": team, "userId": user}, "team { id }")
    return user, org.token(decode_as(user, "User"))


# --- item 5 --------------------------------------------------------------------------------


async def test_item5_concurrent_retries_with_one_key_all_get_the_first_check_in(
    org: Org, db: Database
):
    cycle = await h.active_cycle(org)
    root = await h.objective(org, cycle, "Root")
    kr = await h.key_result(org, await h.objective(org, cycle, "Leaf", parentId=root))
    before = await events_written(db)

    async def retry() -> dict[str, Any]:
        return await h.mutate(
            org,
            "checkIn",
            {"keyResultId": kr, "value": 42, "idempotencyKey": "cost-per-order-w48"},
            CHECK_IN,
        )

    # Ten requests at once over the app, each use case on its own pooled connection.
    payloads = await asyncio.gather(*(retry() for _ in range(10)))
    assert [p["userErrors"] for p in payloads] == [[]] * 10
    assert len({p["checkIn"]["id"] for p in payloads}) == 1
    assert all(p["checkIn"]["value"] == 42 for p in payloads)
    rows = await check_in_rows(db, kr)
    assert len(rows) == 1
    assert await events_written(db) == before + 1  # one CHECK_IN event, nothing else
    assert await h.progress(org, root) == pytest.approx(0.42)
    await assert_consistent(db)


# --- item 6 --------------------------------------------------------------------------------


async def test_item6_a_caller_who_may_not_check_in_is_forbidden_whatever_the_key(
    org: Org, db: Database
):
    cycle = await h.active_cycle(org)
    kr = await h.key_result(org, await h.objective(org, cycle, "Public"))
    first = await h.check_in(org, kr, 10, idempotencyKey="shared-key")
    viewer = org.token(decode_as(await h.user(org, "Vera Viewer", "VIEWER"), "User"))
    before = await events_written(db)
    payload = await h.mutate(
        org,
        "checkIn",
        {"keyResultId": kr, "value": 10, "idempotencyKey": "shared-key"},
        CHECK_IN,
        token=viewer,
    )
    assert payload["checkIn"] is None
    assert [e["code"] for e in payload["userErrors"]] == ["FORBIDDEN"]
    assert first["checkIn"]["id"] not in str(payload)
    assert len(await check_in_rows(db, kr)) == 1
    assert await events_written(db) == before


async def test_item6_keys_are_per_caller(org: Org, db: Database):
    cycle = await h.active_cycle(org)
    team = await h.team(org, "Warehouse")
    _member, member = await member_of(org, "Sam Member", team)
    kr = await h.key_result(org, await h.objective(org, cycle, "Ours", teamId=team))
    _row, service_key = await db.transaction(
        lambda s: organizations.create_api_key(s, org.id, "logistics")
    )
    key = {"idempotencyKey": "2026-w48"}
    by_admin = await h.check_in(org, kr, 10, **key)
    by_member = await h.check_in(org, kr, 20, token=member, **key)
    by_service = await h.check_in(org, kr, 30, token=service_key, **key)
    ids = {p["checkIn"]["id"] for p in (by_admin, by_member, by_service)}
    assert len(ids) == 3  # each caller's key is its own: nothing is silently dropped
    rows = await check_in_rows(db, kr)
    assert [r.value for r in rows] == [10, 20, 30]
    callers = [r.caller for r in rows]
    assert callers[0].startswith("user:") and callers[1].startswith("user:")
    assert callers[2].startswith("key:") and len(set(callers)) == 3
    # Each caller's retry returns its own first check-in.
    again = await h.check_in(org, kr, 20, token=member, **key)
    assert again["checkIn"] == by_member["checkIn"]
    again = await h.check_in(org, kr, 30, token=service_key, **key)
    assert again["checkIn"] == by_service["checkIn"]
    assert len(await check_in_rows(db, kr)) == 3
    await assert_consistent(db)


async def test_item6_same_key_with_another_value_or_instant_is_a_conflict(org: Org, db: Database):
    cycle = await h.active_cycle(org)
    kr = await h.key_result(org, await h.objective(org, cycle, "O"))
    first = await h.check_in(org, kr, 10, idempotencyKey="k1")
    assert (await h.check_in(org, kr, 10, idempotencyKey="k1"))["checkIn"] == first["checkIn"]
    day = h.around_today(before=10)[0]
    at = f"{day}T08:00:00+00:00"
    dated = await h.check_in(org, kr, 5, idempotencyKey="k2", measuredAt=at)
    same = await h.check_in(org, kr, 5, idempotencyKey="k2", measuredAt=f"{day}T09:00:00+01:00")
    assert same["checkIn"] == dated["checkIn"]  # the same instant, written another way
    before = await events_written(db)
    for inp in (
        {"value": 11, "idempotencyKey": "k1"},  # another value
        {"value": 10, "idempotencyKey": "k1", "measuredAt": at},  # another instant
        {"value": 5, "idempotencyKey": "k2"},  # now, not the instant first given
        {"value": 5, "idempotencyKey": "k2", "measuredAt": f"{day}T07:00:00+00:00"},
    ):
        payload = await h.mutate(org, "checkIn", {"keyResultId": kr, **inp}, CHECK_IN)
        assert payload["checkIn"] is None, inp
        assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
            ("CONFLICT", ["idempotencyKey"])
        ], inp
    assert len(await check_in_rows(db, kr)) == 2
    assert await events_written(db) == before
    node = (
        await org.call(
            "query($id: ID!) { node(id: $id) { ... on KeyResult { currentValue } } }", {"id": kr}
        )
    )["node"]
    assert node == {"currentValue": 10.0}


async def test_item6_migration_backfills_the_caller(database_url: str):
    await asyncio.to_thread(migrate.downgrade, database_url, "0003")
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        org = await conn.fetchval(
            "INSERT INTO organization (name, slug) VALUES ('A', 'a') RETURNING id"
        )
        user = await conn.fetchval(
            "INSERT INTO app_user (organization_id, name, email, role) "
            "VALUES ($1, 'U', 'u@a.example', 'MEMBER') RETURNING id",
            org,
        )
        key = await conn.fetchval(
            "INSERT INTO api_key (organization_id, name, key_hash) VALUES ($1, 'k', 'h') "
            "RETURNING id",
            org,
        )
        cycle = await conn.fetchval(
            "INSERT INTO cycle (organization_id, name, starts_on, ends_on) "
            "VALUES ($1, 'Q', '2026-01-01', '2026-03-31') RETURNING id",
            org,
        )
        objs = []
        for visibility in ("PRIVATE", "TEAM"):
            o = await conn.fetchval(
                "INSERT INTO objective (organization_id, cycle_id, title, visibility) "
                "VALUES ($1, $2, 'O', $3) RETURNING id",
                org,
                cycle,
                visibility,
            )
            await conn.execute(
                "INSERT INTO event (organization_id, seq, kind, actor_user_id, subject_type, "
                "subject_id, payload) VALUES ($1, $2, 'OBJECTIVE_CREATED', $3, 'Objective', $4, "
                "'{}')",
                org,
                len(objs) + 1,
                user,
                o,
            )
            objs.append(o)
        kr = await conn.fetchval(
            "INSERT INTO key_result (organization_id, objective_id, title, type, start_value, "
            "target_value, current_value) VALUES ($1, $2, 'K', 'INCREASE', 0, 1, 0) RETURNING id",
            org,
            objs[0],
        )
        for author, api_key in ((user, None), (None, key), (None, None)):
            await conn.execute(
                "INSERT INTO check_in (organization_id, key_result_id, value, progress, "
                "author_id, api_key_id, idempotency_key) VALUES ($1, $2, 0, 0, $3, $4, $5)",
                org,
                kr,
                author,
                api_key,
                f"k-{author}-{api_key}",
            )
        await asyncio.to_thread(migrate.upgrade, database_url)
        callers = [r["caller"] for r in await conn.fetch("SELECT caller FROM check_in ORDER BY id")]
        assert callers[:2] == [f"user:{user}", f"key:{key}"]
        assert callers[2].startswith("check-in:")
        owners = [
            r["owner_id"] for r in await conn.fetch("SELECT owner_id FROM objective ORDER BY id")
        ]
        assert owners == [user, None]  # the PRIVATE one is its creator's again
    finally:
        await conn.close()


# --- item 7 --------------------------------------------------------------------------------


async def test_item7_huge_weights_are_refused_and_nothing_is_written(org: Org, db: Database):
    cycle = await h.active_cycle(org)
    root = await h.objective(org, cycle, "Company")
    child = await h.objective(org, cycle, "Child", parentId=root)
    kr = await h.key_result(org, child)
    before = await events_written(db)
    attempts = [
        (
            "createObjective",
            {"cycleId": cycle, "title": "Heavy", "parentId": root, "weight": 1e308},
        ),
        ("createObjective", {"cycleId": cycle, "title": "Heavy", "weight": 1000.5}),
        ("createObjective", {"cycleId": cycle, "title": "Negative", "weight": -1}),
        ("updateObjective", {"objectiveId": child, "weight": 1e308}),
        (
            "createKeyResult",
            {"objectiveId": child, "title": "K", "type": "MILESTONE", "weight": 1e308},
        ),
        ("updateKeyResult", {"keyResultId": kr, "weight": 1001}),
    ]
    for name, inp in attempts:
        payload = await h.mutate(org, name, inp, "__typename")
        assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
            ("INVALID", ["weight"])
        ], (name, inp)
    assert await events_written(db) == before
    # The largest weights allowed roll up exactly.
    heavy = [
        await h.objective(org, cycle, f"Heavy {i}", parentId=root, weight=1000) for i in range(2)
    ]
    await h.check_in(org, await h.key_result(org, heavy[0]), 100)
    await h.check_in(org, kr, 50)
    assert await h.progress(org, root) == pytest.approx((1000 * 1 + 1 * 0.5) / 2001)
    await assert_consistent(db)


async def test_item7_values_beyond_1e15_are_refused(org: Org, db: Database):
    cycle = await h.active_cycle(org)
    obj = await h.objective(org, cycle, "O")
    kr = await h.key_result(org, obj, start=-1e15, target=1e15)  # the bounds themselves
    assert (await h.check_in(org, kr, 0))["keyResult"]["progress"] == pytest.approx(0.5)
    assert await h.progress(org, kr) == pytest.approx(0.5)
    before = await events_written(db)
    kr_input = {"objectiveId": obj, "title": "K", "type": "INCREASE"}
    attempts = [
        ("createKeyResult", {**kr_input, "startValue": -1e308, "targetValue": 1e308}, "startValue"),
        (
            "createKeyResult",
            {**kr_input, "startValue": 0, "targetValue": 1.0000001e15},
            "targetValue",
        ),
        ("updateKeyResult", {"keyResultId": kr, "targetValue": 1e300}, "targetValue"),
        ("updateKeyResult", {"keyResultId": kr, "startValue": -2e15}, "startValue"),
        ("checkIn", {"keyResultId": kr, "value": 1e308}, "value"),
        ("checkIn", {"keyResultId": kr, "value": -1e16}, "value"),
        ("checkIn", {"keyResultId": kr, "value": 1, "confidence": 1e308}, "confidence"),
    ]
    for name, inp, field in attempts:
        payload = await h.mutate(org, name, inp, "__typename")
        assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID", [field])], (
            name,
            inp,
        )
    assert await events_written(db) == before
    await assert_consistent(db)


async def test_item7_cycle_dates_lie_between_1900_and_2999(org: Org, db: Database):
    before = await events_written(db)
    for starts, ends, field in (
        ("2026-01-01", "9999-12-31", "endsOn"),
        ("2026-01-01", "3000-01-01", "endsOn"),
        ("0001-01-01", "2026-03-31", "startsOn"),
        ("1899-12-31", "2026-03-31", "startsOn"),
    ):
        payload = await h.mutate(
            org, "createCycle", {"name": "Far", "startsOn": starts, "endsOn": ends}, "cycle { id }"
        )
        assert payload["cycle"] is None
        assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID", [field])], (
            starts,
            ends,
        )
    assert await events_written(db) == before
    listed = await org.call("{ cycles { edges { node { name } } } }")
    assert listed["cycles"]["edges"] == []
    await h.ok(
        org,
        "createCycle",
        {"name": "Whole range", "startsOn": "1900-01-01", "endsOn": "2999-12-31"},
        "cycle { id }",
    )
    listed = await org.call("{ cycles { edges { node { name expectedProgress } } } }")
    assert [e["node"]["name"] for e in listed["cycles"]["edges"]] == ["Whole range"]


async def test_item7_a_weight_under_a_parent_needs_the_right_to_edit_it(org: Org, db: Database):
    cycle = await h.active_cycle(org)
    company = await h.objective(org, cycle, "Company objective")
    team = await h.team(org, "Transport")
    _member, member = await member_of(org, "Priya Member", team)
    base = {"cycleId": cycle, "teamId": team}

    # Aligning stays open: a team cascades under a company objective at weight 1.
    aligned = await h.objective(
        org, cycle, "Ours, aligned", parentId=company, token=member, teamId=team
    )
    before = await events_written(db)
    refused = [
        ("createObjective", {**base, "title": "Heavy", "parentId": company, "weight": 1000}),
        ("createObjective", {**base, "title": "Silent", "parentId": company, "weight": 0}),
        ("updateObjective", {"objectiveId": aligned, "weight": 1000}),
    ]
    heavy = await h.objective(org, cycle, "Ours, weighted", token=member, weight=50, teamId=team)
    before = await events_written(db)
    refused.append(("alignObjective", {"objectiveId": heavy, "parentId": company}))
    for name, inp in refused:
        payload = await h.mutate(org, name, inp, "__typename", token=member)
        assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [
            ("FORBIDDEN", ["weight"])
        ], (name, inp)
    assert await events_written(db) == before
    q = "query($id: ID!) { node(id: $id) { ... on Objective { weight parent { id } } } }"
    # Nothing was reset silently.
    assert (await org.call(q, {"id": heavy}))["node"] == {"weight": 50.0, "parent": None}
    assert (await org.call(q, {"id": aligned}))["node"] == {
        "weight": 1.0,
        "parent": {"id": company},
    }

    # Under a parent the member may edit, any weight in range is theirs to set.
    ours = await h.objective(org, cycle, "Team objective", token=member, teamId=team)
    await h.ok(
        org, "alignObjective", {"objectiveId": heavy, "parentId": ours}, "__typename", member
    )
    await h.ok(org, "updateObjective", {"objectiveId": heavy, "weight": 7}, "__typename", member)
    # The admin may weigh anything.
    await h.ok(org, "alignObjective", {"objectiveId": ours, "parentId": company}, "__typename")
    await h.ok(org, "updateObjective", {"objectiveId": ours, "weight": 3}, "__typename")
    await assert_consistent(db)


# --- item 8 --------------------------------------------------------------------------------


async def test_item8_an_objective_without_owner_is_its_creators(org: Org, db: Database):
    cycle = await h.active_cycle(org)
    team = await h.team(org, "Warehouse")
    member_id, member = await member_of(org, "Sam Member", team)
    q = "query($id: ID!) { node(id: $id) { ... on Objective { owner { id } visibility } } }"
    for visibility in ("PRIVATE", "TEAM", "PUBLIC"):
        obj = await h.objective(
            org, cycle, f"Ours ({visibility})", teamId=team, visibility=visibility, token=member
        )
        node = (await org.call(q, {"id": obj}, token=member))["node"]
        assert node == {"owner": {"id": member_id}, "visibility": visibility}
        # The creator goes on working on it: a key result, a check-in.
        kr = (
            await h.ok(
                org,
                "createKeyResult",
                {
                    "objectiveId": obj,
                    "title": "K",
                    "type": "INCREASE",
                    "startValue": 0,
                    "targetValue": 10,
                },
                "keyResult { id }",
                token=member,
            )
        )["keyResult"]["id"]
        await h.check_in(org, kr, 5, token=member)
    by_admin = await h.objective(org, cycle, "The admin's", teamId=team)
    owner = (await org.call(q, {"id": by_admin}))["node"]["owner"]
    assert owner == {"id": encode("User", org.admin_id)}
    # Every objective keeps someone accountable.
    payload = await h.mutate(
        org, "updateObjective", {"objectiveId": by_admin, "ownerId": None}, "__typename"
    )
    assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID", ["ownerId"])]
    await assert_consistent(db)


async def test_item8_a_teammate_may_not_edit_a_private_objective_not_theirs(org: Org, db: Database):
    review = await h.active_cycle(org, status="REVIEW")
    cycle = await h.active_cycle(org)
    team = await h.team(org, "Warehouse")
    owner_id, owner = await member_of(org, "Olga Owner", team)
    _mate_id, mate = await member_of(org, "Tim Teammate", team)
    private = await h.objective(
        org, cycle, "Olga's", teamId=team, visibility="PRIVATE", token=owner
    )
    kr = await h.key_result(org, private, ownerId=owner_id)
    in_review = await h.objective(
        org, review, "Olga's review", teamId=team, visibility="PRIVATE", token=owner
    )
    review_kr = await h.key_result(org, in_review)
    mine = await h.objective(org, cycle, "Tim's", teamId=team, token=mate)
    before = await events_written(db)
    attempts = [
        ("updateObjective", {"objectiveId": private, "title": "Taken"}),
        ("archiveObjective", {"objectiveId": private}),
        ("alignObjective", {"objectiveId": private, "parentId": mine}),
        ("alignObjective", {"objectiveId": mine, "parentId": private}),
        ("createKeyResult", {"objectiveId": private, "title": "K", "type": "MILESTONE"}),
        ("updateKeyResult", {"keyResultId": kr, "title": "Taken"}),
        ("checkIn", {"keyResultId": kr, "value": 1}),
        ("addComment", {"subjectId": private, "body": "hello"}),
        ("scoreKeyResult", {"keyResultId": review_kr, "score": 0.5}),
        ("reflectOnObjective", {"objectiveId": in_review, "lessons": "mine now"}),
    ]
    for name, inp in attempts:
        payload = await h.mutate(org, name, inp, "__typename", token=mate)
        codes = [e["code"] for e in payload["userErrors"]]
        assert codes == ["NOT_FOUND"], (name, inp, payload)  # never a hint that it exists
    assert await events_written(db) == before
    # Its owner, and the admin, go on editing it.
    await h.ok(
        org,
        "updateObjective",
        {"objectiveId": private, "title": "Still Olga's"},
        "__typename",
        owner,
    )
    await h.check_in(org, kr, 1, token=owner)
    await h.ok(
        org, "updateObjective", {"objectiveId": private, "title": "Admin's edit"}, "__typename"
    )


def test_item8_editing_requires_seeing():
    from service.access import can_edit_objective, require_check_in
    from service.domain.errors import Rejected
    from service.domain.principal import Principal

    mate = Principal(organization_id=1, role="MEMBER", user_id=2, team_ids=frozenset({7}))
    assert can_edit_objective(mate, "TEAM", 7, 3)
    assert can_edit_objective(mate, "PUBLIC", 7, None)
    assert not can_edit_objective(mate, "PRIVATE", 7, 3)
    assert not can_edit_objective(mate, "PRIVATE", 7, None)
    assert can_edit_objective(mate, "PRIVATE", 7, 2)
    with pytest.raises(Rejected):
        require_check_in(mate, "PRIVATE", 7, 3, 2)  # owning the key result is not enough
    service = Principal(organization_id=1, role="SERVICE", api_key_id=4)
    assert not can_edit_objective(service, "PUBLIC", None, None)
    # A service checks in on any key result of its organization (docs/design.md, "Access").
    require_check_in(service, "PRIVATE", None, 3, None)
    require_check_in(service, "PUBLIC", None, 3, None)


async def test_a_payload_never_shows_what_the_write_took_out_of_sight(org: Org, db: Database):
    """A member who makes their team's objective PRIVATE and gives it to a teammate may
    not see it any more: the payload holds null, not the hidden row."""
    cycle = await h.active_cycle(org)
    team = await h.team(org, "Warehouse")
    _mine_id, me = await member_of(org, "Mia Member", team)
    other_id, _other = await member_of(org, "Otto Other", team)
    o = await h.objective(org, cycle, "Dock turnaround", teamId=team, token=me)
    payload = await h.ok(
        org,
        "updateObjective",
        {"objectiveId": o, "visibility": "PRIVATE", "ownerId": other_id},
        "objective { id title }",
        me,
    )
    assert payload["objective"] is None
    node = await org.call("query($id: ID!) { node(id: $id) { id } }", {"id": o}, token=me)
    assert node["node"] is None
    # The admin still sees it, with the change made.
    seen = await org.call(
        "query($id: ID!) { node(id: $id) { ... on Objective { visibility } } }", {"id": o}
    )
    assert seen["node"]["visibility"] == "PRIVATE"


async def test_a_service_checks_in_on_any_key_result_and_sees_nothing_hidden(
    org: Org, db: Database
):
    """docs/design.md, "Access": SERVICE may check in on any key result of its
    organization (found from outside: a TEAM or PRIVATE one was NOT_FOUND). The payload
    shows nothing hidden."""
    _row, key = await db.transaction(lambda s: organizations.create_api_key(s, org.id, "wms"))
    cycle = await h.active_cycle(org)
    private = await h.objective(org, cycle, "Board secret", visibility="PRIVATE")
    kr = await h.key_result(org, private, "Secret KR", start=0, target=10)
    payload = await h.ok(
        org,
        "checkIn",
        {"keyResultId": kr, "value": 5, "note": "from the wms"},
        "checkIn { id note } keyResult { title }",
        token=key,
    )
    assert payload["checkIn"] is None and payload["keyResult"] is None
    assert await h.progress(org, kr) == pytest.approx(0.5)  # the admin sees it landed
    assert await h.progress(org, private) == pytest.approx(0.5)
    # A viewer still may not, and gets no hint that it exists.
    _viewer_id, viewer = await member_of(org, "Vi Viewer", await h.team(org, "T"), "VIEWER")
    refused = await h.mutate(org, "checkIn", {"keyResultId": kr, "value": 6}, "__typename", viewer)
    assert [e["code"] for e in refused["userErrors"]] == ["NOT_FOUND"]
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        assert mismatches == []
