"""Administration (issue 21, part 2), through the GraphQL API as an admin screen drives
it: updateTeam, archiveTeam, updateCycle, updateUser, reactivateUser, anonymizeUser,
archiveKeyResult, unarchiveObjective, updateMetric, archiveMetric. Each writes its event
and changes nothing when refused; ids of another organization and hidden objects are
NOT_FOUND; a closed cycle is CYCLE_CLOSED; two admins demoting each other at once leave
one admin; a role change closes the person's real WebSocket with 4403; the `okr user`
commands run the same rules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from schema.ids import decode_as
from service.db import Database
from service.usecases import organizations
from service.verify import verify, verify_event_sequences
from tests.factories import (
    Org,
    active_cycle,
    check_in,
    env_for,
    key_result,
    mutate,
    objective,
    ok,
    okr,
    progress,
    team,
    user,
)
from tests.sockets import LEGACY, PROGRESS, TRANSPORT, closed, connect, graphql, receive, start


def code_of(payload: dict[str, Any]) -> tuple[str, list[str] | None]:
    assert len(payload["userErrors"]) == 1, payload
    error = payload["userErrors"][0]
    return error["code"], error["field"]


async def other_org(org: Org) -> Org:
    created, admin = await org.db.transaction(
        lambda s: organizations.create_organization(s, "Other Freight", "boss@other.example")
    )
    return Org(org.client, org.db, created.id, admin.id)


async def events_of(org: Org, kind: str) -> list[dict[str, Any]]:
    q = (
        "{ events(first: 100) { edges { node { kind before after "
        "subject { id } actor { id } } } } }"
    )
    edges = (await org.call(q))["events"]["edges"]
    return [e["node"] for e in edges if e["node"]["kind"] == kind]


async def event_count(db: Database) -> int:
    async with db.connect() as conn:
        return (await conn.execute(text("SELECT count(*) FROM event"))).scalar_one()


async def verified(db: Database) -> None:
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        gaps = await verify_event_sequences(conn)
    assert mismatches == [] and gaps == [], (mismatches, gaps)


def token_of(org: Org, gid: str) -> str:
    return org.token(decode_as(gid, "User"))


def days(n: int) -> str:
    return (datetime.now(UTC).date() + timedelta(days=n)).isoformat()


TEAM = "team { id name archived parent { id } }"
CYCLE = "cycle { id name startsOn endsOn version expectedProgress }"
USER = "user { id name email role active anonymized }"
KR = "keyResult { id archived }"
OBJECTIVE = "objective { id archivedAt progress }"
METRIC = "metric { id key name unit description archived }"


# --- teams -----------------------------------------------------------------------------


async def test_update_team_renames_and_moves_without_loops(org: Org, db: Database):
    ops = await team(org, "Operations")
    dispatch = await team(org, "Dispatch", ops)
    night = await team(org, "Night shift", dispatch)

    renamed = await ok(org, "updateTeam", {"teamId": night, "name": "Night dispatch"}, TEAM)
    assert renamed["team"] == {
        "id": night,
        "name": "Night dispatch",
        "archived": False,
        "parent": {"id": dispatch},
    }
    before = await event_count(db)
    # Under its own subtree, or itself: a loop, INVALID on parentId, nothing written.
    for parent in (night, dispatch, ops):
        refused = await mutate(org, "updateTeam", {"teamId": ops, "parentId": parent}, TEAM)
        assert code_of(refused) == ("INVALID", ["parentId"]) and refused["team"] is None
    assert await event_count(db) == before
    moved = await ok(org, "updateTeam", {"teamId": night, "parentId": ops}, TEAM)
    assert moved["team"]["parent"] == {"id": ops}
    top = await ok(org, "updateTeam", {"teamId": dispatch, "parentId": None}, TEAM)
    assert top["team"]["parent"] is None
    # Now ops -> night, dispatch alone: dispatch may go under night.
    await ok(org, "updateTeam", {"teamId": dispatch, "parentId": night}, TEAM)
    q = "query($id: ID!) { node(id: $id) { ... on Team { children { id } } } }"
    assert (await org.call(q, {"id": ops}))["node"]["children"] == [{"id": night}]

    updated = await events_of(org, "TEAM_UPDATED")
    assert updated[0]["before"] == {"name": "Night shift"}
    assert updated[0]["after"] == {"name": "Night dispatch"}
    assert all(e["subject"]["id"] in (night, dispatch) for e in updated) and len(updated) == 4

    member = await user(org, "Mia Member")
    refused = await mutate(
        org, "updateTeam", {"teamId": ops, "name": "x"}, TEAM, token_of(org, member)
    )
    assert code_of(refused)[0] == "FORBIDDEN"
    refused = await mutate(org, "updateTeam", {"teamId": ops, "name": " "}, TEAM)
    assert code_of(refused) == ("INVALID", ["name"])


async def test_archive_team_needs_it_empty_then_it_leaves_lists(org: Org, db: Database):
    cycle = await active_cycle(org)
    ops = await team(org, "Operations")
    dispatch = await team(org, "Dispatch", ops)
    dana = await user(org, "Dana Member")
    await ok(org, "addTeamMember", {"teamId": dispatch, "userId": dana}, "team { id }")
    goal = await objective(org, cycle, "Faster dispatch", teamId=dispatch)

    refused = await mutate(org, "archiveTeam", {"teamId": dispatch}, TEAM)
    assert (
        code_of(refused) == ("CONFLICT", ["teamId"])
        and "member" in refused["userErrors"][0]["message"]
    )
    await ok(org, "removeTeamMember", {"teamId": dispatch, "userId": dana}, "team { id }")
    refused = await mutate(org, "archiveTeam", {"teamId": dispatch}, TEAM)
    assert code_of(refused) == ("CONFLICT", ["teamId"])
    assert "objective" in refused["userErrors"][0]["message"]
    await ok(org, "archiveObjective", {"objectiveId": goal}, "objective { id }")
    # A parent with a live team under it is refused too.
    assert code_of(await mutate(org, "archiveTeam", {"teamId": ops}, TEAM))[0] == "CONFLICT"

    archived = await ok(org, "archiveTeam", {"teamId": dispatch}, TEAM)
    assert archived["team"]["archived"] is True
    assert len(await events_of(org, "TEAM_ARCHIVED")) == 1
    again = await ok(org, "archiveTeam", {"teamId": dispatch}, TEAM)  # nothing more written
    assert again["team"]["archived"] and len(await events_of(org, "TEAM_ARCHIVED")) == 1

    # Out of every list; read by id it is there, with its history.
    teams = (await org.call("{ teams(first: 50) { edges { node { id } } } }"))["teams"]["edges"]
    assert [e["node"]["id"] for e in teams] == [ops]
    q = "query($id: ID!) { node(id: $id) { ... on Team { id archived children { id } } } }"
    assert (await org.call(q, {"id": ops}))["node"]["children"] == []
    assert (await org.call(q, {"id": dispatch}))["node"] == {
        "id": dispatch,
        "archived": True,
        "children": [],
    }
    q = "query($id: ID!) { node(id: $id) { ... on Objective { team { id archived } } } }"
    assert (await org.call(q, {"id": goal}))["node"]["team"] == {"id": dispatch, "archived": True}

    # An archived team takes no new objectives and no members.
    refused = await mutate(
        org, "createObjective", {"cycleId": cycle, "title": "New", "teamId": dispatch}, OBJECTIVE
    )
    assert code_of(refused) == ("INVALID", ["teamId"])
    refused = await mutate(org, "addTeamMember", {"teamId": dispatch, "userId": dana}, TEAM)
    assert code_of(refused) == ("INVALID", ["teamId"])
    assert code_of(
        await mutate(org, "updateTeam", {"teamId": ops, "parentId": dispatch}, TEAM)
    ) == (
        "INVALID",
        ["parentId"],
    )


async def test_team_objectives_leave_out_archived_objectives_on_both_read_paths(org: Org):
    cycle = await active_cycle(org)
    ops = await team(org, "Operations")
    kept = await objective(org, cycle, "Kept", teamId=ops)
    gone = await objective(org, cycle, "Gone", teamId=ops)
    await ok(org, "archiveObjective", {"objectiveId": gone}, "objective { id }")
    planned = (
        "query($id: ID!) { node(id: $id) { ... on Team { "
        "objectives { totalCount edges { node { id } } } } } }"
    )
    general = planned.replace("node { id }", "node { id archivedAt }").replace(
        "... on Team {", "... on Team { archived"
    )
    for q in (planned, general):
        got = (await org.call(q, {"id": ops}))["node"]["objectives"]
        assert got["totalCount"] == 1 and [e["node"]["id"] for e in got["edges"]] == [kept]


# --- cycles ----------------------------------------------------------------------------


async def test_update_cycle_moves_dates_and_statuses_follow_at_once(org: Org, db: Database):
    cycle = await active_cycle(org, days(-60), days(30))
    goal = await objective(org, cycle, "Throughput")
    kr = await key_result(org, goal, "Orders per hour", start=0, target=100)
    early = (datetime.now(UTC) - timedelta(days=50)).isoformat()
    await check_in(org, kr, 20, measuredAt=early)
    await check_in(org, kr, 50)
    q = "query($id: ID!) { node(id: $id) { ... on Objective { status expectedProgress } } }"
    before = (await org.call(q, {"id": goal}))["node"]
    assert before["status"] == "AT_RISK"  # 0.5 against ~0.67 expected

    got = await ok(
        org,
        "updateCycle",
        {"cycleId": cycle, "expectedVersion": 1, "name": "H2", "endsOn": days(300)},
        CYCLE,
    )
    assert got["cycle"]["version"] == 2 and got["cycle"]["name"] == "H2"
    after = (await org.call(q, {"id": goal}))["node"]
    assert after["expectedProgress"] < 0.25 and after["status"] == "ON_TRACK"

    before_count = await event_count(db)
    stale = await mutate(
        org, "updateCycle", {"cycleId": cycle, "expectedVersion": 1, "name": "x"}, CYCLE
    )
    assert code_of(stale) == ("CONFLICT", ["expectedVersion"])
    # A range that leaves a check-in outside the cycle: INVALID on that date.
    refused = await mutate(org, "updateCycle", {"cycleId": cycle, "startsOn": days(-40)}, CYCLE)
    assert code_of(refused) == ("INVALID", ["startsOn"])
    refused = await mutate(org, "updateCycle", {"cycleId": cycle, "endsOn": days(-2)}, CYCLE)
    assert code_of(refused) == ("INVALID", ["endsOn"])
    refused = await mutate(
        org, "updateCycle", {"cycleId": cycle, "startsOn": days(10), "endsOn": days(5)}, CYCLE
    )
    assert code_of(refused) == ("INVALID", ["endsOn"])
    refused = await mutate(org, "updateCycle", {"cycleId": cycle, "startsOn": None}, CYCLE)
    assert code_of(refused) == ("INVALID", ["startsOn"])
    assert await event_count(db) == before_count
    cycle_row = (
        await org.call(
            "query($id: ID!) { node(id: $id) { ... on Cycle { name startsOn endsOn version } } }",
            {"id": cycle},
        )
    )["node"]
    assert cycle_row == {"name": "H2", "startsOn": days(-60), "endsOn": days(300), "version": 2}

    updated = await events_of(org, "CYCLE_UPDATED")
    assert updated == [
        {
            "kind": "CYCLE_UPDATED",
            "before": {"name": "Q4", "ends_on": days(30)},
            "after": {"name": "H2", "ends_on": days(300)},
            "subject": {"id": cycle},
            "actor": {"id": (await org.call("{ viewer { user { id } } }"))["viewer"]["user"]["id"]},
        }
    ]
    member = await user(org, "Mia Member")
    refused = await mutate(
        org, "updateCycle", {"cycleId": cycle, "name": "y"}, CYCLE, token_of(org, member)
    )
    assert code_of(refused)[0] == "FORBIDDEN"


async def test_update_cycle_on_a_closed_cycle_is_cycle_closed(org: Org):
    closed_cycle = await active_cycle(org, status="CLOSED")
    refused = await mutate(org, "updateCycle", {"cycleId": closed_cycle, "name": "Renamed"}, CYCLE)
    assert code_of(refused)[0] == "CYCLE_CLOSED" and refused["cycle"] is None


# --- people ----------------------------------------------------------------------------


async def test_update_user_changes_name_email_and_role_at_once(org: Org):
    mia = await user(org, "Mia Member")
    mia_token = token_of(org, mia)
    create_team = 'mutation { createTeam(input: {name: "T"}) { team { id } userErrors { code } } }'
    assert (await org.call(create_team, token=mia_token))["createTeam"]["userErrors"] == [
        {"code": "FORBIDDEN"}
    ]

    got = await ok(
        org,
        "updateUser",
        {"userId": mia, "name": "Mia Manager", "email": "Mia@Acme.Example", "role": "ADMIN"},
        USER,
    )
    assert got["user"] == {
        "id": mia,
        "name": "Mia Manager",
        "email": "mia@acme.example",
        "role": "ADMIN",
        "active": True,
        "anonymized": False,
    }
    # The new role holds on the next request of the same token.
    assert (await org.call(create_team, token=mia_token))["createTeam"]["userErrors"] == []
    updated = await events_of(org, "USER_UPDATED")
    assert updated[0]["before"] == {
        "name": "Mia Member",
        "email": "mia.member@acme.example",
        "role": "MEMBER",
    }

    taken = await mutate(org, "updateUser", {"userId": mia, "email": "admin@acme.example"}, USER)
    assert code_of(taken) == ("CONFLICT", ["email"])
    bad = await mutate(org, "updateUser", {"userId": mia, "email": "not an email"}, USER)
    assert code_of(bad) == ("INVALID", ["email"])
    bad = await mutate(org, "updateUser", {"userId": mia, "role": "SERVICE"}, USER)
    assert code_of(bad) == ("INVALID", ["role"])
    # Demoting one of two admins is fine; the last active admin is not demoted.
    await ok(org, "updateUser", {"userId": mia, "role": "VIEWER"}, USER)
    admin = (await org.call("{ viewer { user { id } } }"))["viewer"]["user"]["id"]
    last = await mutate(org, "updateUser", {"userId": admin, "role": "MEMBER"}, USER)
    assert code_of(last) == ("CONFLICT", ["role"])
    refused = await mutate(org, "updateUser", {"userId": admin, "name": "x"}, USER, mia_token)
    assert code_of(refused)[0] == "FORBIDDEN"


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(org: Org, db: Database):
    ada = (await org.call("{ viewer { user { id } } }"))["viewer"]["user"]["id"]
    bob = await user(org, "Bob Boss", role="ADMIN")
    for _round in range(4):
        results = await asyncio.gather(
            mutate(org, "updateUser", {"userId": bob, "role": "MEMBER"}, USER),
            mutate(org, "updateUser", {"userId": ada, "role": "MEMBER"}, USER, token_of(org, bob)),
        )
        assert sorted(len(r["userErrors"]) for r in results) == [0, 1], results
        async with db.connect() as conn:
            admins = (
                (
                    await conn.execute(
                        text(
                            "SELECT id FROM app_user WHERE organization_id = :org "
                            "AND role = 'ADMIN' AND active"
                        ),
                        {"org": org.id},
                    )
                )
                .scalars()
                .all()
            )
        assert len(admins) == 1
        # Put both back as admins for the next round (as the one left).
        survivor = ada if decode_as(ada, "User") in admins else bob
        other = bob if survivor == ada else ada
        await ok(
            org, "updateUser", {"userId": other, "role": "ADMIN"}, USER, token_of(org, survivor)
        )
    await verified(db)


async def test_reactivate_user_brings_back_a_deactivated_person(org: Org):
    mia = await user(org, "Mia Member")
    token = token_of(org, mia)
    await ok(org, "deactivateUser", {"userId": mia}, "user { id }")
    assert (await org.call("{ viewer { role } }", token=token, expect_errors=True))["errors"]
    got = await ok(org, "reactivateUser", {"userId": mia}, USER)
    assert got["user"]["active"] is True
    assert (await org.call("{ viewer { role } }", token=token))["viewer"]["role"] == "MEMBER"
    assert len(await events_of(org, "USER_REACTIVATED")) == 1
    await ok(org, "reactivateUser", {"userId": mia}, USER)  # active already: nothing written
    assert len(await events_of(org, "USER_REACTIVATED")) == 1
    refused = await mutate(org, "reactivateUser", {"userId": mia}, USER, token)
    assert code_of(refused)[0] == "FORBIDDEN"


async def test_anonymize_user_erases_name_and_email_for_good(org: Org, db: Database):
    ops = await team(org, "Operations")
    mia = await user(org, "Mia Member")
    await ok(org, "addTeamMember", {"teamId": ops, "userId": mia}, "team { id }")
    await ok(org, "updateUser", {"userId": mia, "name": "Mia Marsh"}, USER)
    token = token_of(org, mia)
    pk = decode_as(mia, "User")

    got = await ok(org, "anonymizeUser", {"userId": mia}, USER)
    assert got["user"] == {
        "id": mia,
        "name": "Anonymized user",
        "email": f"anonymized-{pk}@anonymized.invalid",
        "role": "MEMBER",
        "active": False,
        "anonymized": True,
    }
    # Their tokens end; they left their teams; their id stays in history.
    body = await org.call("{ viewer { role } }", token=token, expect_errors=True)
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    q = "query($id: ID!) { node(id: $id) { ... on Team { members { id } } } }"
    assert (await org.call(q, {"id": ops}))["node"]["members"] == []
    anonymized = await events_of(org, "USER_ANONYMIZED")
    assert [e["subject"]["id"] for e in anonymized] == [mia]
    # The copies hold neither the name nor the email any more.
    async with db.connect() as conn:
        payloads = (
            (
                await conn.execute(
                    text("SELECT payload::text FROM event WHERE organization_id = :org"),
                    {"org": org.id},
                )
            )
            .scalars()
            .all()
        )
    assert not any("mia" in p.lower() or "Marsh" in p for p in payloads), payloads
    renamed = (await events_of(org, "USER_UPDATED"))[0]
    assert renamed["before"] == {"name": "Anonymized user"}
    assert renamed["after"] == {"name": "Anonymized user"}
    # It cannot be undone.
    for name, input in (
        ("reactivateUser", {"userId": mia}),
        ("updateUser", {"userId": mia, "name": "Mia Marsh"}),
    ):
        assert code_of(await mutate(org, name, input, USER)) == ("CONFLICT", ["userId"])
    before = await event_count(db)
    await ok(org, "anonymizeUser", {"userId": mia}, USER)  # again: nothing written
    assert await event_count(db) == before
    admin = (await org.call("{ viewer { user { id } } }"))["viewer"]["user"]["id"]
    assert code_of(await mutate(org, "anonymizeUser", {"userId": admin}, USER))[0] == "FORBIDDEN"


# --- key results and objectives ----------------------------------------------------------


async def test_archive_key_result_leaves_lists_and_the_roll_up(org: Org, db: Database):
    cycle = await active_cycle(org)
    parent = await objective(org, cycle, "Company")
    goal = await objective(org, cycle, "Dispatch", parentId=parent)
    done = await key_result(org, goal, "Done")
    lagging = await key_result(org, goal, "Lagging")
    await check_in(org, done, 100)
    await check_in(org, lagging, 0)
    assert await progress(org, goal) == 0.5 and await progress(org, parent) == 0.5

    got = await ok(org, "archiveKeyResult", {"keyResultId": lagging}, KR)
    assert got["keyResult"] == {"id": lagging, "archived": True}
    assert await progress(org, goal) == 1.0 and await progress(org, parent) == 1.0
    await verified(db)
    archived = await events_of(org, "KEY_RESULT_ARCHIVED")
    assert [e["subject"]["id"] for e in archived] == [lagging]

    # Out of the objective's list on both read paths (planned, and the executor, which
    # answers the documents with fields the plan does not know); by id it is there.
    planned = "query($id: ID!) { node(id: $id) { ... on Objective { keyResults { id } } } }"
    general = (
        "query($id: ID!) { node(id: $id) { ... on Objective { keyResults { id archived } "
        "contributions { node { id } } } } }"
    )
    assert (await org.call(planned, {"id": goal}))["node"]["keyResults"] == [{"id": done}]
    node = (await org.call(general, {"id": goal}))["node"]
    assert node["keyResults"] == [{"id": done, "archived": False}]
    assert node["contributions"] == [{"node": {"id": done}}]
    listed = "{ objectives(first: 10) { edges { node { id keyResults { id } } } } }"
    by_id = {e["node"]["id"]: e["node"] for e in (await org.call(listed))["objectives"]["edges"]}
    assert by_id[goal]["keyResults"] == [{"id": done}]
    read = (
        "query($id: ID!) { node(id: $id) { ... on KeyResult { id archived "
        "checkIns { totalCount } } } }"
    )
    assert (await org.call(read, {"id": lagging}))["node"] == {
        "id": lagging,
        "archived": True,
        "checkIns": {"totalCount": 1},
    }

    # Who: the right to edit the objective; a hidden one is NOT_FOUND.
    viewer = await user(org, "Vic Viewer", role="VIEWER")
    mia = await user(org, "Mia Member")
    secret = await objective(org, cycle, "Secret", visibility="PRIVATE")
    secret_kr = await key_result(org, secret, "Secret KR")
    before = await event_count(db)
    await ok(org, "archiveKeyResult", {"keyResultId": lagging}, KR)  # again: nothing written
    assert await event_count(db) == before
    refused = await mutate(
        org, "archiveKeyResult", {"keyResultId": done}, KR, token_of(org, viewer)
    )
    assert code_of(refused)[0] == "FORBIDDEN"
    refused = await mutate(
        org, "archiveKeyResult", {"keyResultId": secret_kr}, KR, token_of(org, mia)
    )
    assert code_of(refused) == ("NOT_FOUND", ["keyResultId"])
    assert await event_count(db) == before


async def test_an_archived_key_result_takes_no_check_ins_edits_or_bindings(org: Org, db: Database):
    cycle = await active_cycle(org)
    goal = await objective(org, cycle, "Dispatch")
    kr = await key_result(org, goal, "Lagging")
    await check_in(org, kr, 10)
    await ok(org, "archiveKeyResult", {"keyResultId": kr}, KR)
    metric = (await ok(org, "createMetric", {"key": "lag", "name": "Lag"}, "metric { id }"))[
        "metric"
    ]["id"]
    before = await event_count(db)
    for name, input in [
        ("checkIn", {"keyResultId": kr, "value": 20}),
        ("updateKeyResult", {"keyResultId": kr, "title": "Renamed"}),
        ("bindKeyResult", {"keyResultId": kr, "metricId": metric}),
    ]:
        refused = await mutate(org, name, input, "keyResult { id }")
        code, field = code_of(refused)
        assert (code, field) == ("INVALID", ["keyResultId"]), (name, refused)
        assert "archived" in refused["userErrors"][0]["message"]
    assert await event_count(db) == before
    read = "query($id: ID!) { node(id: $id) { ... on KeyResult { title currentValue } } }"
    assert (await org.call(read, {"id": kr}))["node"] == {"title": "Lagging", "currentValue": 10}
    await verified(db)


async def test_archive_key_result_in_a_closed_cycle_is_cycle_closed(org: Org):
    cycle = await active_cycle(org, status="REVIEW")
    goal = await objective(org, cycle, "Late")
    kr = await key_result(org, goal)
    await ok(org, "setCycleStatus", {"cycleId": cycle, "status": "CLOSED"}, "cycle { id }")
    assert (
        code_of(await mutate(org, "archiveKeyResult", {"keyResultId": kr}, KR))[0] == "CYCLE_CLOSED"
    )
    assert (
        code_of(await mutate(org, "unarchiveObjective", {"objectiveId": goal}, OBJECTIVE))[0]
        == "CYCLE_CLOSED"
    )


async def test_unarchive_objective_brings_it_back_into_lists_and_roll_ups(org: Org, db: Database):
    cycle = await active_cycle(org)
    parent = await objective(org, cycle, "Company")
    goal = await objective(org, cycle, "Dispatch", parentId=parent)
    other = await objective(org, cycle, "Other", parentId=parent)
    await check_in(org, await key_result(org, goal), 100)
    await key_result(org, other)
    assert await progress(org, parent) == 0.5
    await ok(org, "archiveObjective", {"objectiveId": other}, "objective { id }")
    assert await progress(org, parent) == 1.0

    got = await ok(org, "unarchiveObjective", {"objectiveId": other}, OBJECTIVE)
    assert got["objective"]["archivedAt"] is None
    assert await progress(org, parent) == 0.5
    listed = "{ objectives(first: 10) { edges { node { id } } } }"
    ids = {e["node"]["id"] for e in (await org.call(listed))["objectives"]["edges"]}
    assert other in ids
    assert [e["subject"]["id"] for e in await events_of(org, "OBJECTIVE_UNARCHIVED")] == [other]
    await verified(db)
    viewer = await user(org, "Vic Viewer", role="VIEWER")
    await ok(org, "archiveObjective", {"objectiveId": other}, "objective { id }")
    refused = await mutate(
        org, "unarchiveObjective", {"objectiveId": other}, OBJECTIVE, token_of(org, viewer)
    )
    assert code_of(refused)[0] == "FORBIDDEN"
    # Hidden from the caller: NOT_FOUND, and it stays archived.
    mia = await user(org, "Mia Member")
    secret = await objective(org, cycle, "Secret", visibility="PRIVATE")
    await ok(org, "archiveObjective", {"objectiveId": secret}, "objective { id }")
    refused = await mutate(
        org, "unarchiveObjective", {"objectiveId": secret}, OBJECTIVE, token_of(org, mia)
    )
    assert code_of(refused) == ("NOT_FOUND", ["objectiveId"])
    q = "query($id: ID!) { node(id: $id) { ... on Objective { archivedAt } } }"
    assert (await org.call(q, {"id": secret}))["node"]["archivedAt"] is not None


# --- metrics ---------------------------------------------------------------------------


async def test_update_and_archive_a_metric(org: Org, db: Database):
    cycle = await active_cycle(org)
    goal = await objective(org, cycle, "Cost")
    kr = await key_result(org, goal, "Cost per order", type="DECREASE", start=4.2, target=3.57)
    created = await ok(
        org, "createMetric", {"key": "cost_per_order", "name": "Cost", "unit": "EUR"}, METRIC
    )
    metric = created["metric"]["id"]
    await ok(org, "bindKeyResult", {"keyResultId": kr, "metricId": metric}, "keyResult { id }")

    got = await ok(
        org,
        "updateMetric",
        {"metricId": metric, "name": "Cost per order", "description": "All warehouses"},
        METRIC,
    )
    assert got["metric"] == {
        "id": metric,
        "key": "cost_per_order",
        "name": "Cost per order",
        "unit": "EUR",
        "description": "All warehouses",
        "archived": False,
    }
    assert (await events_of(org, "METRIC_UPDATED"))[0]["after"] == {
        "name": "Cost per order",
        "description": "All warehouses",
    }
    assert code_of(await mutate(org, "updateMetric", {"metricId": metric, "name": ""}, METRIC)) == (
        "INVALID",
        ["name"],
    )

    archived = await ok(org, "archiveMetric", {"metricId": metric}, METRIC)
    assert archived["metric"]["archived"] is True
    q = "query($id: ID!) { node(id: $id) { ... on KeyResult { metric { id } } } }"
    assert (await org.call(q, {"id": kr}))["node"]["metric"] is None
    listed = (await org.call("{ metrics(first: 10) { edges { node { id } } } }"))["metrics"]
    assert listed["edges"] == []
    by_key = await org.call('{ metric(key: "cost_per_order") { id archived } }')
    assert by_key["metric"] == {"id": metric, "archived": True}
    assert len(await events_of(org, "METRIC_ARCHIVED")) == 1
    refused = await mutate(org, "bindKeyResult", {"keyResultId": kr, "metricId": metric}, KR)
    assert code_of(refused) == ("INVALID", ["metricId"])

    member = await user(org, "Mia Member")
    for name, input in (
        ("updateMetric", {"metricId": metric, "name": "x"}),
        ("archiveMetric", {"metricId": metric}),
    ):
        assert (
            code_of(await mutate(org, name, input, METRIC, token_of(org, member)))[0] == "FORBIDDEN"
        )
    await verified(db)


# --- across organizations ----------------------------------------------------------------


async def test_ids_of_another_organization_are_not_found_and_change_nothing(org: Org, db: Database):
    cycle = await active_cycle(org)
    ops = await team(org, "Operations")
    goal = await objective(org, cycle, "Mine")
    kr = await key_result(org, goal)
    await ok(org, "archiveObjective", {"objectiveId": goal}, "objective { id }")
    mia = await user(org, "Mia Member")
    await ok(org, "deactivateUser", {"userId": mia}, "user { id }")
    metric = (await ok(org, "createMetric", {"key": "pick_rate", "name": "Pick rate"}, METRIC))[
        "metric"
    ]["id"]
    other = await other_org(org)
    before = await event_count(db)
    calls = [
        ("updateTeam", {"teamId": ops, "name": "Mine now"}, TEAM, "teamId"),
        ("archiveTeam", {"teamId": ops}, TEAM, "teamId"),
        ("updateCycle", {"cycleId": cycle, "name": "Mine now"}, CYCLE, "cycleId"),
        ("updateUser", {"userId": mia, "role": "ADMIN"}, USER, "userId"),
        ("reactivateUser", {"userId": mia}, USER, "userId"),
        ("anonymizeUser", {"userId": mia}, USER, "userId"),
        ("archiveKeyResult", {"keyResultId": kr}, KR, "keyResultId"),
        ("unarchiveObjective", {"objectiveId": goal}, OBJECTIVE, "objectiveId"),
        ("updateMetric", {"metricId": metric, "name": "Mine now"}, METRIC, "metricId"),
        ("archiveMetric", {"metricId": metric}, METRIC, "metricId"),
    ]
    for name, input, selection, field in calls:
        refused = await mutate(other, name, input, selection)
        assert code_of(refused) == ("NOT_FOUND", [field]), (name, refused)
    own_team = await team(other, "Their team")
    refused = await mutate(other, "updateTeam", {"teamId": own_team, "parentId": ops}, TEAM)
    assert code_of(refused) == ("NOT_FOUND", ["parentId"])
    assert await event_count(db) == before + 1  # their own team only
    async with db.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT active, role FROM app_user WHERE id = :id"),
                {"id": decode_as(mia, "User")},
            )
        ).one()
    assert (row.active, row.role) == (False, "MEMBER")


# --- over a real WebSocket -----------------------------------------------------------------

UPDATE_USER = (
    "mutation($i: UpdateUserInput!) { updateUser(input: $i) { user { role } userErrors { code } } }"
)


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_a_role_change_closes_the_persons_sockets_with_4403(
    replicas, org: Org, db: Database, protocol: str
):
    server = await replicas()
    mia = await user(org, "Mia Member")
    token = token_of(org, mia)
    ws = await connect(server, token, protocol)
    await start(ws, protocol, "1", PROGRESS)
    watcher = await connect(server, org.admin_token, protocol)  # someone else's stays open
    await start(watcher, protocol, "1", PROGRESS)
    await asyncio.sleep(0.3)

    renamed = await graphql(
        server,
        org.admin_token,
        UPDATE_USER,
        {"i": {"userId": mia, "name": "Mia M."}},
    )
    assert renamed.json()["data"]["updateUser"] == {"user": {"role": "MEMBER"}, "userErrors": []}
    response = await graphql(
        server,
        org.admin_token,
        UPDATE_USER,
        {"i": {"userId": mia, "role": "VIEWER"}},
    )
    assert response.json()["data"]["updateUser"] == {"user": {"role": "VIEWER"}, "userErrors": []}
    code, reason, took = await closed(ws, 10)
    assert code == 4403 and reason == "credentials changed (the role is now VIEWER); reconnect"
    assert took < 5, f"closed only after {took:.2f} s"
    # They reconnect with their new rights; the admin's socket was left alone.
    again = await connect(server, token, protocol)
    await again.close()
    viewer = await graphql(server, token, "{ viewer { role } }")
    assert viewer.json()["data"]["viewer"]["role"] == "VIEWER"
    assert watcher.close_code is None
    await watcher.close()


async def test_archiving_a_key_result_reaches_progress_subscribers(
    replicas, org: Org, db: Database
):
    server = await replicas()
    cycle = await active_cycle(org)
    goal = await objective(org, cycle, "Dispatch")
    done = await key_result(org, goal, "Done")
    lagging = await key_result(org, goal, "Lagging")
    await check_in(org, done, 100)
    ws = await connect(server, org.admin_token, TRANSPORT)
    query = "subscription { progressChanged { changes { node { id } previousProgress progress } } }"
    await start(ws, TRANSPORT, "1", query)
    await asyncio.sleep(0.3)
    await ok(org, "archiveKeyResult", {"keyResultId": lagging}, KR)
    message = await receive(ws, 10, "1")
    changes = message["payload"]["data"]["progressChanged"]["changes"]
    assert changes == [{"node": {"id": goal}, "previousProgress": 0.5, "progress": 1.0}]
    await ws.close()


# --- the command ---------------------------------------------------------------------------


async def test_okr_user_role_reactivate_and_anonymize(bin_okr, database_url, tmp_path, org: Org):
    env = env_for(database_url, tmp_path)
    mia = await user(org, "Mia Member")
    slug = "acme-logistics"
    code, out, err = await okr(
        bin_okr, env, "user", "role", "--org", slug, "mia.member@acme.example", "ADMIN"
    )
    assert code == 0 and out.strip() == "mia.member@acme.example is now ADMIN", err
    q = "query($id: ID!) { node(id: $id) { ... on User { role active name } } }"
    assert (await org.call(q, {"id": mia}))["node"]["role"] == "ADMIN"
    # The last active admin is not demoted from the command either.
    await ok(org, "updateUser", {"userId": mia, "role": "MEMBER"}, USER)
    code, _out, err = await okr(
        bin_okr, env, "user", "role", "--org", slug, "admin@acme.example", "VIEWER"
    )
    assert code == 1 and "last active admin" in err

    await ok(org, "deactivateUser", {"userId": mia}, "user { id }")
    code, out, err = await okr(
        bin_okr, env, "user", "reactivate", "--org", slug, "mia.member@acme.example"
    )
    assert code == 0 and "is active" in out, err
    assert (await org.call(q, {"id": mia}))["node"]["active"] is True

    code, _out, err = await okr(
        bin_okr, env, "user", "anonymize", "--org", slug, "mia.member@acme.example"
    )
    assert code == 2 and "cannot be undone" in err
    assert (await org.call(q, {"id": mia}))["node"]["name"] == "Mia Member"
    code, out, err = await okr(
        bin_okr, env, "user", "anonymize", "--org", slug, "mia.member@acme.example", "--yes"
    )
    assert code == 0 and "cannot be undone" in out, err
    assert (await org.call(q, {"id": mia}))["node"] == {
        "role": "MEMBER",
        "active": False,
        "name": "Anonymized user",
    }
    pk = decode_as(mia, "User")
    code, _out, err = await okr(
        bin_okr, env, "user", "reactivate", "--org", slug, f"anonymized-{pk}@anonymized.invalid"
    )
    assert code == 1 and "anonymized" in err
    code, _out, err = await okr(
        bin_okr, env, "user", "role", "--org", slug, "nobody@acme.example", "ADMIN"
    )
    assert code == 1 and "not found" in err
