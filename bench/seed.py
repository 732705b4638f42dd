"""`okr bench seed --scale N`: an organization at scale, loaded with COPY.

Scale 1: 200 teams three levels deep, one active cycle, 2,000 objectives aligned four
deep, 8,000 key results and 200,000 check-ins. Stored progress is computed with the
same pure rules the use cases use, so `okr verify` is clean afterwards.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import asyncpg

from service.domain import rules
from service.domain.enums import KeyResultType
from service.domain.rules import Part

TEAMS = (8, 6, 3)  # departments, teams per department, squads per team: 8 + 48 + 144
OBJECTIVES = (10, 90, 400, 1500)  # per alignment level
KEY_RESULTS_PER_OBJECTIVE = 4
CHECK_INS_PER_KEY_RESULT = 25


async def _next_id(conn: asyncpg.Connection, table: str) -> int:
    return (await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {table}")) + 1


async def seed(dsn: str, scale: int = 1, slug: str | None = None) -> dict:
    started = time.perf_counter()
    rng = random.Random(scale)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            org_id = await conn.fetchval(
                "INSERT INTO organization (name, slug) VALUES ($1, $2) RETURNING id",
                f"Bench scale {scale}",
                slug or f"bench-{scale}-{int(time.time())}",
            )
            counts = await _load(conn, org_id, scale, rng)
            for table in ("app_user", "team", "cycle", "objective", "key_result", "check_in"):
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    counts["organization_id"] = org_id
    counts["seconds"] = round(time.perf_counter() - started, 1)
    return counts


async def _load(conn: asyncpg.Connection, org: int, scale: int, rng: random.Random) -> dict:
    now = datetime.now(UTC)
    today = now.date()
    starts_on, ends_on = today - timedelta(days=45), today + timedelta(days=45)
    cycle_id = await conn.fetchval(
        "INSERT INTO cycle (organization_id, name, starts_on, ends_on, status) "
        "VALUES ($1, 'Bench quarter', $2, $3, 'ACTIVE') RETURNING id",
        org,
        starts_on,
        ends_on,
    )

    # Teams: a tree three levels deep, `scale` copies side by side.
    team_rows: list[tuple[int, int, str, int | None]] = []
    teams_by_level: defaultdict[int, list[int]] = defaultdict(list)
    next_team = await _next_id(conn, "team")
    for _copy in range(scale):
        for _d in range(TEAMS[0]):
            dept = next_team
            next_team += 1
            team_rows.append((dept, org, f"Department {dept}", None))
            teams_by_level[0].append(dept)
            for _t in range(TEAMS[1]):
                team = next_team
                next_team += 1
                team_rows.append((team, org, f"Team {team}", dept))
                teams_by_level[1].append(team)
                for _s in range(TEAMS[2]):
                    squad = next_team
                    next_team += 1
                    team_rows.append((squad, org, f"Squad {squad}", team))
                    teams_by_level[2].append(squad)
    await conn.copy_records_to_table(
        "team", records=team_rows, columns=["id", "organization_id", "name", "parent_id"]
    )

    # Users: an admin and two members per team, each a member of their team.
    next_user = await _next_id(conn, "app_user")
    user_rows: list[tuple[int, int, str, str, str]] = []
    members: list[tuple[int, int, int]] = []
    owner_of_team: dict[int, int] = {}
    user_rows.append((next_user, org, "Bench Admin", f"admin{org}@bench.example", "ADMIN"))
    admin_id = next_user
    next_user += 1
    for team_id, *_ in team_rows:
        for k in range(2):
            user_rows.append(
                (next_user, org, f"Member {next_user}", f"m{next_user}@bench.example", "MEMBER")
            )
            members.append((org, team_id, next_user))
            owner_of_team.setdefault(team_id, next_user)
            next_user += 1
            del k
    await conn.copy_records_to_table(
        "app_user", records=user_rows, columns=["id", "organization_id", "name", "email", "role"]
    )
    await conn.copy_records_to_table(
        "team_membership", records=members, columns=["organization_id", "team_id", "user_id"]
    )

    # Objectives: four levels, each aligned to one of the level above.
    next_obj = await _next_id(conn, "objective")
    objectives: list[dict] = []
    by_level: list[list[int]] = []
    team_pool = [teams_by_level[0], teams_by_level[0], teams_by_level[1], teams_by_level[2]]
    for level, count in enumerate(OBJECTIVES):
        ids = []
        for _ in range(count * scale):
            team = rng.choice(team_pool[level])
            parent = rng.choice(by_level[level - 1]) if level else None
            objectives.append(
                {
                    "id": next_obj,
                    "team": team,
                    "owner": owner_of_team[team],
                    "parent": parent,
                    "weight": rng.choice((1.0, 1.0, 2.0)),
                }
            )
            ids.append(next_obj)
            next_obj += 1
        by_level.append(ids)

    # Key results and their check-ins, progress computed by the rules.
    next_kr = await _next_id(conn, "key_result")
    next_ci = await _next_id(conn, "check_in")
    kr_rows, ci_rows = [], []
    parts: dict[int, list[Part]] = defaultdict(list)
    span = (now - datetime.combine(starts_on, datetime.min.time(), tzinfo=UTC)).total_seconds()
    created = datetime.combine(starts_on, datetime.min.time(), tzinfo=UTC)
    for obj in objectives:
        for k in range(KEY_RESULTS_PER_OBJECTIVE):
            kind = (
                KeyResultType.INCREASE,
                KeyResultType.DECREASE,
                KeyResultType.INCREASE,
                KeyResultType.STAY_ABOVE,
            )[k]
            start, target = {
                KeyResultType.INCREASE: (0.0, 100.0),
                KeyResultType.DECREASE: (4.2, 3.57),
                KeyResultType.STAY_ABOVE: (96.0, 98.0),
            }[kind]
            pace = rng.uniform(0.2, 1.1)
            last_value, last_id, last_at = start, None, None
            for n in range(CHECK_INS_PER_KEY_RESULT):
                at = created + timedelta(seconds=span * (n + 1) / (CHECK_INS_PER_KEY_RESULT + 1))
                share = (n + 1) / CHECK_INS_PER_KEY_RESULT * pace * 0.5
                if kind is KeyResultType.STAY_ABOVE:
                    value = round(rng.uniform(96.5, 99.0), 2)
                else:
                    value = round(
                        start
                        + (target - start) * share
                        + rng.uniform(-0.02, 0.02) * abs(target - start),
                        4,
                    )
                progress = rules.key_result_progress(kind, start, target, value)
                caller = f"user:{obj['owner']}"
                ci_rows.append(
                    (
                        next_ci,
                        org,
                        next_kr,
                        value,
                        0.7,
                        None,
                        obj["owner"],
                        caller,
                        progress,
                        at,
                        at,
                    )
                )
                last_value, last_id, last_at = value, next_ci, at
                next_ci += 1
            progress = rules.key_result_progress(kind, start, target, last_value)
            kr_rows.append(
                (
                    next_kr,
                    org,
                    obj["id"],
                    f"Key result {next_kr}",
                    obj["owner"],
                    str(kind),
                    "NUMBER",
                    start,
                    target,
                    last_value,
                    1.0,
                    progress,
                    0.7,
                    last_id,
                    last_at,
                    created,
                    created,
                )
            )
            parts[obj["id"]].append(Part(1.0, progress, False, True, None))
            next_kr += 1

    # Roll up, deepest level first.
    values: dict[int, tuple[float, bool]] = {}
    for level in reversed(range(len(OBJECTIVES))):
        for obj in (o for o in objectives if o["id"] in set(by_level[level])):
            own = parts[obj["id"]]
            progress = rules.roll_up(own)
            checked = rules.rolled_checked_in(own)
            values[obj["id"]] = (progress, checked)
            if obj["parent"] is not None:
                parts[obj["parent"]].append(Part(obj["weight"], progress, False, checked, None))
    obj_rows = [
        (
            o["id"],
            org,
            cycle_id,
            f"Objective {o['id']}",
            o["team"],
            o["owner"],
            o["parent"],
            o["weight"],
            "PUBLIC",
            values[o["id"]][0],
            values[o["id"]][1],
            created,
            created,
        )
        for o in objectives
    ]
    # Parents before children, for the foreign key.
    await conn.copy_records_to_table(
        "objective",
        records=obj_rows,
        columns=[
            "id",
            "organization_id",
            "cycle_id",
            "title",
            "team_id",
            "owner_id",
            "parent_id",
            "weight",
            "visibility",
            "progress",
            "has_check_in",
            "created_at",
            "updated_at",
        ],
    )
    await conn.copy_records_to_table(
        "key_result",
        records=kr_rows,
        columns=[
            "id",
            "organization_id",
            "objective_id",
            "title",
            "owner_id",
            "type",
            "measure",
            "start_value",
            "target_value",
            "current_value",
            "weight",
            "progress",
            "confidence",
            "last_check_in_id",
            "last_check_in_at",
            "created_at",
            "updated_at",
        ],
    )
    await conn.copy_records_to_table(
        "check_in",
        records=ci_rows,
        columns=[
            "id",
            "organization_id",
            "key_result_id",
            "value",
            "confidence",
            "note",
            "author_id",
            "caller",
            "progress",
            "created_at",
            "measured_at",
        ],
    )
    return {
        "teams": len(team_rows),
        "users": len(user_rows),
        "objectives": len(obj_rows),
        "key_results": len(kr_rows),
        "check_ins": len(ci_rows),
        "admin_user_id": admin_id,
        "cycle_id": cycle_id,
    }
