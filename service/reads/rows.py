"""The read side's set-based statements, for planned reads (schema/plan/).

One `Reads` per request holds one pooled connection and runs every statement of the
plan on it, one after another (no transaction of its own: each statement is its own
snapshot, as the data loaders' batches are). Statements take whole sets of keys
(`= ANY($2)`), so their number depends on the document, never on the data. Rows come
back as typed, read-only records with attribute access (`Rec`), never ORM instances.

Visibility: objectives through the one rule of service/reads/visibility.py, its SQL
predicate for pages and counts (rendered once per caller), its Python twin for rows
already loaded (parents, descendants, a node and what it hangs from).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from operator import itemgetter
from typing import Any

import asyncpg
from sqlalchemy.dialects import postgresql

from service import models, sql
from service.db import Database, _statement_count
from service.domain.principal import Principal
from service.observability.tracing import statement_span
from service.reads.joins import COLUMNS, JOINS, absorb, absorb_prefixed, from_list, select_list
from service.reads.visibility import can_see_objective, visible_objectives


class Rec(asyncpg.Record):
    """A row with its columns as attributes too (row.id as well as row["id"])."""

    __slots__ = ()


# Every column of every table (and the few computed ones the reads add) as a property
# reading the record's item: C all the way, no __getattr__ fallback per access.
for _name in {c.name for t in models.metadata.tables.values() for c in t.columns} | {
    "start_id",
    "depth",
    "_rn",
    "n",
}:
    if not hasattr(asyncpg.Record, _name):
        setattr(Rec, _name, property(itemgetter(_name)))


_VISIBLE_SQL: dict[tuple[Any, ...], str] = {}


def visible_sql(p: Principal) -> str:
    """The objective rule's SQL predicate over the table `objective`, rendered with its
    values inline (ids and fixed words only), once per kind of caller."""
    key = (p.is_admin, p.user_id, tuple(sorted(p.team_ids)))
    got = _VISIBLE_SQL.get(key)
    if got is None:
        expr = visible_objectives(p)
        got = str(
            expr.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
        )
        if len(_VISIBLE_SQL) > 1000:
            _VISIBLE_SQL.clear()
        _VISIBLE_SQL[key] = got
    return got


_BY_ID = {
    table: f"SELECT * FROM {table} WHERE organization_id = $1 AND id = ANY($2::int8[])"
    for table in ("objective", "key_result", "check_in", "app_user", "team", "cycle")
}
_GROUPED = {
    # Archived key results leave lists.
    ("key_result", "objective_id"): "SELECT * FROM key_result WHERE organization_id = $1 "
    "AND objective_id = ANY($2::int8[]) AND archived_at IS NULL ORDER BY id",
    ("key_result", "metric_id"): "SELECT * FROM key_result WHERE organization_id = $1 "
    "AND metric_id = ANY($2::int8[]) AND archived_at IS NULL ORDER BY id",
    ("check_in", "key_result_id"): "SELECT * FROM check_in WHERE organization_id = $1 "
    "AND key_result_id = ANY($2::int8[]) ORDER BY id",
}
_LATEST_MEASUREMENTS = (
    "SELECT DISTINCT ON (metric_id) * FROM measurement WHERE organization_id = $1 "
    "AND metric_id = ANY($2::int8[]) AND retracted_at IS NULL "
    "ORDER BY metric_id, measured_at DESC, id DESC"
)
_KEY_RESULT_SEEN = """
SELECT k.*, o.visibility AS o_visibility, o.team_id AS o_team_id, o.owner_id AS o_owner_id
FROM key_result k JOIN objective o ON o.id = k.objective_id
WHERE k.organization_id = $1 AND k.id = $2
"""
_OBJECTIVE_ALL = ", ".join(f"o.{c} AS obj__{c}" for c in COLUMNS["objective"])
_CHECK_IN_ALL = ", ".join(f"ci.{c} AS ci__{c}" for c in COLUMNS["check_in"])
_DESCENDANTS = (
    sql.positional(sql.DESCENDANTS_BY_START, ("org", "ids", "max_depth"), {"ids": "int8[]"})
    + """, capped AS (SELECT * FROM down LIMIT $4)
