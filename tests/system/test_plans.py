"""Plans as files (README, "Plans as files"): `okr apply`, `okr plan export|schema` as
real processes and `applyPlan` over the API, against the test's database."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from sqlalchemy import text

from schema import ids
from service.settings import Settings
from tests import factories as h
from tests.factories import ROOT, Org

ROOT = ROOT
APPLY = (
    "mutation($input: ApplyPlanInput!) { applyPlan(input: $input) { "
    "changes { action path before after } userErrors { code field message } } }"
)


async def _world(org: Org) -> dict[str, str]:
    """Two teams with a member each, and a metric."""
    ops = await h.team(org, "Operations")
    transport = await h.team(org, "Transport", ops)
    sam = await h.user(org, "Sam Lind")
    priya = await h.user(org, "Priya Raman")
    await h.ok(org, "addTeamMember", {"teamId": ops, "userId": sam}, "team { id }")
    await h.ok(org, "addTeamMember", {"teamId": transport, "userId": priya}, "team { id }")
    await h.create_metric(org, "cost_per_order")
    return {"ops": ops, "transport": transport, "sam": sam, "priya": priya}


def _plan(**changes: Any) -> dict[str, Any]:
    """The tests' plan: two objectives (one aligned under the other), three key results."""
    plan: dict[str, Any] = {
        "version": 1,
        "cycle": {"name": "Q1 2027", "startsOn": "2027-01-01", "endsOn": "2027-03-31"},
        "objectives": [
            {
                "key": "reduce-costs",
                "title": "Reduce distribution costs by 15%",
                "team": "Operations",
                "owner": "sam.lind@acme.example",
                "visibility": "PUBLIC",
                "parent": None,
                "weight": 1,
                "keyResults": [
                    {
                        "key": "cost-per-order",
                        "title": "Cost per order from 4.20 to 3.57",
                        "type": "DECREASE",
                        "measure": "CURRENCY",
                        "startValue": 4.20,
                        "targetValue": 3.57,
                        "metric": "cost_per_order",
                    },
                    {
                        "key": "carriers",
                        "title": "Renegotiate two carrier contracts",
                        "type": "MILESTONE",
                    },
                ],
            },
            {
                "key": "faster-routes",
                "title": "Shorter routes",
                "team": "Transport",
                "owner": "priya.raman@acme.example",
                "parent": "reduce-costs",
                "weight": 2,
                "keyResults": [
                    {
                        "key": "km-per-drop",
                        "title": "Km per drop from 12 to 10",
                        "type": "DECREASE",
                        "startValue": 12,
                        "targetValue": 10,
                        "owner": "priya.raman@acme.example",
                    }
                ],
            },
        ],
    }
    for path, value in changes.items():
        node = plan
        *parents, last = path.split("__")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return plan


async def _apply(org: Org, plan: Any, token: str | None = None, **flags: Any) -> dict[str, Any]:
    document = plan if isinstance(plan, str) else yaml.safe_dump(plan, sort_keys=False)
    return (await org.call(APPLY, {"input": {"document": document, **flags}}, token=token))[
        "applyPlan"
    ]


async def _rows(org: Org) -> dict[str, int]:
    async with org.db.connect() as conn:
        return {
            t: int(await conn.scalar(text(f"SELECT count(*) FROM {t}")))
            for t in ("cycle", "objective", "key_result", "event")
        } | {
            "archived": int(
                await conn.scalar(
                    text(
                        "SELECT (SELECT count(*) FROM objective WHERE archived_at IS NOT NULL)"
                        " + (SELECT count(*) FROM key_result WHERE archived_at IS NOT NULL)"
                    )
                )
            )
        }


async def _slug(org: Org) -> str:
    async with org.db.connect() as conn:
        q = text("SELECT slug FROM organization WHERE id = :id")
        return (await conn.execute(q, {"id": org.id})).scalar_one()


def _env(database_url: str, settings: Settings) -> dict[str, str]:
    return h.env_for(database_url, settings.data_dir)


# --- the API ---------------------------------------------------------------------------------


