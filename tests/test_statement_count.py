"""Every relation goes through a data loader: the team dashboard costs the same number
of SQL statements for 5 objectives as for 50."""

from __future__ import annotations

from datetime import date

from service.db import Database
from service.usecases import cycles, key_results, objectives, organizations
from tests.conftest import Org

DASHBOARD = """
query($team: ID!, $cycle: ID!) { node(id: $team) { ... on Team {
  name
  objectives(cycleId: $cycle, first: 100) { totalCount edges { node {
    id title progress expectedProgress status stale
    owner { name } team { name } cycle { name status }
    parent { title }
    keyResults {
      title progress status stale confidence
      lastCheckIn { value createdAt author { name } }
    }
    contributions { weight share }
  } } }
} } }
"""


async def dashboard_statements(org: Org, db: Database, n: int, query: str = DASHBOARD) -> int:
    p = org.admin
    team = await db.transaction(lambda s: organizations.create_team(s, p, f"Team {n}", None))
    owner = await db.transaction(
        lambda s: organizations.create_user(s, p, f"Owner {n}", f"owner{n}@acme.example", "MEMBER")
    )
    cycle = await db.transaction(
        lambda s: cycles.create_cycle(s, p, f"Cycle {n}", date(2026, 10, 1), date(2026, 12, 31))
    )
    await db.transaction(lambda s: cycles.set_cycle_status(s, p, cycle.id, "ACTIVE"))
    parent = None
    for i in range(n):
        obj = await db.transaction(
            lambda s, i=i, parent=parent: objectives.create_objective(
                s,
                p,
                cycle_id=cycle.id,
                title=f"O{i}",
                team_id=team.id,
                owner_id=owner.id,
                parent_id=parent,
            )
        )
        parent = parent or obj.id
        for k in range(2):
            kr = await db.transaction(
                lambda s, o=obj.id, k=k: key_results.create_key_result(
                    s,
                    p,
                    objective_id=o,
                    title=f"K{k}",
                    type="INCREASE",
                    start_value=0,
                    target_value=10,
                )
            )
            await db.transaction(
                lambda s, kr=kr.id: key_results.check_in(s, p, key_result_id=kr, value=3)
            )
    from schema.ids import encode

    response = await org.client.post(
        "/graphql",
        json={
            "query": query,
            "variables": {"team": encode("Team", team.id), "cycle": encode("Cycle", cycle.id)},
        },
        headers={"Authorization": f"Bearer {org.admin_token}"},
    )
    body = response.json()
    assert "errors" not in body, body
    edges = body["data"]["node"]["objectives"]["edges"]
    assert len(edges) == n
    assert all(len(e["node"]["keyResults"]) == 2 for e in edges)
    assert all(e["node"]["keyResults"][0]["lastCheckIn"]["value"] == 3 for e in edges)
    return int(response.headers["x-sql-statements"])


async def test_dashboard_statement_count_does_not_grow(org: Org, db: Database):
    five = await dashboard_statements(org, db, 5)
    fifty = await dashboard_statements(org, db, 50)
    print(f"dashboard statements: {five} for 5 objectives, {fifty} for 50")
    assert five == fifty
    assert five <= 15


# What the plan covers (schema/plan/): the dashboard without `contributions`.
PLANNED_DASHBOARD = DASHBOARD.replace("contributions { weight share }", "")


async def test_planned_dashboard_statement_count_does_not_grow(org: Org, db: Database):
    from schema import plan as fastpath

    before = fastpath.SWITCH.planned
    five = await dashboard_statements(org, db, 5, PLANNED_DASHBOARD)
    fifty = await dashboard_statements(org, db, 50, PLANNED_DASHBOARD)
    assert fastpath.SWITCH.planned >= before + 2, "the plan did not answer"
    print(f"planned dashboard statements: {five} for 5 objectives, {fifty} for 50")
    assert five == fifty
    # auth, team, its objectives, their total, cycles, owners, teams, parents, key
    # results, last check-ins, check-in authors: one statement each, whatever the size.
    assert five <= 12