SELECT capped.start AS start_id, capped.depth AS depth, {columns}{joined} FROM capped
JOIN objective o ON o.id = capped.id{joins}
WHERE capped.depth > 0 ORDER BY capped.start, capped.depth, o.id
"""
)


class Reads:
    """Set-based reads for one request, on one connection, with rows kept by id."""

    def __init__(self, conn: Any, raw: asyncpg.Connection, p: Principal) -> None:
        self.sa = conn  # the SQLAlchemy connection, for statements built as expressions
        self.raw = raw
        self.p = p
        self.org = p.organization_id
        self.known: dict[str, dict[int, Rec]] = defaultdict(dict)
        self.sees_all = p.is_admin
        # What the document selects decides these (schema/plan/render.py): the to-one
        # relations joined into objective and key result statements, the objective
        # columns a walk of descendants reads (None: all of them).
        self.objective_joins: tuple[str, ...] = ()
        self.key_result_joins: tuple[str, ...] = ()
        self.descendant_columns: tuple[str, ...] | None = None
        # check-in pages fetched ahead, with the key result they hang from
        self.pages: dict[tuple[int, int, int | None], list[Any]] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls, db: Database, p: Principal) -> AsyncIterator[Reads]:
        async with db.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            yield cls(conn, raw, p)

    async def fetch(self, sql: str, *args: Any) -> list[Rec]:
        holder = _statement_count.get()
        if holder is not None:
            holder.n += 1
        with statement_span(sql):
            return await self.raw.fetch(sql, *args, record_class=Rec)

    async def execute(self, stmt: Any) -> list[Rec]:
        """A statement built with SQLAlchemy (the objective filters), rendered for asyncpg
        and run on the same connection as the rest."""
        compiled = stmt.compile(
            dialect=self.sa.dialect, compile_kwargs={"render_postcompile": True}
        )
        params = compiled.params
        names = compiled.positiontup or []
        return await self.fetch(compiled.string, *[params[n] for n in names])

    async def execute_joined(self, stmt: Any) -> list[Rec]:
        """An objective statement (ordered by id) with the objective joins added."""
        joins = self.objective_joins
        if not joins:
            return await self.execute(stmt)
        compiled = stmt.compile(
            dialect=self.sa.dialect, compile_kwargs={"render_postcompile": True}
        )
        params = compiled.params
        names = compiled.positiontup or []
        sql = (
            f"SELECT s.*{select_list(joins)} FROM ({compiled.string}) s"
            f"{from_list('s', joins)} ORDER BY s.id"
        )
        rows = await self.fetch(sql, *[params[n] for n in names])
        absorb(self.known, rows, joins)
        return rows

    def sees(self, row: Any) -> bool:
        if self.sees_all:
            return True
        return can_see_objective(self.p, row.visibility, row.team_id, row.owner_id)

    # --- by id -----------------------------------------------------------------------

    async def by_id(self, table: str, keys: Iterable[int | None]) -> dict[int, Rec]:
        """Rows of `table` (unchecked) for these ids, from what is known or one statement."""
        known = self.known[table]
        wanted = {k for k in keys if k is not None and k not in known}
        if wanted:
            for r in await self.fetch(_BY_ID[table], self.org, sorted(wanted)):
                known[r.id] = r
        return known

    def remember(self, table: str, rows: Iterable[Any]) -> None:
        known = self.known[table]
        for r in rows:
            known.setdefault(r.id, r)

    # --- visibility-checked single rows (node) ---------------------------------------------

    async def objective(self, pk: int) -> Rec | None:
        row = (await self.by_id("objective", [pk])).get(pk)
        return row if row is not None and self.sees(row) else None

    async def key_result(
        self, pk: int, whole: bool = False, page: tuple[int, int | None] | None = None
    ) -> Rec | None:
        """A key result by id if the caller may see it. `whole`: its objective, cycle and
        team come in the same statement; `page` (first, after): so does that page of its
        check-ins (newest first, one more than asked), kept for `check_in_pages`."""
        known = self.known["key_result"]
        if pk in known:
            row = known[pk]
            return row if await self.objective(row.objective_id) is not None else None
        if not whole and page is None:
            # The key result with what the rule reads of its objective: one statement.
            found = await self.fetch(_KEY_RESULT_SEEN, self.org, pk)
        else:
            found = await self.fetch(*self._key_result_sql(pk, whole, page))
        if not found:
            return None
        row = found[0]
        known[pk] = row
        if whole:
            absorb_prefixed(self.known["objective"], found[:1], "objective", "obj")
            absorb(self.known, found[:1], ("cycle", "team"))
        if page is not None:
            rows = absorb_prefixed(self.known["check_in"], found, "check_in", "ci")
            self.pages[(pk, page[0], page[1])] = rows
        seen = can_see_objective(self.p, row["o_visibility"], row["o_team_id"], row["o_owner_id"])
        return row if seen else None

    def _key_result_sql(
        self, pk: int, whole: bool, page: tuple[int, int | None] | None
    ) -> tuple[Any, ...]:
        cols = [
            "k.*",
            "o.visibility AS o_visibility",
            "o.team_id AS o_team_id",
            "o.owner_id AS o_owner_id",
        ]
        joins = ""
        args: list[Any] = [self.org, pk]
        if whole:
            cols.append(_OBJECTIVE_ALL)
            cols.append(select_list(("cycle", "team")).lstrip(", "))
            joins += from_list("o", ("cycle", "team"))
        order = ""
        if page is not None:
            cols.append(_CHECK_IN_ALL)
            args.append(page[0] + 1)
            before = ""
            if page[1] is not None:
                args.append(page[1])
                before = " AND c.id < $4"
            joins += (
                " LEFT JOIN LATERAL (SELECT * FROM check_in c WHERE c.organization_id = $1"
                f" AND c.key_result_id = k.id{before} ORDER BY c.id DESC LIMIT $3) ci ON true"
            )
            order = " ORDER BY ci.id DESC"
        sql = (
            f"SELECT {', '.join(cols)} FROM key_result k JOIN objective o ON o.id = "
            f"k.objective_id{joins} WHERE k.organization_id = $1 AND k.id = $2{order}"
        )
        return (sql, *args)

    async def check_in(self, pk: int) -> Rec | None:
        row = (await self.by_id("check_in", [pk])).get(pk)
        if row is None or await self.key_result(row.key_result_id) is None:
            return None
        return row

    # --- groups and pages ------------------------------------------------------------------

    async def grouped(self, table: str, column: str, keys: list[int]) -> list[list[Rec]]:
        groups: dict[int, list[Rec]] = defaultdict(list)
        if keys:
            sql = _GROUPED[(table, column)]
            joins = self.key_result_joins if table == "key_result" else ()
            if joins:
                sql = (
                    f"SELECT k.*{select_list(joins)} FROM key_result k{from_list('k', joins)}"
                    f" WHERE k.organization_id = $1 AND k.{column} = ANY($2::int8[])"
                    " AND k.archived_at IS NULL ORDER BY k.id"
                )
            rows = await self.fetch(sql, self.org, sorted(set(keys)))
            for r in rows:
                groups[r[column]].append(r)
            if joins:
                absorb(self.known, rows, joins)
        self.remember(table, (r for g in groups.values() for r in g))
        return [groups.get(k, []) for k in keys]

    async def latest_measurements(self, metrics: list[int]) -> dict[int, Rec]:
        """Each metric's measurement measured last (not retracted), by metric id."""
        if not metrics:
            return {}
        rows = await self.fetch(_LATEST_MEASUREMENTS, self.org, sorted(set(metrics)))
        return {r.metric_id: r for r in rows}

    async def check_in_pages(
        self, keys: list[int], first: int, after: int | None, backward: bool = False
    ) -> list[list[Rec]]:
        """Newest first, `first + 1` per key result (the one more tells of a next page);
        `backward`: the page before the cursor `after`, oldest first (the order read)."""
        if not backward:
            ahead = [self.pages.get((k, first, after)) for k in keys]
            if keys and all(p is not None for p in ahead):
                return [list(p or ()) for p in ahead]
        sql = (
            "SELECT * FROM (SELECT *, row_number() OVER "
            f"(PARTITION BY key_result_id ORDER BY id {'ASC' if backward else 'DESC'}) AS _rn "
            "FROM check_in WHERE organization_id = $1 AND key_result_id = ANY($2::int8[])"
            + ((" AND id > $4" if backward else " AND id < $4") if after is not None else "")
            + ") s WHERE _rn <= $3 ORDER BY key_result_id, _rn"
        )
        args: list[Any] = [self.org, sorted(set(keys)), first + 1]
        if after is not None:
            args.append(after)
        groups: dict[int, list[Rec]] = defaultdict(list)
        for r in await self.fetch(sql, *args):
            groups[r.key_result_id].append(r)
        return [groups.get(k, []) for k in keys]

    async def check_in_count(self, key_result: int) -> int:
        rows = await self.fetch(
            "SELECT count(*) AS n FROM check_in WHERE organization_id = $1 AND key_result_id = $2",
            self.org,
            key_result,
        )
        return int(rows[0]["n"])

    async def check_ins_beyond(
        self, keys: list[int], cursor: int | None, backward: bool
    ) -> list[int]:
        """The key results with a check-in on the cursor's other side (newest first:
        forward, at or before it is an id at least the cursor's; backward, at or after
        it is an id at most the cursor's)."""
        if cursor is None or not keys:
            return []
        rows = await self.fetch(
            "SELECT DISTINCT key_result_id AS n FROM check_in WHERE organization_id = $1 "
            f"AND key_result_id = ANY($2::int8[]) AND id {'<=' if backward else '>='} $3",
            self.org,
            sorted(set(keys)),
            cursor,
        )
        return [r["n"] for r in rows]

    # Objectives by a column (a team's, a parent's children): the caller's, by id. A team's
    # leave archived ones out (like `objectives`); a parent's children keep them.
    _OWNED_BY = {"team_id": True, "parent_id": False}  # column: live only

    def _owned_where(self, column: str) -> list[str]:
        where = [
            "organization_id = $1",
            f"{column} = ANY($2::int8[])",
            f"({visible_sql(self.p)})",
        ]
        if self._OWNED_BY[column]:
            where.append("archived_at IS NULL")
        return where

    async def objectives_beyond(
        self, column: str, keys: list[int], cycle: int | None, cursor: int | None, backward: bool
    ) -> list[int]:
        """The keys (teams, parents) with an objective the caller may see (in `cycle`
        when given) on the cursor's other side (by id: forward at or before it, backward
        at or after it)."""
        if cursor is None or not keys:
            return []
        where = self._owned_where(column)
        args: list[Any] = [self.org, sorted(set(keys)), cursor]
        where.append(f"id {'>=' if backward else '<='} $3")
        if cycle is not None:
            args.append(cycle)
            where.append("cycle_id = $4")
        sql = f"SELECT DISTINCT {column} AS n FROM objective WHERE {' AND '.join(where)}"
        return [r["n"] for r in await self.fetch(sql, *args)]

    async def objective_pages(
        self,
        column: str,
        keys: list[int],
        cycle: int | None,
        first: int,
        after: int | None,
        backward: bool = False,
    ) -> list[list[Rec]]:
        """Objectives of each key (a team's, a parent's children) the caller may see (in
        `cycle` when given), by id; `backward`: the page before the cursor `after`, from
        it toward the start."""
        where = self._owned_where(column)
        args: list[Any] = [self.org, sorted(set(keys)), first + 1]
        if cycle is not None:
            args.append(cycle)
            where.append(f"cycle_id = ${len(args)}")
        if after is not None:
            args.append(after)
            where.append(f"id {'<' if backward else '>'} ${len(args)}")
        joins = self.objective_joins
        sql = (
            f"SELECT s.*{select_list(joins)} FROM (SELECT *, row_number() OVER "
            f"(PARTITION BY {column} ORDER BY id {'DESC' if backward else 'ASC'}) "
            f"AS _rn FROM objective WHERE {' AND '.join(where)}) s{from_list('s', joins)} "
            f"WHERE s._rn <= $3 ORDER BY s.{column}, s._rn"
        )
        groups: dict[int, list[Rec]] = defaultdict(list)
        rows = await self.fetch(sql, *args)
        absorb(self.known, rows, joins)
        for r in rows:
            groups[r[column]].append(r)
        self.remember("objective", (r for g in groups.values() for r in g))
        return [groups.get(k, []) for k in keys]

    async def objective_count(self, column: str, key: int, cycle: int | None) -> int:
        where = self._owned_where(column)
        where[1] = f"{column} = $2"
        args: list[Any] = [self.org, key]
        if cycle is not None:
            args.append(cycle)
            where.append("cycle_id = $3")
        sql = f"SELECT count(*) AS n FROM objective WHERE {' AND '.join(where)}"
        return int((await self.fetch(sql, *args))[0]["n"])

    async def descendants(
        self, keys: list[int], depth: int, at_most: int
    ) -> list[list[Rec]] | None:
        """Each objective's whole subtree to `depth` levels, parents before children
        (unchecked: the caller filters by `sees`, as the executor does); None when there
        are more than `at_most` rows in all (the walk stops there, in the database)."""
        groups: dict[int, list[Rec]] = defaultdict(list)
        if keys:
            seeds = len(set(keys))
            joins = self.objective_joins
            wanted = self.descendant_columns
            columns = "o.*" if wanted is None else ", ".join(f"o.{c}" for c in wanted)
            # The rows the joins point at that are known already (the roots' cycle, as a
            # rule) come as NULLs: 2,000 descendants do not decode 2,000 copies of it.
            args: list[Any] = [self.org, sorted(set(keys)), depth, seeds + at_most + 1]
            skip = {}
            for j in joins:
                skip[j] = len(args) + 1
                args.append(sorted(self.known[JOINS[j][0]]))
            sql = _DESCENDANTS.format(
                columns=columns, joined=select_list(joins), joins=from_list("o", joins, skip)
            )
            rows = await self.fetch(sql, *args)
            if len(rows) > at_most:
                return None
            absorb(self.known, rows, joins)
            for r in rows:
                groups[r.start_id].append(r)
        return [groups.get(k, []) for k in keys]
