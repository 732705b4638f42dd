"""Planned reads: a query document answered past the general executor.

For a validated query, the fields below each root field are collected with graphql-core's
own field collection (it applies @skip/@include, merges fields by response key, fills
argument defaults). The plan then walks the selection level by level: for all the rows of
one level it fetches each selected relation in one set-based statement (service/reads/
rows.py, all on one connection: objectives, their key results, last check-ins, owners,
teams, cycles, check-in pages), computes derived values (status, expected progress, stale, next
due, forecast) with the pure rules in service/rules.py, and builds the response dict
directly, serialised by the schema's own scalars and enums. Nothing resolves per field.

Anything the plan does not cover (a field, a directive, an argument value that is an
error, a node type, a caller that is not signed in) raises `Unsupported` and the general
executor answers instead: it stays the reference, and a differential test holds the two
equal. The budget (objects, bytes, deadline) is applied to the planned response as the
executor applies it; masking and the result cache sit outside and see no difference.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLFloat,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLString,
    OperationType,
)
from graphql.execution.collect_fields import collect_subfields
from graphql.execution.values import get_argument_values

from schema import ids
from schema.enums import Measure, Role, Visibility
from service.domain import rules
from service.reads.rows import Reads
from service.reads.visibility import can_see_objective

Row = Any
log = logging.getLogger("okr.fastpath")


class Unsupported(Exception):
    """The plan does not cover this document (or this request): use the executor."""


class OverBudget(Exception):
    """The response would hold more objects than the budget allows, for certain (rows
    that would all be shown): the executor's error, without running it."""


_ALLOWED_DIRECTIVES = {"skip", "include"}
_SENTINEL = object()


class Sel:
    """One response key of an object: its field, arguments and what lies below."""

    __slots__ = ("args", "details", "key", "leaf", "name", "nullable", "rtype")

    def __init__(self, key: str, name: str, args: dict[str, Any], details: list[Any]) -> None:
        self.key = key
        self.name = name
        self.args = args
        self.details = details
        self.leaf: Callable[[Any], Any] | None = None
        self.nullable = True
        self.rtype: Any = None


def _named(t: Any) -> Any:
    while isinstance(t, (GraphQLNonNull, GraphQLList)):
        t = t.of_type
    return t


def _enum_serializer(t: GraphQLEnumType) -> Callable[[Any], Any]:
    """The enum's serialize, by a dict lookup for the values it knows (members hash as
    their values), the schema's own for anything else."""
    names = {v.value: name for name, v in t.values.items()}
    serialize = t.serialize

    def fast(value: Any) -> Any:
        got = names.get(value)
        return got if got is not None else serialize(value)

    return fast


def _fast_float(value: Any) -> Any:
    if type(value) is float and math.isfinite(value):
        return value
    return GraphQLFloat.serialize(value)


def _fast_int(value: Any) -> Any:
    if type(value) is int and -(2**31) <= value < 2**31:
        return value
    return GraphQLInt.serialize(value)


def _fast_bool(value: Any) -> Any:
    return value if type(value) is bool else GraphQLBoolean.serialize(value)


_FAST: dict[str, Callable[[Any], Any]] = {
    "Float": _fast_float,
    "Int": _fast_int,
    "Boolean": _fast_bool,
}


