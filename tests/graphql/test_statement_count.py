"""Every relation goes through a data loader: the team dashboard costs the same number
of SQL statements for 5 objectives as for 50."""

from __future__ import annotations

from datetime import date

from sqlalchemy import text

from service.db import Database
from service.domain import enums as domain_enums
from service.usecases import commands, cycles, key_results, objectives, organizations
from tests.factories import Org, misses, new_misses

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
    team = await db.transaction(
        lambda s: organizations.create_team(s, p, commands.CreateTeam(f"Team {n}", None))
    )
    owner = await db.transaction(
        lambda s: organizations.create_user(
            s,
            p,
            commands.CreateUser(f"Owner {n}", f"owner{n}@acme.example", domain_enums.Role.MEMBER),
        )
    )
    cycle = await db.transaction(
        lambda s: cycles.create_cycle(
            s, p, commands.CreateCycle(f"Cycle {n}", date(2026, 10, 1), date(2026, 12, 31))
        )
    )
    await db.transaction(
        lambda s: cycles.set_cycle_status(
            s, p, commands.SetCycleStatus(cycle.id, domain_enums.CycleStatus.ACTIVE)
        )
    )
    parent = None
    for i in range(n):
        obj = await db.transaction(
            lambda s, i=i, parent=parent: objectives.create_objective(
                s,
                p,
                commands.CreateObjective(
                    cycle_id=cycle.id,
                    title=f"O{i}",
                    team_id=team.id,
                    owner_id=owner.id,
                    parent_id=parent,
                ),
            )
        )
        parent = parent or obj.id
        for k in range(2):
            kr = await db.transaction(
                lambda s, o=obj.id, k=k: key_results.create_key_result(
                    s,
                    p,
                    commands.CreateKeyResult(
                        objective_id=o,
                        title=f"K{k}",
                        type=domain_enums.KeyResultType.INCREASE,
                        start_value=0,
                        target_value=10,
                    ),
                )
            )
            await db.transaction(
                lambda s, kr=kr.id: key_results.check_in(
                    s, p, commands.CheckIn(key_result_id=kr, value=3)
                )
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
    # Whatever the size: auth, team, its objectives (cycle, owner, team joined), their
    # total, parents, key results (last check-in joined), check-in authors.


async def _bench_statements(org: Org, db: Database, n: int) -> dict[str, int]:
    """The bench's reads (bench/load.py) over a cycle of `n` objectives: the statements
    each costs, all answered by the plan."""
    from bench.load import Q1, Q2, Q3, Q4
    from schema import plan
    from schema.ids import encode

    await dashboard_statements(org, db, n, PLANNED_DASHBOARD)
    async with db.engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT o.team_id, o.cycle_id, k.id FROM key_result k "
                "JOIN objective o ON o.id = k.objective_id "
                "WHERE k.organization_id = :org AND k.last_check_in_id IS NOT NULL "
                "ORDER BY k.id DESC LIMIT 1"
            ),
            {"org": org.admin.organization_id},
        )
        team, cycle, kr = found.one()
    variables = {
        "team": encode("Team", team),
        "cycle": encode("Cycle", cycle),
        "kr": encode("KeyResult", kr),
    }
    out = {}
    missed_before = misses()
    for name, doc, keys in (
        ("Q1", Q1, ("team", "cycle")),
        ("Q2", Q2, ("cycle",)),
        ("Q3", Q3, ("kr",)),
        ("Q4", Q4, ("kr",)),
    ):
        before = plan.SWITCH.planned
        response = await org.client.post(
            "/graphql",
            json={"query": doc, "variables": {k: variables[k] for k in keys}},
            headers={"Authorization": f"Bearer {org.admin_token}"},
        )
        body = response.json()
        assert "errors" not in body, body
        assert body["data"], body
        assert plan.SWITCH.planned == before + 1, f"{name}: the plan did not answer"
        out[name] = int(response.headers["x-sql-statements"])
    assert not new_misses(missed_before), f"read past the plan: {new_misses(missed_before)}"
    return out


async def test_bench_reads_statement_counts(org: Org, db: Database):
    """Issue 11 (read2): the to-one rows come in their level's statement and a key
    result's check-in page with the key result, so after authentication Q1 costs the team,
    its objectives and their key results; Q2 the page and the descendants; Q3 one
    statement; Q4 two (the node with its page, the forecast's history)."""
    small = await _bench_statements(org, db, 3)
    large = await _bench_statements(org, db, 12)
    print(f"bench statements: {small} and {large}")
    assert small == large
    auth = 1
    price = 1  # Q2's descendants and Q4's forecast: the statistic the cost reads first
    assert small == {
        "Q1": auth + 3,
        "Q2": auth + price + 2,
        "Q3": auth + 1,
        "Q4": auth + price + 2,
    }