async def test_dry_run_writes_nothing_then_apply_creates_and_reapply_is_unchanged(org: Org):
    await _world(org)
    before = await _rows(org)
    dry = await _apply(org, _plan(), dryRun=True)
    assert dry["userErrors"] == []
    assert [(c["action"], c["path"]) for c in dry["changes"]] == [
        ("CREATE", "cycle"),
        ("CREATE", "objectives/reduce-costs"),
        ("CREATE", "objectives/reduce-costs/keyResults/cost-per-order"),
        ("CREATE", "objectives/reduce-costs/keyResults/carriers"),
        ("CREATE", "objectives/faster-routes"),
        ("CREATE", "objectives/faster-routes/keyResults/km-per-drop"),
    ]
    assert await _rows(org) == before  # no rows, no events

    applied = await _apply(org, _plan())
    assert applied["userErrors"] == [] and applied["changes"] == dry["changes"]
    after = await _rows(org)
    assert (after["cycle"], after["objective"], after["key_result"]) == (
        before["cycle"] + 1,
        before["objective"] + 2,
        before["key_result"] + 3,
    )
    assert after["event"] > before["event"]
    shown = await org.call(
        "{ objectives(first: 10) { edges { node { externalKey title weight team { name } "
        "parent { externalKey } keyResults { externalKey metric { key } } } } } }"
    )
    nodes = {e["node"]["externalKey"]: e["node"] for e in shown["objectives"]["edges"]}
    assert nodes["faster-routes"]["parent"] == {"externalKey": "reduce-costs"}
    assert nodes["faster-routes"]["weight"] == 2 and nodes["faster-routes"]["team"]["name"] == (
        "Transport"
    )
    assert nodes["reduce-costs"]["keyResults"][0] == {
        "externalKey": "cost-per-order",
        "metric": {"key": "cost_per_order"},
    }

    again = await _apply(org, _plan())
    assert again["userErrors"] == []
    assert {c["action"] for c in again["changes"]} == {"UNCHANGED"}
    assert len(again["changes"]) == 6
    assert await _rows(org) == after  # and no event


async def test_one_edited_title_is_one_update_with_before_and_after(org: Org):
    await _world(org)
    assert (await _apply(org, _plan()))["userErrors"] == []
    events = (await _rows(org))["event"]
    edited = _plan(objectives__1__keyResults__0__title="Km per drop from 12 to 9.5")
    result = await _apply(org, edited)
    assert result["userErrors"] == []
    updates = [c for c in result["changes"] if c["action"] != "UNCHANGED"]
    assert updates == [
        {
            "action": "UPDATE",
            "path": "objectives/faster-routes/keyResults/km-per-drop",
            "before": {"title": "Km per drop from 12 to 10"},
            "after": {"title": "Km per drop from 12 to 9.5"},
        }
    ]
    assert (await _rows(org))["event"] == events + 1  # one KEY_RESULT_UPDATED


async def test_prune_archives_what_left_the_file_and_nothing_without_it(org: Org):
    await _world(org)
    assert (await _apply(org, _plan()))["userErrors"] == []
    smaller = _plan()
    del smaller["objectives"][1]  # faster-routes
    del smaller["objectives"][0]["keyResults"][1]  # carriers
    kept = await _apply(org, smaller)
    assert {c["action"] for c in kept["changes"]} == {"UNCHANGED"}
    assert (await _rows(org))["archived"] == 0
    # An objective without a key is never touched.
    cycle = (await org.call("{ cycles(first: 5) { edges { node { id name } } } }"))["cycles"]
    cycle_id = next(e["node"]["id"] for e in cycle["edges"] if e["node"]["name"] == "Q1 2027")
    await h.objective(org, cycle_id, "Made by hand")

    pruned = await _apply(org, smaller, prune=True)
    assert pruned["userErrors"] == []
    archives = [(c["action"], c["path"]) for c in pruned["changes"] if c["action"] != "UNCHANGED"]
    assert archives == [
        ("ARCHIVE", "objectives/reduce-costs/keyResults/carriers"),
        ("ARCHIVE", "objectives/faster-routes"),
    ]
    assert (await _rows(org))["archived"] == 2
    async with org.db.connect() as conn:
        by_hand = await conn.scalar(
            text("SELECT archived_at FROM objective WHERE title = 'Made by hand'")
        )
    assert by_hand is None
    again = await _apply(org, smaller, prune=True)
    assert {c["action"] for c in again["changes"]} == {"UNCHANGED"}


