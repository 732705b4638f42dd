"""Thousands of generated queries and mutations, as a member, a viewer and a service
key: no response is an internal error, none shows what the caller may not see (a
PRIVATE objective, another team's TEAM objective, their key results, check-in notes
and comments), and the stored roll-ups stay exact afterwards."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import mutations, nodes, queries

from service import demo
from service.auth import issue_token
from service.db import Database
from service.usecases import organizations
from service.verify import verify, verify_event_sequences
from tests.factories import JWT_SECRET, ROOT

SDL = (ROOT / "schema" / "schema.graphql").read_text()
EXAMPLES = 1500


def _ids(extra: tuple[str, ...] = ()) -> list[str]:
    from schema.ids import encode

    real = [*extra] + [
        encode(t, i)
        for t in (
            "Objective",
            "KeyResult",
            "Team",
            "Cycle",
            "User",
            "CheckIn",
            "Comment",
            "Event",
            "Organization",
        )
        for i in range(1, 12)
    ]
    return [*real, "garbage", "", "T2JqZWN0aXZlOi0x", "VXNlcjo5OTk5OTk5OTk5OTk5OTk5OTk5"]


def _operations(extra_ids: tuple[str, ...]) -> st.SearchStrategy[str]:
    scalars = {
        "ID": st.sampled_from(_ids(extra_ids)).map(nodes.String),
        "Date": st.dates().map(lambda d: nodes.String(d.isoformat())),
        "DateTime": st.datetimes().map(lambda d: nodes.String(d.isoformat() + "Z")),
    }
    return queries(SDL, custom_scalars=scalars) | mutations(SDL, custom_scalars=scalars)


def generate(count: int, extra_ids: tuple[str, ...] = ()) -> list[str]:
    """Draw `count` operations (the same ones on every run)."""
    drawn: list[str] = []
    operations = _operations(extra_ids)

    @settings(
        max_examples=count,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(operation=operations)
    def collect(operation: str) -> None:
        drawn.append(operation)

    collect()
    return drawn


SECRET = "zq-secret"


async def _hidden_things(client, admin_token: str) -> tuple[str, ...]:
    """A PRIVATE objective of the admin's and a TEAM objective of a team with no other
    members, each with a key result, a check-in note and a comment that carry SECRET;
    returns their ids (added to the generated operations' id pool)."""

    async def call(query: str, variables: dict) -> dict:
        r = await client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        body = r.json()
        assert "errors" not in body, body
        (payload,) = body["data"].values()
        assert payload.get("userErrors", []) == [], payload
        return payload

    cycles = await client.post(
        "/graphql",
        json={"query": "{ cycles(status: ACTIVE, first: 1) { edges { node { id } } } }"},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    cycle = cycles.json()["data"]["cycles"]["edges"][0]["node"]["id"]
    team = (
        await call(
            "mutation($i: CreateTeamInput!) { createTeam(input: $i) { team { id } userErrors "
            "{ code } } }",
            {"i": {"name": "Audit"}},
        )
    )["team"]["id"]
    found: list[str] = []
    for visibility, team_id in (("PRIVATE", None), ("TEAM", team)):
        o = (
            await call(
                "mutation($i: CreateObjectiveInput!) { createObjective(input: $i) "
                "{ objective { id } userErrors { code } } }",
                {
                    "i": {
                        "cycleId": cycle,
                        "title": f"{SECRET} {visibility} objective",
                        "description": f"{SECRET} description",
                        "visibility": visibility,
                        "teamId": team_id,
                    }
                },
            )
        )["objective"]["id"]
        kr = (
            await call(
                "mutation($i: CreateKeyResultInput!) { createKeyResult(input: $i) "
                "{ keyResult { id } userErrors { code } } }",
                {
                    "i": {
                        "objectiveId": o,
                        "title": f"{SECRET} key result",
                        "type": "INCREASE",
                        "startValue": 0,
                        "targetValue": 10,
                    }
                },
            )
        )["keyResult"]["id"]
        ci = (
            await call(
                "mutation($i: CheckInInput!) { checkIn(input: $i) "
                "{ checkIn { id } userErrors { code } } }",
                {"i": {"keyResultId": kr, "value": 4, "note": f"{SECRET} note"}},
            )
        )["checkIn"]["id"]
        comment = (
            await call(
                "mutation($i: AddCommentInput!) { addComment(input: $i) "
                "{ comment { id } userErrors { code } } }",
                {"i": {"subjectId": o, "body": f"{SECRET} comment"}},
            )
        )["comment"]["id"]
        found += [o, kr, ci, comment]
    events = await client.post(
        "/graphql",
        json={"query": "{ events(first: 100) { edges { node { id } } } }"},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    found += [e["node"]["id"] for e in events.json()["data"]["events"]["edges"]][-12:]
    return tuple(found)


async def _caller(client, db: Database, role: str, org_id: int) -> str:
    if role == "SERVICE":
        async with db.sessions() as s, s.begin():
            _row, key = await organizations.create_api_key(s, org_id, "fuzz")
        return key
    email = {"MEMBER": "sam@northwind.example", "VIEWER": "finance@northwind.example"}[role]
    async with db.sessions() as s:
        person = await organizations.user_by_email(s, org_id, email)
    return issue_token(JWT_SECRET, person.id, org_id)


# A few hundred operations per caller in the default suite; the full count (the member
# gets the most, the viewer and the service key, which may do less, fewer) is a system
# test, which .ci/run runs.
@pytest.mark.parametrize(
    ("role", "examples"),
    [
        ("MEMBER", 200),
        ("VIEWER", 100),
        ("SERVICE", 100),
        pytest.param("MEMBER", EXAMPLES, marks=pytest.mark.system, id="MEMBER-full"),
        pytest.param("VIEWER", 500, marks=pytest.mark.system, id="VIEWER-full"),
        pytest.param("SERVICE", 500, marks=pytest.mark.system, id="SERVICE-full"),
    ],
)
async def test_generated_operations_never_fail_internally_nor_leak(
    client, db: Database, role: str, examples: int
):
    org_id, admin_id = await demo.seed(db)
    hidden = await _hidden_things(client, issue_token(JWT_SECRET, admin_id, org_id))
    token = await _caller(client, db, role, org_id)
    operations = generate(examples, hidden)
    assert len(operations) >= examples * 2 // 3
    failures = []
    leaks = []
    for operation in operations:
        r = await client.post(
            "/graphql", json={"query": operation}, headers={"Authorization": f"Bearer {token}"}
        )
        if r.status_code not in (200, 400) or "INTERNAL_SERVER_ERROR" in r.text:
            failures.append((operation, r.status_code, r.text[:300]))
        if SECRET in r.text:
            leaks.append((operation, r.text[:500]))
    assert failures == [], failures[:3]
    assert leaks == [], leaks[:3]
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        assert mismatches == []
        assert await verify_event_sequences(conn) == []