# Issue 21: each team's progress in a cycle, for a page of teams, in a few statements.
CYCLE_TEAMS = """
query($cycle: ID!) {
  node(id: $cycle) { ... on Cycle {
    teams(first: 100) { totalCount pageInfo { hasNextPage endCursor } edges { node {
      team { name } objectives progress expectedProgress byStatus { status count } stale
    } } }
  } }
}"""
TEAMS_PROGRESS = """
query($cycle: ID!) {
  teams(last: 100) { edges { node { name progress(cycleId: $cycle) { progress stale } } } }
}"""


async def cycle_teams_statements(org: Org, db: Database, n: int) -> tuple[int, int]:
    """A cycle with `n` teams, each with a top objective (and an aligned child, and a key
    result checked in): the statements of Cycle.teams and Team.progress over them."""
    from schema.ids import encode

    p = org.admin
    cycle = await db.transaction(
        lambda s: cycles.create_cycle(
            s, p, commands.CreateCycle(f"Teams {n}", date(2026, 10, 1), date(2026, 12, 31))
        )
    )
    await db.transaction(
        lambda s: cycles.set_cycle_status(
            s, p, commands.SetCycleStatus(cycle.id, domain_enums.CycleStatus.ACTIVE)
        )
    )
    for i in range(n):
        team = await db.transaction(
            lambda s, i=i: organizations.create_team(
                s, p, commands.CreateTeam(f"Team {n}-{i:03}", None)
            )
        )
        top = await db.transaction(
            lambda s, t=team.id: objectives.create_objective(
                s, p, commands.CreateObjective(cycle_id=cycle.id, title="Top", team_id=t)
            )
        )
        if i < 3:  # a few with more under them: the count must not depend on it
            await db.transaction(
                lambda s, t=team.id, top=top.id: objectives.create_objective(
                    s,
                    p,
                    commands.CreateObjective(
                        cycle_id=cycle.id, title="Child", team_id=t, parent_id=top
                    ),
                )
            )
            kr = await db.transaction(
                lambda s, o=top.id: key_results.create_key_result(
                    s,
                    p,
                    commands.CreateKeyResult(
                        objective_id=o,
                        title="K",
                        type=domain_enums.KeyResultType.INCREASE,
                        start_value=0,
                        target_value=10,
                    ),
                )
            )
            await db.transaction(
                lambda s, kr=kr.id: key_results.check_in(
                    s, p, commands.CheckIn(key_result_id=kr, value=3)
                )
            )
    counts = []
    for query in (CYCLE_TEAMS, TEAMS_PROGRESS):
        response = await org.client.post(
            "/graphql",
            json={"query": query, "variables": {"cycle": encode("Cycle", cycle.id)}},
            headers={"Authorization": f"Bearer {org.admin_token}"},
        )
        body = response.json()
        assert "errors" not in body, body
        counts.append(int(response.headers["x-sql-statements"]))
        if query is CYCLE_TEAMS:
            listed = body["data"]["node"]["teams"]
            assert listed["totalCount"] == n
            assert len(listed["edges"]) == min(n, 100)
            assert listed["edges"][0]["node"]["progress"] == 0.15  # key result 0.3, child 0
            assert all(e["node"]["objectives"] == 1 for e in listed["edges"])
        else:
            shown = body["data"]["teams"]["edges"]
            assert len(shown) == min(n, 100)  # the newest teams: this cycle's
            assert all(e["node"]["progress"]["progress"] is not None for e in shown)
    return counts[0], counts[1]


async def test_cycle_teams_statement_count_does_not_grow(org: Org, db: Database):
    five = await cycle_teams_statements(org, db, 5)
    many = await cycle_teams_statements(org, db, 200)
    print(f"cycle teams statements: {five} for 5 teams, {many} for 200")
    assert five == many
    # Cycle.teams: auth, the cycle, its page of teams, their total, the page's top
    # objectives. Team.progress over a page of teams: auth, the page, the cycle, the
    # top objectives of all of them.
    assert many[0] <= 5 and many[1] <= 4
