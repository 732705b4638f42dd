"""Access: every mutation against every role, visibility on every read path, and one
organization's ids tried through every entry point of another."""

from __future__ import annotations

from typing import Any

import pytest

from schema.ids import decode_as, encode
from service.db import Database
from service.usecases import organizations
from tests import factories as h
from tests.factories import Org


class World:
    """Teams A and B; an admin, a member of each team, a viewer, and a service key."""

    async def build(self, org: Org, db: Database) -> World:
        self.org = org
        self.team_a = await h.team(org, "Team A")
        self.team_b = await h.team(org, "Team B")
        self.member_a = await h.user(org, "Member A")
        self.member_b = await h.user(org, "Member B")
        self.viewer = await h.user(org, "Vera Viewer", "VIEWER")
        for team, user in ((self.team_a, self.member_a), (self.team_b, self.member_b)):
            await h.ok(org, "addTeamMember", {"teamId": team, "userId": user}, "team { id }")
        _key_row, self.service_key = await db.transaction(
            lambda s: organizations.create_api_key(s, org.id, "logistics")
        )
        self.tokens = {
            "ADMIN": org.admin_token,
            "MEMBER_OWNING": org.token(decode_as(self.member_a, "User")),
            "MEMBER_OTHER": org.token(decode_as(self.member_b, "User")),
            "VIEWER": org.token(decode_as(self.viewer, "User")),
            "SERVICE": self.service_key,
        }
        self.cycle = await h.active_cycle(org)
        self.review = await h.active_cycle(org, status="PLANNING")
        self.root = await h.objective(org, self.cycle, "Company root")
        return self

    async def team_objective(self, cycle: str | None = None, **extra: Any) -> str:
        return await h.objective(
            self.org, cycle or self.cycle, "Team A's", teamId=self.team_a, **extra
        )


@pytest.fixture
async def world(org: Org, db: Database) -> World:
    return await World().build(org, db)


ROLES = ["ADMIN", "MEMBER_OWNING", "MEMBER_OTHER", "VIEWER", "SERVICE"]
ADMIN_ONLY = {"ADMIN"}
EDITORS = {"ADMIN", "MEMBER_OWNING"}


async def scenario(world: World, name: str) -> tuple[dict, set[str]]:
    """The input a mutation is tried with, and the roles allowed to run it."""
    o = world.org
    if name == "createTeam":
        return {"name": "New team"}, ADMIN_ONLY
    if name == "addTeamMember":
        return {"teamId": world.team_a, "userId": world.viewer}, ADMIN_ONLY
    if name == "createUser":
        return {"name": "New", "email": "new@acme.example"}, ADMIN_ONLY
    if name == "createCycle":
        return {"name": "H1", "startsOn": "2027-01-01", "endsOn": "2027-06-30"}, ADMIN_ONLY
    if name == "setCycleStatus":
        return {"cycleId": world.review, "status": "ACTIVE"}, ADMIN_ONLY
    if name == "createObjective":
        return {"cycleId": world.cycle, "title": "T", "teamId": world.team_a}, EDITORS
    if name == "updateObjective":
        return {"objectiveId": await world.team_objective(), "title": "Renamed"}, EDITORS
    if name == "alignObjective":
        return {"objectiveId": await world.team_objective(), "parentId": world.root}, EDITORS
    if name == "archiveObjective":
        return {"objectiveId": await world.team_objective()}, EDITORS
    if name == "createKeyResult":
        return {
            "objectiveId": await world.team_objective(),
            "title": "K",
            "type": "MILESTONE",
        }, EDITORS
    if name == "updateKeyResult":
        kr = await h.key_result(o, await world.team_objective())
        return {"keyResultId": kr, "title": "Renamed"}, EDITORS
    if name == "checkIn":
        kr = await h.key_result(o, await world.team_objective())
        return {"keyResultId": kr, "value": 5}, EDITORS | {"SERVICE"}
    if name == "scoreKeyResult":
        cycle = await h.active_cycle(o, status="REVIEW")
        kr = await h.key_result(o, await world.team_objective(cycle))
        return {"keyResultId": kr, "score": 0.5}, EDITORS
    if name == "reflectOnObjective":
        cycle = await h.active_cycle(o, status="REVIEW")
        return {"objectiveId": await world.team_objective(cycle), "lessons": "L"}, EDITORS
    if name == "addComment":
        return {"subjectId": await world.team_objective(), "body": "Nice"}, {
            "ADMIN",
            "MEMBER_OWNING",
            "MEMBER_OTHER",
        }
    raise AssertionError(name)


