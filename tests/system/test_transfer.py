"""`okr export` and `okr import` (issue 25 items 3 and 4), run as real processes against
the test database: no secret leaves in a document, an import is a new organization
that verifies clean with one ORGANIZATION_IMPORTED event, exporting it again gives the
same document up to ids and the import's own instants, and every refusal writes
nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import bench.seed
from schema.ids import encode
from service import demo
from service.auth import issue_token
from service.db import Database
from tests import factories as h
from tests.factories import JWT_SECRET, Org, env_for, okr, okr_stdout

# The document's references, written out here (not taken from service/transfer.py), so
# that the normalizer checks the format rather than repeating it.
REFS: dict[str, dict[str, str]] = {
    "users": {},
    "teams": {"parentId": "teams"},
    "memberships": {"teamId": "teams", "userId": "users"},
    "cycles": {},
    "metrics": {},
    "metricSources": {"metricId": "metrics"},
    "objectives": {
        "cycleId": "cycles",
        "teamId": "teams",
        "ownerId": "users",
        "parentId": "objectives",
        "carriedFromId": "objectives",
    },
    "keyResults": {
        "objectiveId": "objectives",
        "ownerId": "users",
        "lastCheckInId": "checkIns",
        "carriedFromId": "keyResults",
        "metricId": "metrics",
    },
    "measurements": {"metricId": "metrics", "retractedById": "users"},
    "checkIns": {
        "keyResultId": "keyResults",
        "authorId": "users",
        "measurementId": "measurements",
        "retractedById": "users",
        "correctionOfId": "checkIns",
        "correctedById": "checkIns",
    },
    "comments": {"objectiveId": "objectives", "keyResultId": "keyResults", "authorId": "users"},
    "webhookEndpoints": {"teamId": "teams"},
}
KEYED = [name for name in REFS if name not in ("memberships", "metricSources")]
TABLES = (
    "organization",
    "app_user",
    "team",
    "team_membership",
    "cycle",
    "objective",
    "key_result",
    "check_in",
    "comment",
    "metric",
    "measurement",
    "metric_source",
    "webhook_endpoint",
    "event",
)


def normalized(document: str) -> dict[str, Any]:
    """The document with each id replaced by its row's position in its section (an import
    gives new ids in the same order), the slug, the export's instant, and what an import
    sets by contract (webhook endpoints inactive) left out."""
    doc = json.loads(document)
    assert doc["format"] == "okr-export" and doc["version"] == 1
    doc.pop("exportedAt")
    doc["organization"].pop("slug")
    position = {name: {row["id"]: n for n, row in enumerate(doc[name])} for name in KEYED}
    org_callers = set()
    for name, refs in REFS.items():
        for row in doc[name]:
            if name in KEYED:
                row["id"] = position[name][row["id"]]
            for key, target in refs.items():
                if row[key] is not None:
                    row[key] = position[target][row[key]]
            if "caller" in row:
                kind, number = row["caller"].split(":")
                if kind == "user":
                    row["caller"] = f"user:#{position['users'][int(number)]}"
                elif kind == "organization":
                    org_callers.add(number)
                    row["caller"] = "organization"
            if name == "webhookEndpoints":
                row.pop("active")
                row.pop("disabledReason")
    assert len(org_callers) <= 1  # the organization's own id, whichever it is
    return doc


async def row_counts(db: Database) -> dict[str, int]:
    async with db.connect() as conn:
        return {t: int(await conn.scalar(text(f"SELECT count(*) FROM {t}"))) for t in TABLES}


async def org_id_of(db: Database, slug: str) -> int:
    async with db.connect() as conn:
        found = await conn.scalar(text("SELECT id FROM organization WHERE slug = :s"), {"s": slug})
    assert found is not None, slug
    return int(found)


async def enrich(org: Org) -> dict[str, str]:
    """Add to an organization what a round trip must keep and an export must not
    leak: a retracted and a corrected check-in, a deactivated and an anonymized person,
    a comment, an API key, and metric source headers. Returns the secrets to look for."""
    async with org.db.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT c.id FROM check_in c JOIN key_result k ON k.id = c.key_result_id "
                    "JOIN objective o ON o.id = k.objective_id JOIN cycle y ON y.id = o.cycle_id "
                    "WHERE c.organization_id = :org AND c.measurement_id IS NULL "
                    "AND c.retracted_at IS NULL AND y.status = 'ACTIVE' "
                    "ORDER BY c.id LIMIT 2"
                ),
                {"org": org.id},
            )
        ).all()
        objective_id = await conn.scalar(
            text("SELECT min(id) FROM objective WHERE organization_id = :org"), {"org": org.id}
        )
    retracted, corrected = (encode("CheckIn", r.id) for r in rows)
    await h.ok(org, "retractCheckIn", {"checkInId": retracted, "reason": "typo"}, "checkIn { id }")
    await h.ok(
        org,
        "correctCheckIn",
        {"checkInId": corrected, "value": 1.5, "reason": "wrong unit"},
        "checkIn { id }",
    )
    leaving = await h.user(org, "Lee Leaving")
    erased = await h.user(org, "Erin Erased")
    await h.ok(org, "deactivateUser", {"userId": leaving}, "user { id }")
    await h.ok(org, "anonymizeUser", {"userId": erased}, "user { id }")
    await h.ok(
        org,
        "addComment",
        {"subjectId": encode("Objective", objective_id), "body": "Kept across the move"},
        "comment { id }",
    )
    api_key = await h.service_token(org, "logistics-service")
    secrets = {"api key": api_key}
    async with org.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE metric_source SET headers = 'SEALED-HEADERS' WHERE organization_id = :o"),
            {"o": org.id},
        )
        for n, r in enumerate(
            await conn.execute(
                text(
                    "SELECT key_hash FROM api_key WHERE organization_id = :o UNION ALL "
                    "SELECT secret FROM webhook_endpoint WHERE organization_id = :o "
                    "AND secret IS NOT NULL"
                ),
                {"o": org.id},
            )
        ):
            secrets[f"stored secret {n}"] = r[0]
    secrets["headers"] = "SEALED-HEADERS"
    return secrets


async def test_demo_organization_exports_without_secrets_and_round_trips(
    bin_okr, database_url, tmp_path, client, db
):
    org_id, admin_id = await demo.seed(db)
    org = Org(client, db, org_id, admin_id)
    secrets = await enrich(org)
    assert len(secrets) >= 4  # the key, its hash, the webhook secret, the headers
    env = env_for(database_url, tmp_path)
    first = tmp_path / "northwind.json"
    await okr_stdout(bin_okr, env, "export", "--org", demo.SLUG, "-o", str(first))
    document = first.read_text()
    assert not (tmp_path / "northwind.json.partial").exists()
    for what, value in secrets.items():
        assert value not in document, f"the export holds the {what}"
    for word in ('"secret', '"oldSecret', '"keyHash', '"headers', '"password', '"apiKey'):
        assert word not in document, word
    assert "ORGANIZATION_CREATED" not in document  # no event log
    # one row per line: every line but the frame is a whole JSON object
    lines = document.splitlines()
    assert all(json.loads(line.rstrip(",")) for line in lines if line.startswith('{"id"'))

    before = await row_counts(db)
    code, out, err = await okr(bin_okr, env, "import", str(first), "--slug", "northwind-copy")
    assert code == 0, err
    assert "imported organization 'northwind-copy'" in out
    after = await row_counts(db)
    assert after["organization"] == before["organization"] + 1
    for table in ("check_in", "objective", "key_result", "app_user", "measurement", "comment"):
        assert after[table] == 2 * before[table], table  # every row, once more
    copy_id = await org_id_of(db, "northwind-copy")
    async with db.connect() as conn:
        kinds = (
            await conn.execute(
                text("SELECT seq, kind FROM event WHERE organization_id = :o"), {"o": copy_id}
            )
        ).all()
        endpoints = (
            await conn.execute(
                text("SELECT active, secret FROM webhook_endpoint WHERE organization_id = :o"),
                {"o": copy_id},
            )
        ).all()
        sources = await conn.scalar(
            text(
                "SELECT count(*) FROM metric_source WHERE organization_id = :o AND headers IS NULL"
            ),
            {"o": copy_id},
        )
        keys = await conn.scalar(
            text("SELECT count(*) FROM api_key WHERE organization_id = :o"), {"o": copy_id}
        )
    assert [(r.seq, r.kind) for r in kinds] == [(1, "ORGANIZATION_IMPORTED")]
    assert endpoints and all(not r.active and r.secret is None for r in endpoints)
    assert sources == 1 and keys == 0
    assert (await okr_stdout(bin_okr, env, "verify")).startswith("ok:")

    again = await okr_stdout(bin_okr, env, "export", "--org", "northwind-copy")
    assert normalized(again) == normalized(document)
    copied = json.loads(again)
    checks = copied["checkIns"]
    assert sum(c["retractedAt"] is not None for c in checks) >= 2
    assert any(c["correctionOfId"] is not None for c in checks)
    assert any(c["correctedById"] is not None and c["retractedAt"] for c in checks)
    people = {u["email"]: u for u in copied["users"]}
    assert people["lee.leaving@acme.example"]["active"] is False
    erased = [u for u in copied["users"] if u["anonymizedAt"] is not None]
    assert len(erased) == 1 and erased[0]["active"] is False
    assert "erin.erased@acme.example" not in again
    assert copied["organization"]["slug"] == "northwind-copy"

    # ORGANIZATION_IMPORTED is the admins' (its subject is the Organization, which every
    # caller sees for ORGANIZATION_CREATED and the rest).
    async with db.connect() as conn:
        admin = await conn.scalar(
            text("SELECT id FROM app_user WHERE organization_id = :o AND email = :e"),
            {"o": copy_id, "e": demo.ADMIN_EMAIL},
        )
        member = await conn.scalar(
            text(
                "SELECT min(id) FROM app_user WHERE organization_id = :o AND role = 'MEMBER' "
                "AND active"
            ),
            {"o": copy_id},
        )
    feed = "{ events(first: 10) { edges { node { kind } } } }"
    copy = Org(client, db, copy_id, int(admin))
    seen = await copy.call(feed)
    assert [e["node"]["kind"] for e in seen["events"]["edges"]] == ["ORGANIZATION_IMPORTED"]
    hidden = await copy.call(feed, token=issue_token(JWT_SECRET, int(member), copy_id))
    assert hidden["events"]["edges"] == []


@pytest.mark.system  # the bench's whole organization: 7 s here; .ci/run runs it
async def test_a_bench_organization_round_trips(
    bin_okr, database_url, tmp_path, db, pg, monkeypatch
):
    """bench/seed.py's organization at scale 1 (200 teams three deep, 2,000 objectives
    aligned four deep, 8,000 key results), with 3 check-ins per key result instead of 25
    to keep the test short."""
    monkeypatch.setattr(bench.seed, "CHECK_INS_PER_KEY_RESULT", 3)
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    counts = await bench.seed.seed(dsn, 1, slug="bench-small")
    assert counts["check_ins"] == 24_000
    env = env_for(database_url, tmp_path)
    document = tmp_path / "bench.json"
    await okr_stdout(bin_okr, env, "export", "--org", "bench-small", "-o", str(document))
    code, out, err = await okr(bin_okr, env, "import", str(document), "--slug", "bench-copy")
    assert code == 0, err
    assert "24000 checkIns" in out
    assert (await okr_stdout(bin_okr, env, "verify")).startswith("ok:")
    again = await okr_stdout(bin_okr, env, "export", "--org", "bench-copy")
    assert normalized(again) == normalized(document.read_text())


@pytest.fixture
async def exported(org: Org, bin_okr, database_url, tmp_path) -> tuple[dict[str, str], Path]:
    """A small organization (a key result with check-ins), exported."""
    cycle = await h.cycle_now(org)
    objective = await h.objective(org, cycle, "Ship on time")
    kr = await h.key_result(org, objective, "On-time dispatch", start=80, target=95)
    await h.check_in(org, kr, 85)
    await h.check_in(org, kr, 88)
    env = env_for(database_url, tmp_path)
    path = tmp_path / "acme.json"
    await okr_stdout(bin_okr, env, "export", "--org", "acme-logistics", "-o", str(path))
    return env, path


async def refused(bin_okr, env, db, path: Path, *extra: str) -> str:
    """Run an import that must be refused: exit 1, and not a row written."""
    before = await row_counts(db)
    code, out, err = await okr(bin_okr, env, "import", str(path), *extra)
    assert code == 1, (out, err)
    assert await row_counts(db) == before
    return err


async def test_a_taken_slug_is_refused_and_nothing_is_written(bin_okr, db, exported):
    env, path = exported
    err = await refused(bin_okr, env, db, path)
    assert "'acme-logistics' exists already" in err and "--slug" in err
    err = await refused(bin_okr, env, db, path, "--slug", "Not A Slug")
    assert "is not a slug" in err


async def test_a_newer_format_is_refused(bin_okr, db, exported, tmp_path):
    env, path = exported
    newer = tmp_path / "newer.json"
    newer.write_text(path.read_text().replace('"version":1,', '"version":2,', 1))
    err = await refused(bin_okr, env, db, newer, "--slug", "newer")
    assert "format version 2, newer than this build reads (1)" in err


async def test_broken_documents_are_refused_with_nothing_written(bin_okr, db, exported, tmp_path):
    env, path = exported
    lines = path.read_text().splitlines(keepends=True)
    broken = tmp_path / "broken.json"

    def variant(edit) -> Path:
        broken.write_text("".join(edit(list(lines))))
        return broken

    def with_field(marker: str, name: str, value: object):
        """An edit: the first row whose line holds `marker` gets `name` set to `value`."""

        def edit(ls: list[str]) -> list[str]:
            at = next(i for i, line in enumerate(ls) if marker in line)
            row = json.loads(ls[at].rstrip().rstrip(","))
            row[name] = value
            ls[at] = json.dumps(row) + ("," if ls[at].rstrip().endswith(",") else "") + "\n"
            return ls

        return edit

    dangling = with_field('"keyResultId"', "keyResultId", 987654)
    err = await refused(bin_okr, env, db, variant(dangling), "--slug", "x1")
    assert "keyResultId 987654 names no entry of keyResults" in err

    err = await refused(bin_okr, env, db, variant(lambda ls: ls[:-3]), "--slug", "x2")
    assert "ends early" in err

    tampered = with_field('"currentValue"', "progress", 0.99)
    err = await refused(bin_okr, env, db, variant(tampered), "--slug", "x3")
    assert "do not match a fresh recomputation" in err

    def wrong_type(ls: list[str]) -> list[str]:
        at = next(i for i, line in enumerate(ls) if '"measuredAt"' in line)
        ls[at] = ls[at].replace('"measuredAt":"', '"measuredAt":"yesterday', 1)
        return ls

    err = await refused(bin_okr, env, db, variant(wrong_type), "--slug", "x4")
    assert "checkIns entry 1: measuredAt must be an ISO 8601 instant" in err

    def huge_id(ls: list[str]) -> list[str]:
        at = next(i for i, line in enumerate(ls) if '"keyResultId"' in line)
        ls[at] = ls[at].replace('{"id":', '{"id":1' + "0" * 20 + ',"x":', 1)
        return ls

    err = await refused(bin_okr, env, db, variant(huge_id), "--slug", "x6")
    assert "unknown fields x" in err  # refused on the fields before the number is tried

    overflow = with_field('"keyResultId"', "id", 2**63)  # one past bigint
    err = await refused(bin_okr, env, db, variant(overflow), "--slug", "x7")
    assert "checkIns: a value the database cannot hold" in err

    too_long = with_field('"cycleId"', "title", "x" * 400)
    err = await refused(bin_okr, env, db, variant(too_long), "--slug", "x8")
    assert "objectives: the document breaks a rule of the data" in err and "too long" in err

    broken.write_text('{"format": "something else"}')
    err = await refused(bin_okr, env, db, broken, "--slug", "x5")
    assert "not an okr export document" in err

    # The same document, pretty-printed, is read whole (and imports).
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(json.loads(path.read_text()), indent=2))
    code, out, err = await okr(bin_okr, env, "import", str(pretty), "--slug", "pretty")
    assert code == 0, err
    assert "2 checkIns" in out


async def test_a_failed_export_leaves_no_file(bin_okr, exported, tmp_path):
    env, _ = exported
    target = tmp_path / "missing.json"
    code, _out, err = await okr(bin_okr, env, "export", "--org", "no-such-org", "-o", str(target))
    assert code == 1 and "no organization with slug 'no-such-org'" in err
    assert not target.exists() and not (tmp_path / "missing.json.partial").exists()


async def test_progress_shows_on_a_terminal_and_nowhere_else(bin_okr, exported, tmp_path):
    import asyncio
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios

    env, path = exported
    # Piped: the one-line summary, no bar.
    code, _out, err = await okr(bin_okr, env, "import", str(path), "--slug", "piped")
    assert code == 0 and err == ""
    code, _out, err = await okr(bin_okr, env, "export", "--org", "piped")
    assert code == 0 and err.startswith("exported 'piped'") and "\r" not in err

    def on_a_terminal(*args: str) -> str:
        master, slave = pty.openpty()
        # a terminal of 80 columns (a new one has none, and the bar would be empty)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        try:
            subprocess.run(
                [bin_okr, *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=slave,
                check=True,
                timeout=60,
            )
        finally:
            os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
        os.close(master)
        return shown.decode(errors="replace")

    shown = await asyncio.to_thread(on_a_terminal, "export", "--org", "piped")
    assert "\rexport: " in shown and "%|" in shown and "rows/s]" in shown, shown
    shown = await asyncio.to_thread(on_a_terminal, "import", str(path), "--slug", "on-a-tty")
    assert "\rimport: " in shown and "%|" in shown and "B/s]" in shown, shown