class Plan:
    """One request's planned read: its rows, caches and the budget's counts."""

    def __init__(self, executor: Any, reads: Any) -> None:
        self.ex = executor
        ctx = executor.context_value
        self.ctx = ctx
        self.p = ctx.principal
        self.now = ctx.now
        self.reads: Reads = reads
        self.settings = ctx.settings
        self.objects = 0
        self.chars = 0
        self._expected: dict[int, float] = {}
        self._plans: dict[tuple[str, int], list[Sel]] = {}

    # --- planning ---------------------------------------------------------------

    def selections(self, gtype: GraphQLObjectType, details: list[Any]) -> list[Sel]:
        key = (gtype.name, id(details))
        got = self._plans.get(key)
        if got is not None:
            return got
        ex = self.ex
        try:
            grouped = collect_subfields(
                ex.schema,
                ex.fragments,
                ex.variable_values,
                ex.operation,
                gtype,
                details,
                ex.hide_suggestions,
            ).grouped_field_set
        except RecursionError:
            raise Unsupported("too deep") from None
        supported = FIELDS.get(gtype.name)
        if supported is None:
            raise Unsupported(gtype.name)
        out = []
        for response_key, fdl in grouped.items():
            first = fdl[0]
            node = first.node
            name = node.name.value
            for d in fdl:
                if d.defer_usage is not None or d.fragment_variable_values is not None:
                    raise Unsupported("defer or fragment variables")
                for directive in d.node.directives or ():
                    if directive.name.value not in _ALLOWED_DIRECTIVES:
                        raise Unsupported(directive.name.value)
            if name == "__typename":
                sel = Sel(response_key, name, {}, fdl)
                sel.leaf = GraphQLString.serialize
                sel.nullable = False
                out.append(sel)
                continue
            if name not in supported:
                raise Unsupported(f"{gtype.name}.{name}")
            field_def = gtype.fields[name]
            args = get_argument_values(field_def, node, ex.variable_values)
            sel = Sel(response_key, name, args, fdl)
            sel.nullable = not isinstance(field_def.type, GraphQLNonNull)
            named = _named(field_def.type)
            sel.rtype = named
            if isinstance(named, GraphQLEnumType):
                sel.leaf = _enum_serializer(named)
            elif isinstance(named, GraphQLScalarType):
                sel.leaf = _FAST.get(named.name, named.serialize)
            out.append(sel)
        self._plans[key] = out
        return out

    # --- building -------------------------------------------------------------------

    def leaf(self, sel: Sel, values: list[Any], out: list[dict[str, Any]]) -> None:
        serialize = sel.leaf
        assert serialize is not None
        key = sel.key
        if not sel.nullable and None in values:
            raise Unsupported("null in a non-null field")
        # The budget counts raw strings as the executor's complete_leaf_value does.
        self.chars += sum(len(v) for v in values if type(v) is str)
        if sel.name == "__typename" or (sel.rtype is not None and sel.rtype.name in _STRINGS):
            if all(type(v) is str or v is None for v in values):
                for d, v in zip(out, values, strict=True):
                    d[key] = v
                return
        for d, v in zip(out, values, strict=True):
            d[key] = None if v is None else serialize(v)

    async def build(
        self, type_name: str, details: list[Any], rows: list[Row]
    ) -> list[dict[str, Any]]:
        """The response objects of `rows` (all of one type) for the selection `details`."""
        gtype = self.ex.schema.type_map[type_name]
        sels = self.selections(gtype, details)
        out: list[dict[str, Any]] = [{} for _ in rows]
        self.objects += len(rows)
        if self.objects > self.settings.max_response_objects:
            raise Unsupported("past the object budget: the executor gives its error")
        resolvers = RESOLVERS[type_name]
        for sel in sels:
            if sel.name == "__typename":
                self.leaf(sel, [type_name] * len(rows), out)
                continue
            resolve = resolvers[sel.name]
            got = resolve(self, sel, rows)
            if hasattr(got, "__await__"):
                got = await got
            if sel.leaf is not None:
                self.leaf(sel, got, out)
            else:
                for d, v in zip(out, got, strict=True):
                    if v is None and not sel.nullable:
                        raise Unsupported("null in a non-null field")
                    d[sel.key] = v
        return out

    async def related(
        self, type_name: str, sel: Sel, targets: list[Row | None]
    ) -> list[dict[str, Any] | None]:
        """One object per row (or None): built together, then put back in place."""
        present = [t for t in targets if t is not None]
        built = iter(await self.build(type_name, sel.details, present))
        return [None if t is None else next(built) for t in targets]

    async def related_lists(
        self, type_name: str, sel: Sel, groups: list[list[Row]]
    ) -> list[list[dict[str, Any]]]:
        flat = [r for g in groups for r in g]
        if self.objects + len(flat) > self.settings.max_response_objects:
            raise OverBudget
        built = await self.build(type_name, sel.details, flat)
        out, i = [], 0
        for g in groups:
            out.append(built[i : i + len(g)])
            i += len(g)
        return out

    # --- shared computations ------------------------------------------------------------

    def expected(self, cycle: Row) -> float:
        got = self._expected.get(cycle.id)
        if got is None:
            got = self._expected[cycle.id] = rules.expected_progress(
                cycle.starts_on, cycle.ends_on, self.now
            )
        return got

    async def cycles_of(self, objectives: list[Row]) -> list[Row]:
        known = await self.reads.by_id("cycle", [o.cycle_id for o in objectives])
        return [known[o.cycle_id] for o in objectives]

    async def objectives_of(self, krs: list[Row]) -> list[Row]:
        known = await self.reads.by_id("objective", [k.objective_id for k in krs])
        return [known[k.objective_id] for k in krs]

    async def cadences(self, objectives: list[Row]) -> list[int]:
        known = await self.reads.by_id("team", [o.team_id for o in objectives])
        default = self.p.check_in_cadence_days
        out = []
        for o in objectives:
            team = known.get(o.team_id) if o.team_id is not None else None
            out.append(
                team.check_in_cadence_days
                if team is not None and team.check_in_cadence_days
                else default
            )
        return out

    def window(self, sel: Sel) -> tuple[int, int | None]:
        first, after = sel.args.get("first"), sel.args.get("after")
        if first is None:
            first = self.settings.default_page_size
        if first < 0 or first > self.settings.max_page_size:
            raise Unsupported("first out of range")
        position = None
        if after is not None:
            try:
                position = ids.uncursor(after)
            except ids.BadId:
                raise Unsupported("bad cursor") from None
        return first, position

    def decode(self, gid: Any, type_name: str) -> int | None:
        if gid is None:
            return None
        try:
            return ids.decode_as(gid, type_name)
        except ids.BadId:
            raise Unsupported("bad id") from None