BAD = {
    "unknown team": (
        {"objectives__0__team": "Nowhere"},
        "objectives/reduce-costs/team",
        "NOT_FOUND",
    ),
    "unknown owner": (
        {"objectives__1__keyResults__0__owner": "ghost@acme.example"},
        "objectives/faster-routes/keyResults/km-per-drop/owner",
        "NOT_FOUND",
    ),
    "unknown metric": (
        {"objectives__0__keyResults__0__metric": "no_such_metric"},
        "objectives/reduce-costs/keyResults/cost-per-order/metric",
        "NOT_FOUND",
    ),
    "loop between parents": (
        {"objectives__0__parent": "faster-routes"},
        "objectives/reduce-costs/parent",
        "ALIGNMENT_LOOP",
    ),
    "bad type": (
        {"objectives__0__keyResults__0__type": "SIDEWAYS"},
        "objectives/reduce-costs/keyResults/cost-per-order/type",
        "INVALID",
    ),
    "bad number": (
        {"objectives__0__keyResults__0__targetValue": "three"},
        "objectives/reduce-costs/keyResults/cost-per-order/targetValue",
        "INVALID",
    ),
    "target the wrong way": (
        {"objectives__0__keyResults__0__targetValue": 5.0},
        "objectives/reduce-costs/keyResults/cost-per-order/targetValue",
        "INVALID",
    ),
    "key used twice": (
        {"objectives__1__key": "reduce-costs"},
        "objectives/reduce-costs/key",
        "INVALID",
    ),
}


async def test_every_bad_plan_is_refused_whole_with_its_path(org: Org):
    await _world(org)
    before = await _rows(org)
    for name, (changes, path, code) in BAD.items():
        result = await _apply(org, _plan(**changes))
        assert result["changes"] == [], name
        assert {"code": code, "field": [path]} in [
            {"code": e["code"], "field": e["field"]} for e in result["userErrors"]
        ], (name, result["userErrors"])
    # Several problems at once: all of them, each with its path.
    several = await _apply(
        org,
        _plan(objectives__0__team="Nowhere", objectives__1__owner="ghost@acme.example"),
    )
    assert [e["field"] for e in several["userErrors"]] == [
        ["objectives/reduce-costs/team"],
        ["objectives/faster-routes/owner"],
    ]
    assert (await _apply(org, "version: [1"))["userErrors"][0]["code"] == "INVALID"
    assert await _rows(org) == before


async def test_a_closed_cycle_refuses_the_plan(org: Org):
    await _world(org)
    assert (await _apply(org, _plan()))["userErrors"] == []
    cycle = (await org.call("{ cycles(first: 5) { edges { node { id } } } }"))["cycles"]
    cycle_id = cycle["edges"][0]["node"]["id"]
    for step in ("ACTIVE", "REVIEW", "CLOSED"):
        await h.ok(org, "setCycleStatus", {"cycleId": cycle_id, "status": step}, "cycle { id }")
    before = await _rows(org)
    result = await _apply(org, _plan(objectives__0__title="New title"))
    assert result["changes"] == []
    assert [(e["code"], e["field"]) for e in result["userErrors"]] == [("CYCLE_CLOSED", ["cycle"])]
    assert await _rows(org) == before


async def test_a_members_plan_touching_another_teams_objective_is_refused_whole(org: Org):
    world = await _world(org)
    assert (await _apply(org, _plan()))["userErrors"] == []
    before = await _rows(org)
    sam = org.token(ids.decode_as(world["sam"], "User"))
    # Sam (Operations) may edit reduce-costs, not Transport's faster-routes.
    edited = _plan(
        objectives__0__title="Reduce distribution costs by 20%",
        objectives__1__title="Much shorter routes",
    )
    result = await _apply(org, edited, token=sam)
    assert result["changes"] == []
    assert [(e["code"], e["field"]) for e in result["userErrors"]] == [
        ("FORBIDDEN", ["objectives/faster-routes"])
    ]
    assert await _rows(org) == before
    # His own objective alone is his to change.
    mine = await _apply(
        org, _plan(objectives__0__title="Reduce distribution costs by 20%"), token=sam
    )
    assert mine["userErrors"] == []
    assert [c["action"] for c in mine["changes"]].count("UPDATE") == 1


# --- the command -----------------------------------------------------------------------------


