"""Issue 19, item 6: an API key limited to teams (`okr apikey create --team`) reads and
writes exactly what a member of those teams could, through the one visibility rule and
the write rules; an unlimited SERVICE key keeps today's rule (it checks in on any key
result of its organization, seen or not: it is trusted for its organization)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from service.db import Database
from service.usecases import organizations
from tests import factories as h
from tests.factories import JWT_SECRET, Org

NODE = "query($id: ID!) { node(id: $id) { id } }"


async def _slug(db: Database, org: Org) -> str:
    async with db.connect() as conn:
        return (
            await conn.execute(text("SELECT slug FROM organization WHERE id = :id"), {"id": org.id})
        ).scalar_one()


def _apikey(
    bin_okr: str, database_url: str, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [bin_okr, "apikey", "create", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "OKR_DATABASE_URL": database_url,
            "OKR_JWT_SECRET": JWT_SECRET,
            "OKR_DATA_DIR": str(tmp_path),
        },
        check=False,
    )


async def _outcome(org: Org, kr: str, token: str) -> str:
    """What a check-in on `kr` by `token` comes to: "ok" or the error's code."""
    payload = await h.mutate(
        org, "checkIn", {"keyResultId": kr, "value": 7}, "checkIn { id }", token=token
    )
    if payload["userErrors"]:
        return payload["userErrors"][0]["code"]
    return "ok"


@pytest.fixture
async def world(org: Org) -> dict[str, Any]:
    cycle = await h.active_cycle(org)
    ops = await h.team(org, "Ops")
    sales = await h.team(org, "Sales")
    owner = await h.user(org, "Pia Private")
    mate = await h.user(org, "Otto Ops")
    await h.ok(org, "addTeamMember", {"teamId": ops, "userId": mate}, "team { id }")
    objectives = {
        "ops public": await h.objective(org, cycle, "Ops public", teamId=ops),
        "ops team": await h.objective(org, cycle, "Ops only", visibility="TEAM", teamId=ops),
        "sales team": await h.objective(org, cycle, "Sales only", visibility="TEAM", teamId=sales),
        "org public": await h.objective(org, cycle, "Everyone's"),
        "private": await h.objective(org, cycle, "Mine", visibility="PRIVATE", ownerId=owner),
    }
    krs = {name: await h.key_result(org, o) for name, o in objectives.items()}
    from schema.ids import decode

    return {
        "objectives": objectives,
        "krs": krs,
        "member": org.token(int(decode(mate)[1])),
    }


async def test_a_key_limited_to_teams_reads_and_writes_as_a_member_of_them(
    bin_okr, database_url, tmp_path, db: Database, org: Org, world: dict[str, Any]
):
    slug = await _slug(db, org)
    made = _apikey(
        bin_okr, database_url, tmp_path, "--org", slug, "--name", "ops-bot", "--team", "Ops"
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    member = world["member"]
    # Reads: the same objectives and key results as the member of Ops, by the one rule.
    for kind in ("objectives", "krs"):
        for name, gid in world[kind].items():
            as_key = (await org.call(NODE, {"id": gid}, token=key))["node"]
            as_member = (await org.call(NODE, {"id": gid}, token=member))["node"]
            assert (as_key is None) == (as_member is None), (kind, name)
            assert (as_key is None) == (name in ("sales team", "private")), (kind, name)
    # Writes: check-ins come to exactly what the member's come to.
    outcomes = {name: await _outcome(org, kr, key) for name, kr in world["krs"].items()}
    assert outcomes == {name: await _outcome(org, kr, member) for name, kr in world["krs"].items()}
    assert outcomes == {
        "ops public": "ok",
        "ops team": "ok",
        "sales team": "NOT_FOUND",  # hidden: not hinted at
        "private": "NOT_FOUND",
        "org public": "FORBIDDEN",  # seen, not its teams' to write
    }
    # Measurements are posted by trusted services and admins; a member could not.
    recorded = await h.mutate(
        org,
        "recordMeasurements",
        {"measurements": [{"metricKey": "uptime", "value": 1}]},
        "",
        token=key,
    )
    assert recorded["userErrors"][0]["code"] == "FORBIDDEN"
    assert "limited to teams" in recorded["userErrors"][0]["message"]


async def test_an_unlimited_key_checks_in_anywhere_and_reads_public_only(
    db: Database, org: Org, world: dict[str, Any]
):
    _row, key = await db.transaction(lambda s: organizations.create_api_key(s, org.id, "trusted"))
    outcomes = {name: await _outcome(org, kr, key) for name, kr in world["krs"].items()}
    assert set(outcomes.values()) == {"ok"}, outcomes  # trusted for its organization
    seen = {
        name
        for name, gid in world["objectives"].items()
        if (await org.call(NODE, {"id": gid}, token=key))["node"] is not None
    }
    assert seen == {"ops public", "org public"}


async def test_a_key_whose_teams_are_gone_is_limited_to_nothing(
    db: Database, org: Org, world: dict[str, Any]
):
    row, key = await db.transaction(
        lambda s: organizations.create_api_key(s, org.id, "ops-bot", ["Ops"])
    )
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM api_key_team WHERE api_key_id = :id"), {"id": row.id})
    outcomes = {name: await _outcome(org, kr, key) for name, kr in world["krs"].items()}
    assert "ok" not in outcomes.values(), outcomes  # never unlimited


def test_apikey_create_refuses_an_unknown_team_and_creates_nothing(bin_okr, database_url, tmp_path):
    created = subprocess.run(
        [bin_okr, "org", "create", "Teamless", "--admin-email", "a@teamless.example"],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "OKR_DATABASE_URL": database_url,
            "OKR_JWT_SECRET": JWT_SECRET,
            "OKR_DATA_DIR": str(tmp_path),
        },
        check=False,
    )
    assert created.returncode == 0, created.stderr
    done = _apikey(
        bin_okr, database_url, tmp_path, "--org", "teamless", "--name", "x", "--team", "Nope"
    )
    assert done.returncode != 0
    assert "team 'Nope'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    listed = subprocess.run(
        [bin_okr, "apikey", "list", "--org", "teamless"],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "OKR_DATABASE_URL": database_url,
            "OKR_JWT_SECRET": JWT_SECRET,
            "OKR_DATA_DIR": str(tmp_path),
        },
        check=False,
    )
    assert listed.stdout.strip().splitlines()[1:] == []  # no key was made