_STRINGS = {"String", "ID"}


class Page:
    """A connection's source: rows, the window, and how to count all of them."""

    __slots__ = ("after", "counter", "first", "node_type", "rows")

    def __init__(
        self,
        rows: list[Row],
        first: int,
        after: int | None,
        node_type: str,
        counter: Callable[[], Any],
    ) -> None:
        self.rows, self.first, self.after = rows, first, after
        self.node_type, self.counter = node_type, counter


# --- resolvers per type: (plan, selection, rows) -> values (or an awaitable of them) ---


def _attr(name: str, wrap: Callable[[Any], Any] | None = None) -> Callable[..., list[Any]]:
    """A column of table rows (records: read by item)."""
    if wrap is None:
        return lambda plan, sel, rows: [r[name] for r in rows]
    return lambda plan, sel, rows: [None if (v := r[name]) is None else wrap(v) for r in rows]


def _field(name: str) -> Callable[..., list[Any]]:
    """An attribute of computed objects (a forecast)."""
    return lambda plan, sel, rows: [getattr(r, name) for r in rows]


_GIDS: dict[tuple[str, int], str] = {}


def _gid(type_name: str) -> Callable[..., list[Any]]:
    """Global ids, remembered (the same rows are asked for again and again)."""

    def encode(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
        if len(_GIDS) > 200_000:
            _GIDS.clear()
        out = []
        for r in rows:
            key = (type_name, r["id"])
            got = _GIDS.get(key)
            if got is None:
                got = _GIDS[key] = ids.encode(type_name, key[1])
            out.append(got)
        return out

    return encode


def _progress(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    if sel.args.get("asOf") is not None:
        raise Unsupported("progress(asOf)")
    return [r.progress for r in rows]


async def _user(plan: Plan, sel: Sel, rows: list[Row], column: str) -> list[Any]:
    keys = [getattr(r, column) for r in rows]
    found = await plan.reads.by_id("app_user", keys)
    return await plan.related("User", sel, [found.get(k) if k is not None else None for k in keys])


async def _team(plan: Plan, sel: Sel, rows: list[Row], column: str) -> list[Any]:
    keys = [getattr(r, column) for r in rows]
    found = await plan.reads.by_id("team", keys)
    return await plan.related("Team", sel, [found.get(k) if k is not None else None for k in keys])


# Objective


async def _o_cycle(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return await plan.related("Cycle", sel, await plan.cycles_of(rows))


async def _o_status(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    cycles = await plan.cycles_of(rows)
    on, at = plan.p.thresholds
    return [
        rules.progress_status(r.progress, plan.expected(c), r.has_check_in, on, at)
        for r, c in zip(rows, cycles, strict=True)
    ]


async def _o_expected(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return [plan.expected(c) for c in await plan.cycles_of(rows)]


async def _key_results_of(plan: Plan, rows: list[Row]) -> list[list[Row]]:
    return await plan.reads.grouped("key_result", "objective_id", [r.id for r in rows])


async def _o_key_results(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return await plan.related_lists("KeyResult", sel, await _key_results_of(plan, rows))


async def _o_stale(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    cycles = await plan.cycles_of(rows)
    active = [c.status == rules.CycleStatus.ACTIVE for c in cycles]
    live = [r for r, a in zip(rows, active, strict=True) if a]
    groups = dict(
        zip([r.id for r in live], await _key_results_of(plan, live) if live else [], strict=True)
    )
    cadences = dict(zip([r.id for r in live], await plan.cadences(live), strict=True))
    out = []
    for r, c, a in zip(rows, cycles, active, strict=True):
        if not a:
            out.append(False)
            continue
        cadence = cadences[r.id]
        out.append(
            any(
                rules.is_stale(
                    rules.CycleStatus(c.status),
                    kr.last_check_in_at or kr.created_at,
                    cadence,
                    plan.now,
                )
                for kr in groups[r.id]
            )
        )
    return out


async def _o_parent(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    keys = [r.parent_id for r in rows]
    found = await plan.reads.by_id("objective", keys)
    sees = plan.reads.sees
    targets = []
    for k in keys:
        row = found.get(k) if k is not None else None
        targets.append(row if row is not None and sees(row) else None)
    return await plan.related("Objective", sel, targets)


async def _o_descendants(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    max_depth = sel.args.get("maxDepth")
    if max_depth is not None and max_depth < 0:
        raise Unsupported("maxDepth < 0")
    depth = min(max_depth if max_depth is not None else 1000, 1000)
    # Past the object budget the executor answers (with its error): the walk stops there.
    at_most = plan.settings.max_response_objects - plan.objects
    got = await plan.reads.descendants([r.id for r in rows], depth, max(at_most, 0))
    if got is None:
        if plan.reads.sees_all:  # every row would be shown
            raise OverBudget
        raise Unsupported("past the object budget: the executor gives its error")
    groups = got
    sees = plan.reads.sees
    return await plan.related_lists("Objective", sel, [[d for d in g if sees(d)] for g in groups])


# KeyResult


async def _k_status(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    cycles = await plan.cycles_of(await plan.objectives_of(rows))
    on, at = plan.p.thresholds
    return [
        rules.progress_status(r.progress, plan.expected(c), r.last_check_in_id is not None, on, at)
        for r, c in zip(rows, cycles, strict=True)
    ]


async def _k_expected(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return [plan.expected(c) for c in await plan.cycles_of(await plan.objectives_of(rows))]


async def _k_stale(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    objectives = await plan.objectives_of(rows)
    cycles = await plan.cycles_of(objectives)
    cadences = await plan.cadences(objectives)
    return [
        rules.is_stale(
            rules.CycleStatus(c.status), r.last_check_in_at or r.created_at, cadence, plan.now
        )
        for r, c, cadence in zip(rows, cycles, cadences, strict=True)
    ]


async def _k_next_due(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    objectives = await plan.objectives_of(rows)
    cycles = await plan.cycles_of(objectives)
    cadences = await plan.cadences(objectives)
    return [
        None
        if c.status != rules.CycleStatus.ACTIVE
        else (r.last_check_in_at or r.created_at) + timedelta(days=cadence)
        for r, c, cadence in zip(rows, cycles, cadences, strict=True)
    ]


async def _k_objective(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    objectives = await plan.objectives_of(rows)
    p = plan.p
    for o in objectives:
        if not can_see_objective(p, o.visibility, o.team_id, o.owner_id):
            raise Unsupported("hidden objective")
    return await plan.related("Objective", sel, objectives)


async def _k_last_check_in(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    # The key result is shown, so its check-ins may be: the raw read is the checked one.
    keys = [r.last_check_in_id for r in rows]
    found = await plan.reads.by_id("check_in", keys)
    return await plan.related("CheckIn", sel, [found.get(k) if k else None for k in keys])


def _k_check_ins(plan: Plan, sel: Sel, rows: list[Row]) -> Any:
    first, position = plan.window(sel)
    reads = plan.reads

    async def run() -> list[Any]:
        pages = await reads.check_in_pages([r.id for r in rows], first, position)
        sources = [
            Page(
                page,
                first,
                position,
                "CheckIn",
                lambda pk=r.id: reads.check_in_count(pk),
            )
            for r, page in zip(rows, pages, strict=True)
        ]
        return await plan.related(_connection_type(sel), sel, sources)

    return run()


async def _k_forecast(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    cycles = await plan.cycles_of(await plan.objectives_of(rows))
    histories = await plan.reads.grouped("check_in", "key_result_id", [r.id for r in rows])
    p = plan.p
    out: list[Any] = []
    for r, c, history in zip(rows, cycles, histories, strict=True):
        start, end = rules.cycle_bounds(c.starts_on, c.ends_on)
        points = sorted((h.measured_at, h.value) for h in history if start <= h.measured_at < end)
        out.append(
            rules.forecast(
                rules.KeyResultType(r.type),
                r.start_value,
                r.target_value,
                points,
                end,
                p.on_track_gap,
                p.at_risk_gap,
            )
        )
    return await plan.related("Forecast", sel, out)


# Team


def _t_objectives(plan: Plan, sel: Sel, rows: list[Row]) -> Any:
    cycle_pk = plan.decode(sel.args.get("cycleId"), "Cycle")
    first, position = plan.window(sel)
    reads = plan.reads

    async def run() -> list[Any]:
        pages = await reads.team_objective_pages([r.id for r in rows], cycle_pk, first, position)
        sources = [
            Page(
                page,
                first,
                position,
                "Objective",
                lambda pk=r.id: reads.team_objective_count(pk, cycle_pk),
            )
            for r, page in zip(rows, pages, strict=True)
        ]
        return await plan.related(_connection_type(sel), sel, sources)

    return run()


# Connections


def _connection_type(sel: Sel) -> str:
    return str(sel.rtype.name)


def _c_edges(plan: Plan, sel: Sel, pages: list[Page]) -> Any:
    groups = [p.rows[: p.first] for p in pages]
    return plan.related_lists(str(sel.rtype.name), sel, groups)


def _c_page_info(plan: Plan, sel: Sel, pages: list[Page]) -> Any:
    return plan.related("PageInfo", sel, pages)


async def _c_total(plan: Plan, sel: Sel, pages: list[Page]) -> list[Any]:
    out = []
    for p in pages:
        out.append(await p.counter())
    return out


def _pi_next(plan: Plan, sel: Sel, pages: list[Page]) -> list[Any]:
    return [len(p.rows) > p.first for p in pages]


def _pi_previous(plan: Plan, sel: Sel, pages: list[Page]) -> list[Any]:
    return [p.after is not None for p in pages]


def _pi_start(plan: Plan, sel: Sel, pages: list[Page]) -> list[Any]:
    return [ids.cursor(p.rows[0].id) if p.rows[: p.first] else None for p in pages]


def _pi_end(plan: Plan, sel: Sel, pages: list[Page]) -> list[Any]:
    return [ids.cursor(p.rows[: p.first][-1].id) if p.rows[: p.first] else None for p in pages]


def _e_cursor(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return [ids.cursor(r.id) for r in rows]


def _e_node(node_type: str) -> Callable[..., Any]:
    return lambda plan, sel, rows: plan.related(node_type, sel, rows)


# Cycle


def _cy_expected(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return [plan.expected(c) for c in rows]


def _cy_review_due(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return [
        rules.review_due(rules.CycleStatus(c.status), c.starts_on, c.ends_on, plan.now)
        for c in rows
    ]


_OBJECTIVE = {
    "id": _gid("Objective"),
    "title": _attr("title"),
    "description": _attr("description"),
    "visibility": _attr("visibility", Visibility),
    "weight": _attr("weight"),
    "score": _attr("score"),
    "version": _attr("version"),
    "createdAt": _attr("created_at"),
    "updatedAt": _attr("updated_at"),
    "archivedAt": _attr("archived_at"),
    "progress": _progress,
    "status": _o_status,
    "expectedProgress": _o_expected,
    "stale": _o_stale,
    "owner": lambda plan, sel, rows: _user(plan, sel, rows, "owner_id"),
    "team": lambda plan, sel, rows: _team(plan, sel, rows, "team_id"),
    "cycle": _o_cycle,
    "parent": _o_parent,
    "keyResults": _o_key_results,
    "descendants": _o_descendants,
}
_KEY_RESULT = {
    "id": _gid("KeyResult"),
    "title": _attr("title"),
    "type": _attr("type", rules.KeyResultType),
    "measure": _attr("measure", Measure),
    "unit": _attr("unit"),
    "startValue": _attr("start_value"),
    "targetValue": _attr("target_value"),
    "currentValue": _attr("current_value"),
    "weight": _attr("weight"),
    "confidence": _attr("confidence"),
    "score": _attr("score"),
    "scoreReason": _attr("score_reason"),
    "version": _attr("version"),
    "createdAt": _attr("created_at"),
    "updatedAt": _attr("updated_at"),
    "progress": _progress,
    "status": _k_status,
    "expectedProgress": _k_expected,
    "stale": _k_stale,
    "nextCheckInDue": _k_next_due,
    "objective": _k_objective,
    "owner": lambda plan, sel, rows: _user(plan, sel, rows, "owner_id"),
    "lastCheckIn": _k_last_check_in,
    "checkIns": _k_check_ins,
    "forecast": _k_forecast,
}
_CHECK_IN = {
    "id": _gid("CheckIn"),
    "value": _attr("value"),
    "confidence": _attr("confidence"),
    "note": _attr("note"),
    "progress": _attr("progress"),
    "measuredAt": _attr("measured_at"),
    "createdAt": _attr("created_at"),
    "author": lambda plan, sel, rows: _user(plan, sel, rows, "author_id"),
}
_USER = {
    "id": _gid("User"),
    "name": _attr("name"),
    "email": _attr("email"),
    "role": _attr("role", Role),
    "active": _attr("active"),
}
_TEAM = {
    "id": _gid("Team"),
    "name": _attr("name"),
    "checkInCadenceDays": _attr("check_in_cadence_days"),
    "parent": lambda plan, sel, rows: _team(plan, sel, rows, "parent_id"),
    "objectives": _t_objectives,
}
_CYCLE = {
    "id": _gid("Cycle"),
    "name": _attr("name"),
    "startsOn": _attr("starts_on"),
    "endsOn": _attr("ends_on"),
    "status": _attr("status", rules.CycleStatus),
    "expectedProgress": _cy_expected,
    "reviewDue": _cy_review_due,
}
_FORECAST = {"value": _field("value"), "progress": _field("progress"), "status": _field("status")}
_PAGE_INFO = {
    "hasNextPage": _pi_next,
    "hasPreviousPage": _pi_previous,
    "startCursor": _pi_start,
    "endCursor": _pi_end,
}


def _connection(node_type: str) -> dict[str, Callable[..., Any]]:
    return {"edges": _c_edges, "pageInfo": _c_page_info, "totalCount": _c_total}


def _edge(node_type: str) -> dict[str, Callable[..., Any]]:
    return {"cursor": _e_cursor, "node": _e_node(node_type)}


RESOLVERS: dict[str, dict[str, Callable[..., Any]]] = {
    "Objective": _OBJECTIVE,
    "KeyResult": _KEY_RESULT,
    "CheckIn": _CHECK_IN,
    "User": _USER,
    "Team": _TEAM,
    "Cycle": _CYCLE,
    "Forecast": _FORECAST,
    "PageInfo": _PAGE_INFO,
    "ObjectiveConnection": _connection("Objective"),
    "CheckInConnection": _connection("CheckIn"),
    "ObjectiveEdge": _edge("Objective"),
    "CheckInEdge": _edge("CheckIn"),
}
FIELDS = {name: set(fields) for name, fields in RESOLVERS.items()}

# --- the roots ----------------------------------------------------------------------------

_NODE_TYPES = ("Objective", "KeyResult", "CheckIn", "User", "Team", "Cycle")


async def _root_node(plan: Plan, sel: Sel) -> Any:
    try:
        type_name, pk = ids.decode(sel.args["id"])
    except ids.BadId:
        return None
    if type_name not in _NODE_TYPES:
        raise Unsupported(f"node of {type_name}")
    reads = plan.reads
    if type_name == "Objective":
        row = await reads.objective(pk)
    elif type_name == "KeyResult":
        row = await reads.key_result(pk)
    elif type_name == "CheckIn":
        row = await reads.check_in(pk)
    else:
        table = {"User": "app_user", "Team": "team", "Cycle": "cycle"}[type_name]
        row = (await reads.by_id(table, [pk])).get(pk)
    if row is None:
        return None
    return (await plan.build(type_name, sel.details, [row]))[0]


_FILTER_FIELDS = {
    "cycleId": "cycle_id",
    "teamId": "team_id",
    "ownerId": "owner_id",
    "parentId": "parent_id",
    "rootsOnly": "roots_only",
    "status": "status",
    "search": "search",
    "includeArchived": "include_archived",
}


async def _root_objectives(plan: Plan, sel: Sel) -> Any:
    from types import SimpleNamespace

    from sqlalchemy import func, select

    from schema.queries import OBJECTIVE, ObjectiveFilter, _objective_query

    first, position = plan.window(sel)
    raw = sel.args.get("filter")
    f = None
    if raw is not None:
        if isinstance(raw, ObjectiveFilter):
            f = raw
        else:
            f = ObjectiveFilter(**{_FILTER_FIELDS[k]: v for k, v in raw.items()})
        if f.search is not None and len(f.search.strip()) > 200:
            raise Unsupported("search too long")
        for gid, type_name in (
            (f.cycle_id, "Cycle"),
            (f.team_id, "Team"),
            (f.owner_id, "User"),
            (f.parent_id, "Objective"),
        ):
            plan.decode(gid, type_name)
    info: Any = SimpleNamespace(context=plan.ctx)
    base = _objective_query(info, f)
    stmt = base.order_by(OBJECTIVE.c.id).limit(first + 1)
    if position is not None:
        stmt = stmt.where(OBJECTIVE.c.id > position)
    reads = plan.reads
    rows = await reads.execute(stmt)
    reads.remember("objective", rows)
    await reads.by_id("cycle", [r.cycle_id for r in rows])

    async def count() -> int:
        got = await reads.execute(select(func.count()).select_from(base.subquery()))
        return int(got[0][0])

    page = Page(rows, first, position, "Objective", count)
    return (await plan.build(_connection_type(sel), sel.details, [page]))[0]


ROOTS = {"node": _root_node, "objectives": _root_objectives}


async def run_planned(executor: Any, root_type: GraphQLObjectType, grouped: Any) -> dict:
    """The data of a query, built by the plan; Unsupported when the plan cannot. The
    whole document is checked against what the plan covers before any statement runs,
    so a fallback costs the executor's statements only."""
    ctx = executor.context_value
    if not getattr(ctx, "is_authenticated", False):
        raise Unsupported("not signed in")
    plan = Plan(executor, None)
    root_sels = _root_selections(plan, root_type, grouped)
    for _key, name, sel in root_sels:
        if sel is not None:
            _check(plan, sel, name)
    async with Reads.open(ctx.db, ctx.principal) as reads:
        plan.reads = reads
        data: dict[str, Any] = {}
        for response_key, name, sel in root_sels:
            if sel is None:
                data[response_key] = root_type.name
                plan.chars += len(root_type.name)
                continue
            data[response_key] = await ROOTS[name](plan, sel)
    if plan.chars > plan.settings.max_response_bytes:
        raise Unsupported("past the byte budget: the executor gives its error")
    return data


def _root_selections(plan: Plan, root_type: GraphQLObjectType, grouped: Any) -> list[Any]:
    executor = plan.ex
    root_sels: list[Any] = []
    for response_key, fdl in grouped.items():
        node = fdl[0].node
        name = node.name.value
        for d in fdl:
            if d.defer_usage is not None or d.fragment_variable_values is not None:
                raise Unsupported("defer or fragment variables")
            for directive in d.node.directives or ():
                if directive.name.value not in _ALLOWED_DIRECTIVES:
                    raise Unsupported(directive.name.value)
        if name == "__typename":
            root_sels.append((response_key, None, None))
            continue
        if name not in ROOTS:
            raise Unsupported(f"Query.{name}")
        field_def = root_type.fields[name]
        args = get_argument_values(field_def, node, executor.variable_values)
        sel = Sel(response_key, name, args, fdl)
        sel.rtype = _named(field_def.type)
        root_sels.append((response_key, name, sel))
    return root_sels


def _check(plan: Plan, sel: Sel, name: str) -> None:
    """Everything below a root field is covered, and no argument is one the executor
    would answer with an error (those are left to it)."""
    args = sel.args
    if "first" in args or "after" in args:
        plan.window(sel)
    if args.get("cycleId") is not None:
        plan.decode(args["cycleId"], "Cycle")
    if args.get("maxDepth") is not None and args["maxDepth"] < 0:
        raise Unsupported("maxDepth < 0")
    if args.get("asOf") is not None:
        raise Unsupported("asOf")
    if sel.leaf is not None or sel.name == "__typename":
        return
    rtype = sel.rtype
    if isinstance(rtype, GraphQLObjectType):
        types = [rtype]
    elif name == "node":
        types = [plan.ex.schema.type_map[t] for t in _NODE_TYPES]
    else:
        raise Unsupported(f"{rtype}")
    for t in types:
        for child in plan.selections(t, sel.details):
            _check(plan, child, child.name)


class Switch:
    """On unless OKR_PLANNED_READS=0; tests turn it off to run the executor alone."""

    def __init__(self) -> None:
        self.enabled = os.environ.get("OKR_PLANNED_READS", "1") != "0"
        self.planned = 0  # operations the plan answered, for tests and the bench


SWITCH = Switch()


def planned_executor(base: type) -> type:
    """`base` (the budget executor) answering the queries the plan covers by the plan,
    and everything else, or anything the plan gives up on, as `base` does."""

    class PlannedExecutor(base):  # type: ignore[valid-type,misc]
        def execute_collected_root_fields(
            self,
            root_type: GraphQLObjectType,
            root_value: Any,
            grouped_field_set: Any,
            serially: bool,
            new_defer_usages: Any,
        ) -> Any:
            general = super().execute_collected_root_fields
            if (
                not SWITCH.enabled
                or serially
                or self.operation.operation is not OperationType.QUERY
                or new_defer_usages
            ):
                return general(root_type, root_value, grouped_field_set, serially, new_defer_usages)

            async def planned() -> Any:
                try:
                    data = await run_planned(self, root_type, grouped_field_set)
                except OverBudget:
                    if not self.budget.exhausted():  # past the deadline: the executor's
                        self.budget.too_many_objects()  # build_response gives the error
                        SWITCH.planned += 1
                        return {}
                    result = general(
                        root_type, root_value, grouped_field_set, serially, new_defer_usages
                    )
                    return await result if self.is_awaitable(result) else result
                except Exception as exc:  # Unsupported, or anything: the executor answers
                    if not isinstance(exc, Unsupported):
                        log.debug("planned read gave up: %r", exc)
                    result = general(
                        root_type, root_value, grouped_field_set, serially, new_defer_usages
                    )
                    return await result if self.is_awaitable(result) else result
                if self.budget.exhausted():  # past the deadline: the executor's error
                    result = general(
                        root_type, root_value, grouped_field_set, serially, new_defer_usages
                    )
                    return await result if self.is_awaitable(result) else result
                SWITCH.planned += 1
                return data

            return planned()

    return PlannedExecutor