async def test_okr_apply_prints_changes_and_exits_by_outcome(
    org: Org, settings: Settings, database_url: str, bin_okr: str, tmp_path: Path
):
    await _world(org)
    env, slug = _env(database_url, settings), await _slug(org)
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(_plan(), sort_keys=False))
    code, out, err = await h.okr(bin_okr, env, "apply", str(plan), "--org", slug, "--dry-run")
    assert code == 0, err
    assert out.splitlines()[:2] == ["CREATE cycle", "CREATE objectives/reduce-costs"]
    assert (await _rows(org))["objective"] == 0

    code, out, err = await h.okr(bin_okr, env, "apply", str(plan), "--org", slug)
    assert code == 0, err
    assert len(out.splitlines()) == 6 and "\r" not in err  # no bar when not a terminal
    events = (await _rows(org))["event"]

    plan.write_text(yaml.safe_dump(_plan(objectives__0__weight=3), sort_keys=False))
    code, out, err = await h.okr(bin_okr, env, "apply", str(plan), "--org", slug)
    assert code == 0, err
    assert 'UPDATE objectives/reduce-costs {"weight": 1.0} -> {"weight": 3.0}' in out.splitlines()
    assert (await _rows(org))["event"] == events + 1

    plan.write_text(yaml.safe_dump(_plan(objectives__0__team="Nowhere"), sort_keys=False))
    code, out, err = await h.okr(bin_okr, env, "apply", str(plan), "--org", slug)
    assert (code, out) == (1, "")
    assert "objectives/reduce-costs/team: no team is named 'Nowhere'" in err

    code, _out, err = await h.okr(
        bin_okr, env, "apply", str(tmp_path / "missing.yaml"), "--org", slug
    )
    assert code == 2 and "cannot read" in err
    code, _out, _err = await h.okr(bin_okr, env, "apply", str(plan))
    assert code == 2  # --org is required


async def test_plan_export_then_apply_is_unchanged(
    org: Org, settings: Settings, database_url: str, bin_okr: str, tmp_path: Path
):
    await _world(org)
    assert (await _apply(org, _plan()))["userErrors"] == []
    # An objective made by hand, with a key result: the export gives them keys.
    cycle = (await org.call("{ cycles(first: 5) { edges { node { id } } } }"))["cycles"]
    made = await h.objective(org, cycle["edges"][0]["node"]["id"], "Safer loading docks")
    await h.key_result(org, made, "Incidents down", type="DECREASE", start=10, target=2)
    env, slug = _env(database_url, settings), await _slug(org)
    exported = await h.okr_stdout(
        bin_okr, env, "plan", "export", "--org", slug, "--cycle", "Q1 2027"
    )
    document = yaml.safe_load(exported)
    Draft202012Validator(json.loads((ROOT / "service" / "plan.schema.json").read_text())).validate(
        document
    )
    keys = [o["key"] for o in document["objectives"]]
    assert keys == ["reduce-costs", "faster-routes", "safer-loading-docks"]
    assert document["objectives"][2]["keyResults"][0]["key"] == "incidents-down"
    events = (await _rows(org))["event"]
    result = await _apply(org, exported, prune=True)
    assert result["userErrors"] == []
    assert {c["action"] for c in result["changes"]} == {"UNCHANGED"}
    assert len(result["changes"]) == 1 + 3 + 4
    assert (await _rows(org))["event"] == events

    printed = await h.okr_stdout(bin_okr, env, "plan", "schema")
    assert json.loads(printed) == json.loads((ROOT / "service" / "plan.schema.json").read_text())


def test_the_schema_validates_the_readme_example():
    example = yaml.safe_load(_readme_example())
    example = json.loads(json.dumps(example, default=str))  # YAML dates as text
    schema = json.loads((ROOT / "service" / "plan.schema.json").read_text())
    Draft202012Validator(schema).validate(example)
    assert example["objectives"] and example["objectives"][0]["keyResults"]


def test_parse_names_every_problem_at_once_and_takes_no_aliases():
    from service import plan_format

    text = """
version: 2
cycle: {startsOn: 2027-01-01, endsOn: 2026-12-31}
objectives:
  - key: Bad Key
    title: x
  - key: b
    title: y
    parent: nowhere
    extra: 1
    keyResults:
      - {key: k, title: t, type: INCREASE, startValue: .nan, targetValue: 1}
      - {key: k, title: t, type: DECREASE, startValue: 1, targetValue: 2}
"""
    plan, problems = plan_format.parse(text)
    assert plan is None
    assert {p.path for p in problems} == {
        "version",
        "cycle/name",
        "cycle/endsOn",
        "objectives/Bad Key/key",  # an item is named by its key, as given
        "objectives/b/extra",
        "objectives/b/parent",
        "objectives/b/keyResults/k/startValue",
        "objectives/b/keyResults/k/key",
        "objectives/b/keyResults/k/targetValue",
    }
    bomb = "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"
    plan, problems = plan_format.parse(bomb)
    assert plan is None and "aliases" in problems[0].message