MUTATIONS = [
    "createTeam",
    "addTeamMember",
    "createUser",
    "createCycle",
    "setCycleStatus",
    "createObjective",
    "updateObjective",
    "alignObjective",
    "archiveObjective",
    "createKeyResult",
    "updateKeyResult",
    "checkIn",
    "scoreKeyResult",
    "reflectOnObjective",
    "addComment",
]


@pytest.mark.parametrize("name", MUTATIONS)
async def test_every_mutation_against_every_role(world: World, name: str):
    allowed_seen = []
    # The admin goes last: a success may change what the others would meet.
    for role in [r for r in ROLES if r != "ADMIN"] + ["ADMIN"]:
        inp, allowed = await scenario(world, name)
        if name == "createUser":
            inp = {**inp, "email": f"new-{role.lower()}@acme.example"}
        payload = await h.mutate(world.org, name, inp, "__typename", token=world.tokens[role])
        codes = [e["code"] for e in payload["userErrors"]]
        if role in allowed:
            assert codes == [], (role, payload)
            allowed_seen.append(role)
        else:
            assert codes == ["FORBIDDEN"], (role, payload)
    assert set(allowed_seen) == (await scenario(world, name))[1]


async def test_visibility_on_every_read_path(world: World, org: Org):
    o = org
    team_only = await world.team_objective(visibility="TEAM", parentId=world.root)
    private = await h.objective(
        o,
        world.cycle,
        "Member A's private",
        visibility="PRIVATE",
        ownerId=world.member_a,
        parentId=team_only,
    )
    kr = await h.key_result(o, private)
    await h.check_in(o, kr, 100)
    await h.ok(o, "addComment", {"subjectId": private, "body": "secret note"}, "comment { id }")
    q_tree = """query($id: ID!) { node(id: $id) { ... on Objective {
        progress children { totalCount edges { node { id } } }
        descendants { id } contributions { node { id } share }
    } } }"""
    expectations = {
        # role: (sees team_only, sees private)
        "ADMIN": (True, True),
        "MEMBER_OWNING": (True, True),
        "MEMBER_OTHER": (False, False),
        "VIEWER": (False, False),
        "SERVICE": (False, False),
    }
    for role, (sees_team, sees_private) in expectations.items():
        token = world.tokens[role]
        node = "query($id: ID!) { node(id: $id) { id } }"
        got = {
            gid: (await o.call(node, {"id": gid}, token=token))["node"] is not None
            for gid in (team_only, private, kr)
        }
        assert got == {team_only: sees_team, private: sees_private, kr: sees_private}, role
        nodes = (
            await o.call(
                "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
                {"ids": [team_only, private]},
                token=token,
            )
        )["nodes"]
        assert [n is not None for n in nodes] == [sees_team, sees_private], role
        listed = await o.call(
            "{ objectives(first: 100) { totalCount edges { node { id } } } }", token=token
        )
        ids = {e["node"]["id"] for e in listed["objectives"]["edges"]}
        assert (team_only in ids, private in ids) == (sees_team, sees_private), role
        assert listed["objectives"]["totalCount"] == len(ids), role
        filtered = await o.call(
            "query($t: ID!) { objectives(filter: {teamId: $t}) { edges { node { id } } } }",
            {"t": world.team_a},
            token=token,
        )
        assert (
            team_only in {e["node"]["id"] for e in filtered["objectives"]["edges"]}
        ) == sees_team, role
        root = (await o.call(q_tree, {"id": world.root}, token=token))["node"]
        assert root["progress"] == 1.0  # the roll-up counts what is hidden ...
        shown = [e["node"]["id"] for e in root["children"]["edges"]]
        assert shown == ([team_only] if sees_team else []), role  # ... and never shows it
        assert root["children"]["totalCount"] == len(shown), role
        assert {d["id"] for d in root["descendants"]} == ({team_only} if sees_team else set()) | (
            {private} if sees_private else set()
        ), role
        assert [c["node"]["id"] for c in root["contributions"]] == shown, role
        if sees_private:
            anc = await o.call(
                "query($id: ID!) { node(id: $id) { ... on Objective { ancestors { id } } } }",
                {"id": private},
                token=token,
            )
            assert [a["id"] for a in anc["node"]["ancestors"]] == [team_only, world.root]
        feed = await o.call(
            "{ events(first: 100) { edges { node { kind subject { id } "
            "changes { node { id } } } } } }",
            token=token,
        )
        subjects = {
            e["node"]["subject"] and e["node"]["subject"]["id"] for e in feed["events"]["edges"]
        }
        changed = {c["node"]["id"] for e in feed["events"]["edges"] for c in e["node"]["changes"]}
        if not sees_private:
            assert private not in subjects and kr not in subjects, role
            assert private not in changed and kr not in changed, role
        if not sees_team:
            assert team_only not in subjects and team_only not in changed, role


