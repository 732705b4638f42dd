"""What tests build with, shared by every test module (none imports another test module
or conftest): the organization and the API as its people call it (`Org`), trees of
teams, objectives, key results and check-ins built through the public API as a client
would (or, for `Tree` and `World`, through the use cases), the `okr` command run as a
process, and real `okr serve` processes (`start_okr`, `stop_okr`)."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from schema import ids
from schema.ids import encode
from schema.plan import MISSES
from service import clock, events, models
from service.app import create_app
from service.auth import issue_token
from service.db import Database
from service.domain import enums as domain_enums
from service.domain.enums import EventKind, SubjectType
from service.domain.principal import Principal
from service.settings import Settings
from service.usecases import commands, cycles, key_results, objectives, organizations

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
EVENT_TABLE = models.Event.__table__
# Where real servers started by tests write (OKR_TEST_SERVER_LOG names a file to read).
SERVER_LOG = open(os.environ.get("OKR_TEST_SERVER_LOG", os.devnull), "ab")
NOW = datetime.now(UTC)
TODAY = NOW.date()

# The repository (tests live in packages below tests/).
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def clock_at(instant: datetime) -> Iterator[datetime]:
    """The OKR clock (service/clock.py) reads `instant` inside the block, for this task
    and the in-process requests it makes: rows written inside are dated by it as any
    write is (tests set the clock instead of rewriting rows' instants). It stands still,
    so derived figures (a forecast's slope) come out exact."""
    with clock.held(instant):
        yield instant


async def start_okr(
    bin_okr: str, port: int, env: dict[str, str], out: Any, *args: str, err: Any = None
) -> asyncio.subprocess.Process:
    """A real `okr serve` process on `port` (with any further `args`, e.g. "--demo"; a
    later "--log-level" wins), returned once its /readyz answers 200 (it is stopped, and
    AssertionError raised, if it never does). Its stderr goes to `err`, else with stdout
    to `out`."""
    proc = await asyncio.create_subprocess_exec(
        bin_okr,
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT if err is None else err,
    )
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            try:
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    await stop_okr(proc)
    raise AssertionError("okr serve did not come up")


async def stop_okr(proc: asyncio.subprocess.Process) -> None:
    """Terminate a server started by `start_okr`; kill it if it does not stop in 10 s."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PAYLOAD_ERRORS = "userErrors { code field message }"


async def mutate(
    org: Org, name: str, input: dict[str, Any], selection: str, token: str | None = None
) -> dict[str, Any]:
    type_name = {"checkIn": "CheckInInput", "reflectOnObjective": "ReflectInput"}.get(
        name, name[0].upper() + name[1:] + "Input"
    )
    query = (
        f"mutation($input: {type_name}!) {{ {name}(input: $input) {{ {selection} "
        f"{PAYLOAD_ERRORS} }} }}"
    )
    return (await org.call(query, {"input": input}, token=token))[name]


async def ok(
    org: Org, name: str, input: dict[str, Any], selection: str, token: str | None = None
) -> dict[str, Any]:
    payload = await mutate(org, name, input, selection, token)
    assert payload["userErrors"] == [], payload["userErrors"]
    return payload


async def user(org: Org, name: str, role: str = "MEMBER") -> str:
    email = name.lower().replace(" ", ".") + "@acme.example"
    p = await ok(org, "createUser", {"name": name, "email": email, "role": role}, "user { id }")
    return p["user"]["id"]


async def team(org: Org, name: str, parent: str | None = None) -> str:
    p = await ok(org, "createTeam", {"name": name, "parentId": parent}, "team { id }")
    return p["team"]["id"]


def around_today(before: int = 45, after: int = 45) -> tuple[str, str]:
    """A cycle's dates around today (the OKR clock's, service/clock.py: the wall clock's
    unless a test set it), so that tests hold on any day: a fixed quarter turns past its
    end at New Year."""
    today = clock.now().date()
    return (today - timedelta(days=before)).isoformat(), (today + timedelta(days=after)).isoformat()


async def active_cycle(
    org: Org, starts_on: str | None = None, ends_on: str | None = None, status: str = "ACTIVE"
) -> str:
    start, end = around_today()
    starts_on, ends_on = starts_on or start, ends_on or end
    p = await ok(
        org, "createCycle", {"name": "Q4", "startsOn": starts_on, "endsOn": ends_on}, "cycle { id }"
    )
    cycle = p["cycle"]["id"]
    for step in ("ACTIVE", "REVIEW", "CLOSED"):
        if status == "PLANNING":
            break
        await ok(org, "setCycleStatus", {"cycleId": cycle, "status": step}, "cycle { id }")
        if step == status:
            break
    return cycle


async def objective(org: Org, cycle: str, title: str, **extra: Any) -> str:
    token = extra.pop("token", None)
    p = await ok(
        org,
        "createObjective",
        {"cycleId": cycle, "title": title, **extra},
        "objective { id }",
        token=token,
    )
    return p["objective"]["id"]


async def key_result(
    org: Org,
    objective_id: str,
    title: str = "KR",
    type: str = "INCREASE",
    start: float | None = 0,
    target: float | None = 100,
    **extra: Any,
) -> str:
    p = await ok(
        org,
        "createKeyResult",
        {
            "objectiveId": objective_id,
            "title": title,
            "type": type,
            "startValue": start,
            "targetValue": target,
            **extra,
        },
        "keyResult { id }",
    )
    return p["keyResult"]["id"]


async def check_in(org: Org, kr: str, value: float, **extra: Any) -> dict[str, Any]:
    token = extra.pop("token", None)
    return await ok(
        org,
        "checkIn",
        {"keyResultId": kr, "value": value, **extra},
        "checkIn { id value progress } keyResult { progress }",
        token=token,
    )


async def progress(org: Org, node_id: str) -> float:
    q = (
        "query($id: ID!) { node(id: $id) { ... on Objective { progress } "
        "... on KeyResult { progress } } }"
    )
    return (await org.call(q, {"id": node_id}))["node"]["progress"]


def npm_installed(folder: Path, needed_for: str) -> str:
    """`npm ci` in `folder` unless its node_modules came from the same lock file (a
    stamp of the lock's SHA-256); returns node's path. Skips the calling test, with the
    reason, when node or npm is missing or the registry cannot be reached."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"node and npm are needed {needed_for} (not found)")
    stamp = folder / "node_modules" / ".okr-lock-sha256"
    lock = hashlib.sha256((folder / "package-lock.json").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == lock:
        return node
    try:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=folder,
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        output = getattr(exc, "stderr", b"") or b""
        pytest.skip(
            f"npm ci failed in tests/{folder.name} (is the npm registry reachable?): "
            + output.decode(errors="replace")[-300:]
        )
    stamp.write_text(lock)
    return node


class Org:
    """An organization with its admin, and a way to call the API as anyone in it."""

    def __init__(self, client: httpx.AsyncClient, db: Database, org_id: int, admin_id: int):
        self.client = client
        self.db = db
        self.id = org_id
        self.admin_id = admin_id
        self.admin = Principal(organization_id=org_id, role="ADMIN", user_id=admin_id)
        self.admin_token = issue_token(JWT_SECRET, admin_id, org_id)

    def token(self, user_id: int) -> str:
        return issue_token(JWT_SECRET, user_id, self.id)

    async def call(
        self,
        query: str,
        variables: dict | None = None,
        token: str | None = None,
        expect_errors: bool = False,
    ) -> dict:
        response = await self.client.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
        )
        body = response.json()
        if not expect_errors:
            assert response.status_code == 200, body
            assert "errors" not in body, body["errors"]
        return body if expect_errors else body["data"]


def env_for(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OKR_DATABASE_URL": database_url,
        "OKR_JWT_SECRET": JWT_SECRET,
        "OKR_DATA_DIR": str(tmp_path),
    }


async def okr(bin_okr: str, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        bin_okr,
        *args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


async def counts(db: Database) -> dict[str, int]:
    """Rows of everything a batch may write, and the events by kind."""
    async with db.connect() as conn:
        out = {
            t: int(await conn.scalar(text(f"SELECT count(*) FROM {t}")))
            for t in ("metric", "measurement", "check_in", "event")
        }
        out["seq"] = int(
            await conn.scalar(text("SELECT coalesce(sum(event_seq), 0) FROM organization"))
        )
        out["bound"] = int(
            await conn.scalar(text("SELECT count(*) FROM key_result WHERE metric_id IS NOT NULL"))
        )
    return out


async def service_token(org: Org, name: str = "logistics-service") -> str:
    _row, key = await org.db.transaction(lambda s: organizations.create_api_key(s, org.id, name))
    return key


async def cycle_now(org: Org, status: str = "ACTIVE") -> str:
    """A cycle around today: from 30 days ago to 60 days ahead."""
    return await active_cycle(
        org,
        starts_on=str(TODAY - timedelta(days=30)),
        ends_on=str(TODAY + timedelta(days=60)),
        status=status,
    )


async def create_metric(org: Org, key: str = "cost_per_order", **extra: Any) -> str:
    token = extra.pop("token", None)
    p = await ok(
        org,
        "createMetric",
        {"key": key, "name": extra.pop("name", "Cost per order"), **extra},
        "metric { id key }",
        token=token,
    )
    return p["metric"]["id"]


async def bind(org: Org, kr: str, metric: str | None, token: str | None = None) -> dict:
    return await mutate(
        org,
        "bindKeyResult",
        {"keyResultId": kr, "metricId": metric},
        "keyResult { id metric { key } }",
        token=token,
    )


def at(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat()


async def new_org(client: httpx.AsyncClient, db: Database) -> Org:
    """An organization with its admin (the `org` fixture's)."""
    created, admin = await db.transaction(
        lambda s: organizations.create_organization(
            s, "Acme Logistics", "admin@acme.example", "Ada Admin"
        )
    )
    return Org(client, db, created.id, admin.id)


class World:
    """An organization with two teams, a member of each, a viewer and a service key;
    objectives of every visibility (two of them without an owner), each with key
    results, check-ins and comments; and events of every subject type."""

    async def build(self, org: Org, db: Database) -> World:
        self.org, self.db = org, db
        self.team_x = await team(org, "X")
        self.team_y = await team(org, "Y")
        self.mx = await user(org, "Mia X")
        self.my = await user(org, "Yan Y")
        self.viewer = await user(org, "Vic Viewer", "VIEWER")
        for t, u in ((self.team_x, self.mx), (self.team_y, self.my)):
            await ok(org, "addTeamMember", {"teamId": t, "userId": u}, "team { id }")
        self.tokens = {
            "admin": org.admin_token,
            "member_x": org.token(ids.decode_as(self.mx, "User")),
            "member_y": org.token(ids.decode_as(self.my, "User")),
            "viewer": org.token(ids.decode_as(self.viewer, "User")),
        }
        _key_row, self.service_key = await db.transaction(
            lambda s: organizations.create_api_key(s, org.id, "logistics")
        )  # an ApiKey event, and the SERVICE caller
        self.tokens["service"] = self.service_key
        self.cycle = await active_cycle(org)
        mx = self.tokens["member_x"]
        self.public = await objective(org, self.cycle, "Public goal")
        self.team_goal = await objective(
            org,
            self.cycle,
            "Team X secret plan",
            description="the plan only X may read",
            teamId=self.team_x,
            visibility="TEAM",
            token=mx,
        )
        self.private = await objective(
            org, self.cycle, "Admin private", visibility="PRIVATE", ownerId=self.admin_gid
        )
        self.orphan = await objective(org, self.cycle, "Ownerless private", visibility="PRIVATE")
        # Public, aligned under the TEAM objective: its progress changes climb into it.
        self.child = await objective(
            org, self.cycle, "Public child", teamId=self.team_x, parentId=self.team_goal, token=mx
        )
        self.krs = {
            name: await key_result(org, goal, f"KR of {name}")
            for name, goal in (
                ("public", self.public),
                ("team_goal", self.team_goal),
                ("private", self.private),
                ("orphan", self.orphan),
                ("child", self.child),
            )
        }
        self.check_ins = {}
        for name, kr in self.krs.items():
            got = await check_in(org, kr, 40, note=f"note about {name}")
            self.check_ins[name] = got["checkIn"]["id"]
        await ok(
            org,
            "updateObjective",
            {"objectiveId": self.team_goal, "title": "Team X secret plan v2"},
            "objective { id }",
            token=mx,
        )
        for subject, token in (
            (self.team_goal, mx),
            (self.krs["team_goal"], mx),
            (self.private, None),
            (self.orphan, None),
            (self.public, None),
            (self.krs["public"], None),
        ):
            await ok(
                org,
                "addComment",
                {"subjectId": subject, "body": "a comment"},
                "comment { id }",
                token=token,
            )
        await ok(org, "setCheckInCadence", {"days": 14}, "days")  # an Organization event
        # No use case writes a CheckIn subject today; the rule covers it all the same.
        team_check_in = ids.decode_as(self.check_ins["team_goal"], "CheckIn")
        await db.transaction(
            lambda s: events.record(
                s,
                org.admin,
                org.id,
                events.Event(EventKind.CHECK_IN, SubjectType.CHECK_IN, team_check_in),
            )
        )
        # Objectives without an owner (legacy rows, or made so by hand): the rule must
        # fail closed on the NULL.
        async with db.engine.begin() as conn:
            await conn.execute(
                text("UPDATE objective SET owner_id = NULL WHERE id = ANY(:ids)"),
                {"ids": [self.pk(self.team_goal), self.pk(self.orphan)]},
            )
        return self

    @property
    def admin_gid(self) -> str:
        return ids.encode("User", self.org.admin_id)

    @staticmethod
    def pk(gid: str) -> int:
        return ids.decode(gid)[1]

    def hidden_from(self, caller: str) -> set[int]:
        """Objectives the caller may not see, by the rule of docs/design.md ("Access"),
        written out."""
        if caller == "admin":
            return set()
        hidden = {self.pk(self.private), self.pk(self.orphan)}
        if caller != "member_x":
            hidden.add(self.pk(self.team_goal))
        return hidden

    async def event_rows(self) -> list[Any]:
        async with self.db.connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(EVENT_TABLE)
                        .where(EVENT_TABLE.c.organization_id == self.org.id)
                        .order_by(EVENT_TABLE.c.seq)
                    )
                ).all()
            )

    async def objective_of(self, row: Any) -> int | None:
        """The objective an event is about, read straight from the tables."""
        queries = {
            "Objective": "SELECT CAST(:id AS bigint)",
            "KeyResult": "SELECT objective_id FROM key_result WHERE id = :id",
            "CheckIn": "SELECT k.objective_id FROM check_in c JOIN key_result k "
            "ON k.id = c.key_result_id WHERE c.id = :id",
            "Comment": "SELECT coalesce(c.objective_id, k.objective_id) FROM comment c "
            "LEFT JOIN key_result k ON k.id = c.key_result_id WHERE c.id = :id",
        }
        async with self.db.connect() as conn:
            return (
                await conn.execute(text(queries[row.subject_type]), {"id": row.subject_id})
            ).scalar_one()

    async def expected(self, caller: str) -> list[int]:
        """Sequence numbers of the events the caller may see, worked out by hand."""
        hidden = self.hidden_from(caller)
        shown = []
        for row in await self.event_rows():
            if caller == "admin" or row.subject_type in ("Organization", "Cycle", "Team", "User"):
                shown.append(row.seq)
            elif row.subject_type == "ApiKey":
                continue
            elif await self.objective_of(row) not in hidden:
                shown.append(row.seq)
        return shown


class Tree:
    def __init__(self, org: Org, db: Database) -> None:
        self.org, self.db = org, db

    async def build(self) -> Tree:
        p = self.org.admin
        tx = self.db.transaction
        cycle = await tx(
            lambda s: cycles.create_cycle(
                s, p, commands.CreateCycle("Q", date(2026, 1, 1), date(2027, 12, 31))
            )
        )
        await tx(
            lambda s: cycles.set_cycle_status(
                s, p, commands.SetCycleStatus(cycle.id, domain_enums.CycleStatus.ACTIVE)
            )
        )
        self.team_x = await tx(
            lambda s: organizations.create_team(s, p, commands.CreateTeam("X", None))
        )
        self.team_y = await tx(
            lambda s: organizations.create_team(s, p, commands.CreateTeam("Y", None))
        )
        self.root = await tx(
            lambda s: objectives.create_objective(
                s, p, commands.CreateObjective(cycle_id=cycle.id, title="Root")
            )
        )
        self.obj_x = await tx(
            lambda s: objectives.create_objective(
                s,
                p,
                commands.CreateObjective(
                    cycle_id=cycle.id, title="X's", team_id=self.team_x.id, parent_id=self.root.id
                ),
            )
        )
        self.obj_y = await tx(
            lambda s: objectives.create_objective(
                s,
                p,
                commands.CreateObjective(cycle_id=cycle.id, title="Y's", team_id=self.team_y.id),
            )
        )
        self.kr_x = await tx(
            lambda s: key_results.create_key_result(
                s,
                p,
                commands.CreateKeyResult(
                    objective_id=self.obj_x.id,
                    title="kx",
                    type=domain_enums.KeyResultType.INCREASE,
                    start_value=0,
                    target_value=100,
                ),
            )
        )
        self.kr_y = await tx(
            lambda s: key_results.create_key_result(
                s,
                p,
                commands.CreateKeyResult(
                    objective_id=self.obj_y.id,
                    title="ky",
                    type=domain_enums.KeyResultType.INCREASE,
                    start_value=0,
                    target_value=100,
                ),
            )
        )
        return self

    def gid(self, type_name: str, row: Any) -> str:
        return encode(type_name, row.id)


async def okr_stdout(bin_okr: str, env: dict[str, str], *args: str) -> str:
    """Run the `okr` command; its stdout (it must exit 0)."""
    proc = await asyncio.create_subprocess_exec(
        bin_okr, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def misses() -> dict[tuple[str, str], float]:
    """Fields read by their own resolver so far (okr_plan_misses), per (type, field)."""
    out: dict[tuple[str, str], float] = {}
    for metric in MISSES.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out[(sample.labels["type"], sample.labels["field"])] = sample.value
    return out


def new_misses(before: dict[tuple[str, str], float]) -> set[tuple[str, str]]:
    return {k for k, v in misses().items() if v > before.get(k, 0)}


class WorldTemplate:
    """A World built into the database `name`: each test copies that database and gets
    the world's names and tokens over its own client and database."""

    def __init__(self, name: str, world: World) -> None:
        self.name = name
        self.built = world
        self.org_id, self.admin_id = world.org.id, world.org.admin_id

    def org(self, client: httpx.AsyncClient, db: Database) -> Org:
        return Org(client, db, self.org_id, self.admin_id)

    def world(self, org: Org, db: Database) -> World:
        names = {k: v for k, v in self.built.__dict__.items() if k not in ("org", "db")}
        world = World()
        world.__dict__.update(copy.deepcopy(names))  # a test may change its own
        world.org, world.db = org, db
        return world


class Worlds:
    """World templates of one worker, built on first use: at the wall clock (`None`), or
    with every write at one instant (its answers then the same on every run)."""

    def __init__(self, pg: Any, template: str) -> None:
        self.pg, self.template = pg, template
        self.built: dict[datetime | None, WorldTemplate] = {}

    def get(self, written: datetime | None = None) -> WorldTemplate:
        if written not in self.built:  # a sync fixture's: no event loop is running
            self.built[written] = asyncio.run(self._build(written))
        return self.built[written]

    async def _build(self, written: datetime | None) -> WorldTemplate:
        name = f"okr_world_{os.getpid()}_{len(self.built)}"
        conn = await self.pg.admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        finally:
            await conn.close()
        url = self.pg.url(name)
        db = Database(url, pool_size=4)
        folder = Path(tempfile.mkdtemp(prefix="okr-world-"))
        try:
            app = create_app(
                Settings(jwt_secret=JWT_SECRET, data_dir=folder, database_url=None), url
            )
            app.state.db = db
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://okr.test") as c:
                with clock.held(written) if written is not None else nullcontext():
                    world = await World().build(await new_org(c, db), db)
        finally:
            await db.dispose()  # a template must have no connections
            shutil.rmtree(folder, ignore_errors=True)
        return WorldTemplate(name, world)

    async def drop(self) -> None:
        conn = await self.pg.admin()
        try:
            for t in self.built.values():
                await conn.execute(f'DROP DATABASE IF EXISTS "{t.name}" WITH (FORCE)')
        finally:
            await conn.close()