def _readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("## Plans as files", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None, "the README's 'Plans as files' has a YAML example"
    return block.group(1)


async def test_the_readme_example_applies_to_the_demo_as_printed(
    db, settings: Settings, database_url: str, bin_okr: str, tmp_path: Path
):
    from service import clock, demo

    clock.start(demo.NOW)  # the demo as `okr serve --demo` seeds it, on any day
    try:
        await demo.seed(db)
    finally:
        clock.start(None)
    env = _env(database_url, settings)
    example = _readme_example()
    plan = tmp_path / "q1-2027.yaml"
    plan.write_text(example)
    out = await h.okr_stdout(bin_okr, env, "apply", str(plan), "--org", "northwind")
    section = (ROOT / "README.md").read_text().split("## Plans as files", 1)[1]
    created = out.splitlines()
    assert created[:3] == [
        "CREATE cycle",
        "CREATE objectives/reduce-costs",
        "CREATE objectives/reduce-costs/keyResults/cost-per-order",
    ]
    assert all(f"    {line}\n" in section for line in created[:3])
    assert len(created) == 1 + 2 + 4
    plan.write_text(example.replace("by another 10%", "by 10%"))
    edited = (
        await h.okr_stdout(bin_okr, env, "apply", str(plan), "--org", "northwind")
    ).splitlines()
    assert [line for line in edited if not line.startswith("UNCHANGED")] == [edited[1]]
    assert all(f"    {line}\n" in section for line in edited[:3])


async def test_a_long_apply_shows_a_progress_bar_on_a_terminal_only(
    org: Org, settings: Settings, database_url: str, bin_okr: str, tmp_path: Path
):
    await _world(org)
    env, slug = _env(database_url, settings), await _slug(org)
    many = _plan()
    many["objectives"] = [
        {
            "key": f"goal-{i}",
            "title": f"Goal {i}",
            "team": "Operations",
            "keyResults": [{"key": "done", "title": "Done", "type": "MILESTONE"}],
        }
        for i in range(12)
    ]
    plan = tmp_path / "many.yaml"
    plan.write_text(yaml.safe_dump(many, sort_keys=False))
    master, slave = pty.openpty()
    # A terminal 100 columns wide (a new pty has none, and tqdm would draw nothing).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = await asyncio.create_subprocess_exec(
            bin_okr,
            "apply",
            str(plan),
            "--org",
            slug,
            "--dry-run",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        os.close(slave)
        slave = -1
        shown = b""
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal's other end closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0
    assert len(out.decode().splitlines()) == 1 + 24
    bar = shown.decode(errors="replace")
    assert "0/25" in bar and "change" in bar, bar  # tqdm's count and unit
    # Piped, the same apply prints no bar (test_okr_apply_... checks it for a short one).
    code, out2, err = await h.okr(bin_okr, env, "apply", str(plan), "--org", slug, "--dry-run")
    assert code == 0 and out2 == out.decode() and "0/25" not in err


async def test_reparenting_unarchiving_and_what_a_plan_cannot_change(org: Org):
    await _world(org)
    assert (await _apply(org, _plan()))["userErrors"] == []
    # The tree turned over in one apply: reduce-costs under faster-routes.
    swapped = _plan(objectives__0__parent="faster-routes", objectives__1__parent=None)
    result = await _apply(org, swapped)
    assert result["userErrors"] == []
    assert [(c["path"], c["before"], c["after"]) for c in result["changes"] if c["before"]] == [
        ("objectives/faster-routes", {"parent": "reduce-costs"}, {"parent": None}),
        ("objectives/reduce-costs", {"parent": None}, {"parent": "faster-routes"}),
    ]
    # An archived objective the file names again comes back.
    smaller = _plan(objectives__0__parent="faster-routes", objectives__1__parent=None)
    del smaller["objectives"][0]
    assert (await _apply(org, smaller, prune=True))["userErrors"] == []
    back = await _apply(org, swapped)
    assert [(c["action"], c["path"], c["after"]) for c in back["changes"] if c["after"]] == [
        ("UPDATE", "objectives/reduce-costs", {"archived": False}),
    ]
    # A team or a type does not change; a dry run is refused like the apply.
    for changes, path in (
        ({"objectives__0__team": "Transport"}, "objectives/reduce-costs/team"),
        (
            {
                "objectives__1__keyResults__0__type": "INCREASE",
                "objectives__1__keyResults__0__startValue": 8,
            },
            "objectives/faster-routes/keyResults/km-per-drop/type",
        ),
    ):
        refused = await _apply(org, _plan(**changes), dryRun=True)
        assert [e["field"] for e in refused["userErrors"]] == [[path]], refused
