"""`okr export` and `okr import`: a whole organization as one versioned JSON document.

The document (format `okr-export`, FORMAT_VERSION) is one JSON object written one row
per line, so it stays valid JSON, diffs line by line, and streams both ways:

    {"format": "okr-export", "version": 1, "exportedAt": "...",
    "organization": {...},
    "users": [
    {"id": 1, ...},
    {"id": 2, ...}
    ],
    ...
    "webhookEndpoints": [
    ]
    }

Rows keep the ids of the exporting database; references name those ids. Nothing
secret is written: no API keys (and no reference to one), no password or token, no
webhook secret, no metric source headers, no event log.

Export reads one REPEATABLE READ, read-only snapshot, a server-side cursor per section.
Import stages each section in a temporary table with COPY (bounded memory), gives every
row a new id from its table's sequence, refuses a reference to a row the document does
not hold, inserts everything under the new organization in one transaction, writes one
ORGANIZATION_IMPORTED event, and commits only if `okr verify` of the organization is
clean. Webhook endpoints come in inactive and without a secret."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from typing import IO, Any

import asyncpg
import orjson
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from service import events
from service.db import sqlstate
from service.domain.errors import ErrorCode, Rejected, invalid
from service.verify import verify, verify_event_sequences

FORMAT = "okr-export"
FORMAT_VERSION = 1
BATCH = 2_000
WORK_MEM = "64MB"  # for the import's transaction only


@dataclass(frozen=True)
class Col:
    """One column: its name in the table, its key in the document, and its kind:
    text, int, float, bool, instant, date, json, caller (as check_in.caller), or
    `ref` to the section named in `to`."""

    column: str
    kind: str
    to: str | None = None
    required: bool = False

    @cached_property
    def key(self) -> str:
        head, *rest = self.column.split("_")
        return head + "".join(w.title() for w in rest)


def _c(column: str, kind: str = "text", *, required: bool = False) -> Col:
    return Col(column, kind, required=required)


def _ref(column: str, to: str, *, required: bool = False) -> Col:
    return Col(column, "ref", to, required)


@dataclass(frozen=True)
class Section:
    name: str  # the document's key
    table: str
    cols: tuple[Col, ...]
    keyed: bool = True  # rows have an `id` of their own
    order: str = "id"

    @cached_property
    def all_cols(self) -> tuple[Col, ...]:
        return ((Col("id", "int", required=True),) if self.keyed else ()) + self.cols

    @cached_property
    def keys(self) -> frozenset[str]:
        return frozenset(c.key for c in self.all_cols)


CREATED = _c("created_at", "instant")

# In the order they are inserted (a foreign key's target first).
SECTIONS: tuple[Section, ...] = (
    Section(
        "users",
        "app_user",
        (
            _c("name", required=True),
            _c("email", required=True),
            _c("role", required=True),
            _c("active", "bool", required=True),
            _c("anonymized_at", "instant"),
            CREATED,
        ),
    ),
    Section(
        "teams",
        "team",
        (
            _c("name", required=True),
            _ref("parent_id", "teams"),
            _c("check_in_cadence_days", "int"),
            _c("archived_at", "instant"),
            CREATED,
        ),
    ),
    Section(
        "memberships",
        "team_membership",
        (_ref("team_id", "teams", required=True), _ref("user_id", "users", required=True), CREATED),
        keyed=False,
        order="team_id, user_id",
    ),
    Section(
        "cycles",
        "cycle",
        (
            _c("name", required=True),
            _c("starts_on", "date", required=True),
            _c("ends_on", "date", required=True),
            _c("status", required=True),
            _c("version", "int", required=True),
            CREATED,
        ),
    ),
    Section(
        "metrics",
        "metric",
        (
            _c("key", required=True),
            _c("name", required=True),
            _c("unit"),
            _c("description"),
            _c("archived_at", "instant"),
            CREATED,
        ),
    ),
    Section(
        "metricSources",
        "metric_source",
        (
            _ref("metric_id", "metrics", required=True),
            _c("kind", required=True),
            _c("url", required=True),
            _c("query", required=True),
            _c("interval_seconds", "int", required=True),
            _c("next_run_at", "instant", required=True),
            _c("last_run_at", "instant"),
            _c("last_value", "float"),
            _c("last_error"),
            _c("failing", "bool", required=True),
            CREATED,
        ),
        keyed=False,
        order="metric_id",
    ),
    Section(
        "objectives",
        "objective",
        (
            _ref("cycle_id", "cycles", required=True),
            _c("title", required=True),
            _c("external_key"),
            _c("description"),
            _ref("team_id", "teams"),
            _ref("owner_id", "users"),
            _ref("parent_id", "objectives"),
            _c("weight", "float", required=True),
            _c("visibility", required=True),
            _c("progress", "float", required=True),
            _c("has_check_in", "bool", required=True),
            _c("score", "float"),
            _c("went_well"),
            _c("challenges"),
            _c("lessons"),
            _c("archived_at", "instant"),
            _ref("carried_from_id", "objectives"),
            _c("version", "int", required=True),
            CREATED,
            _c("updated_at", "instant"),
        ),
    ),
    Section(
        "keyResults",
        "key_result",
        (
            _ref("objective_id", "objectives", required=True),
            _c("title", required=True),
            _c("external_key"),
            _ref("owner_id", "users"),
            _c("type", required=True),
            _c("measure", required=True),
            _c("unit"),
            _c("start_value", "float", required=True),
            _c("target_value", "float", required=True),
            _c("current_value", "float", required=True),
            _c("weight", "float", required=True),
            _c("progress", "float", required=True),
            _c("confidence", "float"),
            _ref("last_check_in_id", "checkIns"),
            _c("last_check_in_at", "instant"),
            _c("score", "float"),
            _c("score_reason"),
            _ref("carried_from_id", "keyResults"),
            _ref("metric_id", "metrics"),
            _c("due_notice_for", "instant"),
            _c("archived_at", "instant"),
            _c("version", "int", required=True),
            CREATED,
            _c("updated_at", "instant"),
        ),
    ),
    Section(
        "measurements",
        "measurement",
        (
            _ref("metric_id", "metrics", required=True),
            _c("value", "float", required=True),
            _c("measured_at", "instant", required=True),
            _c("source"),
            _c("caller", "caller", required=True),
            _c("idempotency_key"),
            CREATED,
            _c("retracted_at", "instant"),
            _ref("retracted_by_id", "users"),
            _c("retraction_reason"),
        ),
    ),
    Section(
        "checkIns",
        "check_in",
        (
            _ref("key_result_id", "keyResults", required=True),
            _c("value", "float", required=True),
            _c("confidence", "float"),
            _c("note"),
            _ref("author_id", "users"),
            _c("progress", "float", required=True),
            _c("idempotency_key"),
            _c("caller", "caller", required=True),
            _c("measured_at", "instant"),
            CREATED,
            _ref("measurement_id", "measurements"),
            _c("retracted_at", "instant"),
            _ref("retracted_by_id", "users"),
            _c("retraction_reason"),
            _ref("correction_of_id", "checkIns"),
            _ref("corrected_by_id", "checkIns"),
        ),
    ),
    Section(
        "comments",
        "comment",
        (
            _ref("objective_id", "objectives"),
            _ref("key_result_id", "keyResults"),
            _ref("author_id", "users"),
            _c("body", required=True),
            CREATED,
        ),
    ),
    Section(
        "webhookEndpoints",
        "webhook_endpoint",
        (
            _c("url", required=True),
            _c("description"),
            _c("kinds", "json", required=True),
            _ref("team_id", "teams"),
            _c("active", "bool", required=True),
            _c("disabled_reason"),
            _c("failing_since", "instant"),
            CREATED,
        ),
    ),
)
BY_NAME = {s.name: s for s in SECTIONS}
ORGANIZATION_COLS = (
    _c("name", required=True),
    _c("slug", required=True),
    _c("on_track_gap", "float", required=True),
    _c("at_risk_gap", "float", required=True),
    _c("check_in_cadence_days", "int", required=True),
    CREATED,
)
# An inactive endpoint without a secret says why, until an admin rotates one.
IMPORTED_ENDPOINT = "imported: rotate its secret to activate it"

_CALLER = re.compile(r"^(user|key|organization):(\d+)$")


# --- export ----------------------------------------------------------------------------


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


def _exported(col: Col, value: Any) -> Any:
    if col.kind == "json" and isinstance(value, str):
        return json.loads(value)
    return value


def _select(section: Section) -> str:
    cols = ", ".join(c.column for c in section.all_cols)
    return f"SELECT {cols} FROM {section.table} WHERE organization_id = $1 ORDER BY {section.order}"


@dataclass
class ExportCounts:
    rows: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.rows.values())


async def export(
    pg: asyncpg.Connection,
    slug: str,
    out: IO[bytes],
    *,
    on_start: Callable[[int], None] = lambda total: None,
    on_rows: Callable[[int], None] = lambda n: None,
) -> ExportCounts:
    """Write the organization `slug` to `out`, from one snapshot. `on_start` hears the
    number of rows to come, `on_rows` each batch written (a progress bar)."""
    async with pg.transaction(isolation="repeatable_read", readonly=True):
        names = ", ".join(c.column for c in ORGANIZATION_COLS)
        org = await pg.fetchrow(f"SELECT id, {names} FROM organization WHERE slug = $1", slug)
        if org is None:
            raise Rejected(ErrorCode.NOT_FOUND, f"no organization with slug {slug!r}", ["org"])
        org_id = org["id"]
        totals = {}
        for section in SECTIONS:
            totals[section.name] = await pg.fetchval(
                f"SELECT count(*) FROM {section.table} WHERE organization_id = $1", org_id
            )
        on_start(sum(totals.values()))
        exported_at = await pg.fetchval("SELECT now()")
        head = {"format": FORMAT, "version": FORMAT_VERSION, "exportedAt": exported_at}
        out.write(_dumps(head)[:-1] + b",\n")
        organization = {c.key: org[c.column] for c in ORGANIZATION_COLS}
        out.write(b'"organization": ' + _dumps(organization) + b",\n")
        counts: dict[str, int] = {}
        for index, section in enumerate(SECTIONS):
            out.write(_dumps(section.name) + b": [\n")
            n = 0
            pending = 0
            cols = section.all_cols
            async for r in pg.cursor(_select(section), org_id, prefetch=BATCH):
                line = _dumps({c.key: _exported(c, r[i]) for i, c in enumerate(cols)})
                out.write((b",\n" if n else b"") + line)
                n += 1
                pending += 1
                if pending == BATCH:
                    on_rows(pending)
                    pending = 0
            on_rows(pending)
            counts[section.name] = n
            out.write((b"\n" if n else b"") + (b"]\n" if index == len(SECTIONS) - 1 else b"],\n"))
        out.write(b"}\n")
    return ExportCounts(counts)


# --- reading a document -------------------------------------------------------------------


@dataclass
class Header:
    version: int
    organization: dict[str, Any]


Item = tuple[str, dict[str, Any]]  # (section name, row)


def _refuse(message: str) -> Rejected:
    return Rejected(ErrorCode.INVALID, message, ["file"])


def _check_head(head: Any) -> None:
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise _refuse(f'not an okr export document (no "format": "{FORMAT}")')
    version = head.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _refuse("the document's version must be a positive whole number")
    if version > FORMAT_VERSION:
        raise _refuse(
            f"the document is format version {version}, newer than this build reads "
            f"({FORMAT_VERSION}): import it with a newer okr"
        )


def read_document(stream: IO[bytes]) -> tuple[Header, Iterator[Item]]:
    """The header and the rows of a document, streamed when it is written one row per
    line (as `export` writes it), else parsed whole (a small document, re-indented)."""
    first = stream.readline()
    try:
        head = orjson.loads(first.rstrip().removesuffix(b",") + b"}")
    except orjson.JSONDecodeError:
        head = None
    if isinstance(head, dict) and head.get("format") == FORMAT and "organization" not in head:
        _check_head(head)
        organization_line = stream.readline().strip()
        prefix = b'"organization": '
        if not organization_line.startswith(prefix):
            raise _refuse("line 2 must hold the organization")
        try:
            organization = orjson.loads(organization_line[len(prefix) :].removesuffix(b","))
        except orjson.JSONDecodeError as exc:
            raise _refuse(f"line 2: not JSON ({exc})") from exc
        return Header(head["version"], _object(organization, "organization")), _lines(stream)
    try:
        whole = json.loads(first + stream.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse(f"the document is not JSON: {exc}") from exc
    _check_head(whole)
    organization = _object(whole.get("organization"), "organization")
    unknown = set(whole) - {"format", "version", "exportedAt", "organization", *BY_NAME}
    if unknown:
        raise _refuse(f"unknown sections: {', '.join(sorted(unknown))}")

    def rows() -> Iterator[Item]:
        for section in SECTIONS:
            listed = whole.get(section.name, [])
            if not isinstance(listed, list):
                raise _refuse(f"{section.name} must be a list")
            for row in listed:
                yield section.name, _object(row, section.name)

    return Header(whole["version"], organization), rows()


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _refuse(f"{where}: each entry must be a JSON object")
    return value


def _lines(stream: IO[bytes]) -> Iterator[Item]:
    section: str | None = None
    number = 2
    ended = False
    for raw in stream:
        number += 1
        line = raw.strip()
        if not line:
            continue
        if ended:
            raise _refuse(f"line {number}: text after the end of the document")
        if section is None:
            if line == b"}":
                ended = True
                continue
            if not line.endswith(b": ["):
                raise _refuse(f'line {number}: a section ("name": [) expected')
            name = line[:-3].strip(b'"').decode()
            if name not in BY_NAME:
                raise _refuse(f"line {number}: unknown section {name!r}")
            section = name
            continue
        if line in (b"]", b"],"):
            section = None
            continue
        try:
            row = orjson.loads(line.removesuffix(b","))
        except orjson.JSONDecodeError as exc:
            raise _refuse(f"line {number}: not a JSON row ({exc})") from exc
        yield section, _object(row, f"line {number}")
    if not ended:
        raise _refuse("the document ends early (no closing brace): is it cut short?")


# --- import ------------------------------------------------------------------------------


_PG_TYPES = {
    "text": "text",
    "int": "bigint",
    "ref": "bigint",
    "float": "double precision",
    "bool": "boolean",
    "instant": "timestamptz",
    "date": "date",
    "json": "text",
    "caller": "text",
}


def _stage(section: Section) -> str:
    return f"import_{section.table}"


def _map(section: Section) -> str:
    return f"import_map_{section.table}"


def _value(section: Section, col: Col, row: dict[str, Any], rownum: int) -> Any:
    v = row.get(col.key)
    if v is None:
        if col.required:
            raise _refuse(f"{section.name} entry {rownum}: {col.key} is missing")
        return None
    kind = col.kind
    t = type(v)
    if kind in ("int", "ref"):
        if t is int:
            return v
    elif kind == "float":
        if t is float:
            return v
        if t is int:
            return float(v)
    elif kind == "instant":
        if t is str:
            try:
                at = datetime.fromisoformat(v)
            except ValueError:
                pass
            else:
                if at.tzinfo is not None:
                    return at
    elif kind == "text":
        if t is str and "\x00" not in v:
            return v
    elif kind == "bool":
        if t is bool:
            return v
    elif kind == "caller":
        if t is str and _CALLER.match(v):
            return v
    elif kind == "date":
        if t is str:
            try:
                return date.fromisoformat(v)
            except ValueError:
                pass
    elif kind == "json":
        return json.dumps(v)
    what = {
        "ref": "an id",
        "int": "a whole number",
        "float": "a number",
        "instant": "an ISO 8601 instant with a UTC offset",
        "text": "text without NUL characters",
        "bool": "true or false",
        "caller": "user:N, key:N or organization:N",
        "date": "an ISO 8601 date",
    }[kind]
    raise _refuse(f"{section.name} entry {rownum}: {col.key} must be {what}, not {v!r}")


async def _driver(session: AsyncSession) -> asyncpg.Connection:
    conn = await session.connection()
    return (await conn.get_raw_connection()).driver_connection  # type: ignore[return-value]


@dataclass
class Imported:
    organization_id: int
    slug: str
    counts: dict[str, int]
    event_seq: int


async def import_document(
    session: AsyncSession,
    header: Header,
    items: Iterator[Item] | AsyncIterator[Item],
    slug: str | None,
    *,
    on_rows: Callable[[int], None] = lambda n: None,
) -> Imported:
    """Load the document as a new organization, in the caller's transaction (which
    must roll back on any exception: a refusal leaves nothing behind)."""
    from service.usecases.organizations import slugify

    org_cols = {
        c.key: _value(Section("organization", "", ()), c, header.organization, 1)
        for c in ORGANIZATION_COLS
    }
    wanted = slug if slug is not None else org_cols["slug"]
    chosen = slugify(wanted)
    if chosen != wanted:
        raise invalid(f"{wanted!r} is not a slug (lowercase letters, digits and -)", "slug")
    taken = Rejected(
        ErrorCode.CONFLICT,
        f"an organization with slug {chosen!r} exists already: nothing imported "
        "(choose another with --slug)",
        ["slug"],
    )
    if await session.scalar(text("SELECT 1 FROM organization WHERE slug = :s"), {"s": chosen}):
        raise taken
    try:
        org_id = await session.scalar(
            text(
                "INSERT INTO organization (name, slug, on_track_gap, at_risk_gap, "
                "check_in_cadence_days, created_at) VALUES (:name, :slug, :on_track_gap, "
                ":at_risk_gap, :cadence, coalesce(:created_at, now())) RETURNING id"
            ),
            {
                "name": org_cols["name"],
                "slug": chosen,
                "on_track_gap": org_cols["onTrackGap"],
                "at_risk_gap": org_cols["atRiskGap"],
                "cadence": org_cols["checkInCadenceDays"],
                "created_at": org_cols["createdAt"],
            },
        )
    except DBAPIError as exc:
        if sqlstate(exc) == "23505":  # taken meanwhile, by a concurrent import or create
            raise taken from exc
        raise _refuse(f"organization: {_detail(exc)}") from exc
    assert isinstance(org_id, int)
    for section in SECTIONS:
        defs = ", ".join(f"{c.column} {_PG_TYPES[c.kind]}" for c in section.all_cols)
        await session.execute(
            text(f"CREATE TEMP TABLE {_stage(section)} (n bigint, {defs}) ON COMMIT DROP")
        )
    # The id maps are hash-joined once per reference: room for them in memory.
    await session.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
    pg = await _driver(session)

    counts = {s.name: 0 for s in SECTIONS}
    batches: dict[str, list[tuple[Any, ...]]] = {s.name: [] for s in SECTIONS}

    async def flush(name: str) -> None:
        section = BY_NAME[name]
        rows = batches[name]
        if rows:
            try:
                await pg.copy_records_to_table(
                    _stage(section),
                    records=rows,
                    columns=["n", *(c.column for c in section.all_cols)],
                )
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OverflowError) as exc:
                raise _refuse(f"{name}: a value the database cannot hold ({exc})") from exc
            on_rows(len(rows))
            batches[name] = []

    async def take(name: str, row: dict[str, Any]) -> None:
        section = BY_NAME[name]
        counts[name] += 1
        if not section.keys.issuperset(row):
            unknown = set(row) - section.keys
            raise _refuse(
                f"{name} entry {counts[name]}: unknown fields {', '.join(sorted(unknown))}"
            )
        values = tuple(_value(section, c, row, counts[name]) for c in section.all_cols)
        batches[name].append((counts[name], *values))
        if len(batches[name]) >= BATCH:
            await flush(name)

    if isinstance(items, AsyncIterator):
        async for name, row in items:
            await take(name, row)
    else:
        for name, row in items:
            await take(name, row)
    for section in SECTIONS:
        await flush(section.name)
        await session.execute(text(f"ANALYZE {_stage(section)}"))  # temp: never auto-analyzed

    # New ids, from each table's own sequence.
    for section in SECTIONS:
        if not section.keyed:
            continue
        stage = _stage(section)
        dup = await session.scalar(
            text(f"SELECT id FROM {stage} GROUP BY id HAVING count(*) > 1 LIMIT 1")
        )
        if dup is not None:
            raise _refuse(f"{section.name}: id {dup} appears twice")
        await session.execute(
            text(
                f"CREATE TEMP TABLE {_map(section)} (old bigint PRIMARY KEY, new bigint NOT NULL) "
                "ON COMMIT DROP"
            )
        )
        await session.execute(
            text(
                f"INSERT INTO {_map(section)} SELECT id, "
                f"nextval(pg_get_serial_sequence('{section.table}', 'id')) FROM {stage} ORDER BY id"
            )
        )
        await session.execute(text(f"ANALYZE {_map(section)}"))

    # Every reference names a row of the document.
    for section in SECTIONS:
        stage = _stage(section)
        for col in section.cols:
            if col.kind == "ref":
                target = _map(BY_NAME[col.to or ""])
                bad = (
                    await session.execute(
                        text(
                            f"SELECT s.n, s.{col.column} AS ref FROM {stage} s "
                            f"WHERE s.{col.column} IS NOT NULL AND NOT EXISTS "
                            f"(SELECT 1 FROM {target} m WHERE m.old = s.{col.column}) "
                            "ORDER BY s.n LIMIT 1"
                        )
                    )
                ).first()
                if bad is not None:
                    raise _refuse(
                        f"{section.name} entry {bad.n}: {col.key} {bad.ref} names no entry "
                        f"of {col.to} in the document"
                    )
            if col.kind == "caller":
                users = _map(BY_NAME["users"])
                bad = (
                    await session.execute(
                        text(
                            f"SELECT s.n, s.caller FROM {stage} s WHERE s.caller LIKE 'user:%' "
                            f"AND NOT EXISTS (SELECT 1 FROM {users} m "
                            "WHERE m.old = CAST(substr(s.caller, 6) AS bigint)) "
                            "ORDER BY s.n LIMIT 1"
                        )
                    )
                ).first()
                if bad is not None:
                    raise _refuse(
                        f"{section.name} entry {bad.n}: caller {bad.caller} names no entry "
                        "of users in the document"
                    )

    for section in SECTIONS:
        await _insert(session, section, org_id)

    seq = await events.record(
        session,
        None,
        org_id,
        events.organization_imported(org_id, org_cols["name"], chosen, counts),
    )
    await session.execute(
        text("UPDATE webhook_endpoint SET last_seq = :seq WHERE organization_id = :org"),
        {"seq": seq, "org": org_id},
    )
    conn = await session.connection()
    _checked, mismatches = await verify(conn, org_id)
    gaps = await verify_event_sequences(conn, org_id)
    if mismatches or gaps:
        shown = "; ".join(str(m) for m in [*mismatches, *gaps][:5])
        raise _refuse(
            f"the document's stored numbers do not match a fresh recomputation "
            f"({len(mismatches) + len(gaps)} differences, e.g. {shown}): nothing imported"
        )
    return Imported(org_id, chosen, counts, seq)


def _expr(section: Section, col: Col, org_id: int, joined: str) -> str:
    """The value inserted for `col`; `joined`: the alias of the id map joined for it."""
    if col.kind == "ref":
        return f"{joined}.new"
    if col.kind == "caller":
        return (
            f"CASE WHEN s.caller LIKE 'user:%' THEN 'user:' || {joined}.new "
            f"WHEN s.caller LIKE 'organization:%' THEN 'organization:{int(org_id)}' "
            "ELSE s.caller END"
        )
    if col.kind == "json":
        return f"CAST(s.{col.column} AS jsonb)"
    if col.column == "created_at":
        return "coalesce(s.created_at, now())"
    if section.table == "webhook_endpoint" and col.column == "active":
        return "false"
    if section.table == "webhook_endpoint" and col.column == "disabled_reason":
        return f"coalesce(s.disabled_reason, '{IMPORTED_ENDPOINT}')"
    return f"s.{col.column}"


def _joins(section: Section) -> list[str]:
    """The id maps each reference (and a caller that is a user) is translated through,
    joined as j0, j1, ... in the order of the section's columns."""
    joins = []
    for n, col in enumerate(section.all_cols):
        if col.kind == "ref":
            on = f"s.{col.column}"
            target = _map(BY_NAME[col.to or ""])
        elif col.kind == "caller":
            on = "CASE WHEN s.caller LIKE 'user:%' THEN CAST(substr(s.caller, 6) AS bigint) END"
            target = _map(BY_NAME["users"])
        elif col.column == "id" and section.keyed:
            on = "s.id"
            target = _map(section)
        else:
            continue
        joins.append(f"LEFT JOIN {target} j{n} ON j{n}.old = {on}")
    return joins


async def _insert(session: AsyncSession, section: Section, org_id: int) -> None:
    cols = [c.column for c in section.all_cols]
    exprs = [
        f"j{n}.new" if c.column == "id" else _expr(section, c, org_id, f"j{n}")
        for n, c in enumerate(section.all_cols)
    ]
    statement = (
        f"INSERT INTO {section.table} (organization_id, {', '.join(cols)}) "
        f"SELECT :org, {', '.join(exprs)} FROM {_stage(section)} s " + " ".join(_joins(section))
    )
    try:
        await session.execute(text(statement), {"org": org_id})
    except DBAPIError as exc:
        broken = _detail(exc)
        raise _refuse(f"{section.name}: the document breaks a rule of the data: {broken}") from exc


def _detail(exc: DBAPIError) -> str:
    orig = getattr(exc, "orig", None)
    return str(getattr(orig, "__cause__", None) or orig or exc).strip()