async def test_tenant_isolation(world: World, org: Org, client, db: Database):
    # A second organization with one of everything.
    other_org, other_admin = await db.transaction(
        lambda s: organizations.create_organization(s, "Rival Freight", "boss@rival.example")
    )
    other = Org(client, db, other_org.id, other_admin.id)
    cycle = await h.active_cycle(other)
    team = await h.team(other, "Rival team")
    user = await h.user(other, "Rival user")
    obj = await h.objective(other, cycle, "Rival objective", teamId=team)
    kr = await h.key_result(other, obj)
    check_in = (await h.check_in(other, kr, 10))["checkIn"]["id"]
    comment = (
        await h.ok(other, "addComment", {"subjectId": obj, "body": "ours"}, "comment { id }")
    )["comment"]["id"]
    feed = await other.call("{ events(first: 1) { edges { node { id } } } }")
    event = feed["events"]["edges"][0]["node"]["id"]
    foreign = [
        encode("Organization", other_org.id),
        cycle,
        team,
        user,
        obj,
        kr,
        check_in,
        comment,
        event,
    ]

    for token in world.tokens.values():
        for gid in foreign:
            node = await org.call(
                "query($id: ID!) { node(id: $id) { id } }", {"id": gid}, token=token
            )
            assert node["node"] is None, gid
        nodes = await org.call(
            "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": foreign}, token=token
        )
        assert nodes["nodes"] == [None] * len(foreign)
    for filter_ in ({"cycleId": cycle}, {"teamId": team}, {"ownerId": user}, {"parentId": obj}):
        listed = await org.call(
            "query($f: ObjectiveFilter) { objectives(filter: $f) { totalCount } }", {"f": filter_}
        )
        assert listed["objectives"]["totalCount"] == 0
    mine = await org.call("{ events(first: 100) { edges { node { id } } } }")
    assert event not in {e["node"]["id"] for e in mine["events"]["edges"]}
    tries = [
        ("addTeamMember", {"teamId": team, "userId": world.member_a}),
        ("addTeamMember", {"teamId": world.team_a, "userId": user}),
        ("createTeam", {"name": "x", "parentId": team}),
        ("setCycleStatus", {"cycleId": cycle, "status": "REVIEW"}),
        ("createObjective", {"cycleId": cycle, "title": "x"}),
        ("createObjective", {"cycleId": world.cycle, "title": "x", "teamId": team}),
        ("createObjective", {"cycleId": world.cycle, "title": "x", "ownerId": user}),
        ("createObjective", {"cycleId": world.cycle, "title": "x", "parentId": obj}),
        ("updateObjective", {"objectiveId": obj, "title": "x"}),
        ("alignObjective", {"objectiveId": obj, "parentId": None}),
        ("alignObjective", {"objectiveId": world.root, "parentId": obj}),
        ("archiveObjective", {"objectiveId": obj}),
        ("createKeyResult", {"objectiveId": obj, "title": "x", "type": "MILESTONE"}),
        ("updateKeyResult", {"keyResultId": kr, "title": "x"}),
        ("checkIn", {"keyResultId": kr, "value": 1}),
        ("scoreKeyResult", {"keyResultId": kr, "score": 1}),
        ("reflectOnObjective", {"objectiveId": obj, "lessons": "x"}),
        ("addComment", {"subjectId": obj, "body": "x"}),
        ("addComment", {"subjectId": kr, "body": "x"}),
    ]
    before = (await other.call("{ events { totalCount } }"))["events"]["totalCount"]
    for name, inp in tries:
        payload = await h.mutate(org, name, inp, "__typename")
        assert [e["code"] for e in payload["userErrors"]] == ["NOT_FOUND"], (name, payload)
    after = (await other.call("{ events { totalCount } }"))["events"]["totalCount"]
    assert after == before  # nothing of theirs changed
