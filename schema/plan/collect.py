"""Planned reads: the plan itself (selections collected, rows built into response objects).

For a validated query, the fields below each root field are collected with graphql-core's
own field collection (it applies @skip/@include, merges fields by response key, fills
argument defaults). The plan then walks the selection level by level: for all the rows of
one level it fetches each selected relation in one set-based statement (service/reads/
rows.py, all on one connection: objectives, their key results, last check-ins, owners,
teams, cycles, check-in pages), computes derived values (status, expected progress, stale, next
due, forecast) with the pure rules in service/domain/rules.py, and builds the response dict
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
from collections.abc import Callable, Sequence
from functools import partial
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
)
from graphql.execution.collect_fields import collect_subfields
from graphql.execution.values import get_argument_values

from schema import ids
from service.domain import facts
from service.pacing import give_way
from service.reads.rows import Reads

Row = Any
log = logging.getLogger("okr.fastpath")


class Unsupported(Exception):
    """The plan does not cover this document (or this request): use the executor."""


class OverBudget(Exception):
    """The response would hold more objects than the budget allows, for certain (rows
    that would all be shown): the executor's error, without running it."""


_ALLOWED_DIRECTIVES = {"skip", "include"}


def require_plain(fdl: Any) -> None:
    """Raise Unsupported unless the merged field uses only @skip/@include (no @defer,
    no fragment variables): what the plan can answer."""
    for d in fdl:
        if d.defer_usage is not None or d.fragment_variable_values is not None:
            raise Unsupported("defer or fragment variables")
        for directive in d.node.directives or ():
            if directive.name.value not in _ALLOWED_DIRECTIVES:
                raise Unsupported(directive.name.value)


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

    fast.names = names  # type: ignore[attr-defined]
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
        self.wants: set[tuple[str, str]] = set()  # (type, field) anywhere in the document

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
            require_plain(fdl)
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

    def leaf(self, sel: Sel, values: list[Any]) -> list[Any]:
        """A leaf column serialised in bulk: the values as they are when their types show
        the scalar's serialize would return them unchanged, else serialize per value."""
        serialize = sel.leaf
        assert serialize is not None
        if not sel.nullable and None in values:
            raise Unsupported("null in a non-null field")
        types = set(map(type, values))
        # The budget counts raw strings as the executor's complete_leaf_value does.
        if str in types:
            if types == _STR:
                self.chars += sum(map(len, values))
            elif types == _STR_OR_NONE:
                self.chars += sum(map(len, filter(None, values)))
            else:
                self.chars += sum(len(v) for v in values if type(v) is str)
        if not types - _NONE:
            return values
        if sel.name == "__typename" or (sel.rtype is not None and sel.rtype.name in _STRINGS):
            if types <= _STR_OR_NONE:
                return values
        elif serialize is _fast_bool:
            if types <= _BOOL_OR_NONE:
                return values
        elif serialize is _fast_float:
            if types == _FLOAT and all(map(math.isfinite, values)):
                return values
        elif serialize is _fast_int:
            if types == _INT and -(2**31) <= min(values) and max(values) < 2**31:
                return values
        names = getattr(serialize, "names", None)
        if names is not None and None not in types:
            got = list(map(names.get, values))  # an enum's names, by one lookup each
            if None not in got:
                return got
        return [None if v is None else serialize(v) for v in values]

    async def build(
        self, type_name: str, details: list[Any], rows: list[Row]
    ) -> list[dict[str, Any]]:
        """The response objects of `rows` (all of one type) for the selection `details`:
        one column of values per response key, then the objects in one pass."""
        gtype = self.ex.schema.type_map[type_name]
        sels = self.selections(gtype, details)
        self.objects += len(rows)
        if self.objects > self.settings.max_response_objects:
            raise Unsupported("past the object budget: the executor gives its error")
        resolvers = RESOLVERS[type_name]
        keys: list[str] = []
        columns: list[list[Any]] = []
        for sel in sels:
            await self.on_time()
            if sel.name == "__typename":
                got: Any = self.leaf(sel, [type_name] * len(rows))
            else:
                resolve = resolvers[sel.name]
                got = resolve(self, sel, rows)
                if hasattr(got, "__await__"):
                    got = await got
                if len(got) != len(rows):
                    raise ValueError("a resolver gave a column of another length")
                if sel.leaf is not None:
                    got = self.leaf(sel, got)
                elif not sel.nullable and None in got:
                    raise Unsupported("null in a non-null field")
            keys.append(sel.key)
            columns.append(got)
        if not keys:
            return [{} for _ in rows]
        return list(map(dict, map(partial(zip, keys), zip(*columns, strict=True))))

    async def related(
        self, type_name: str, sel: Sel, targets: Sequence[Row | None]
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

    async def on_time(self) -> None:
        """Between the steps of a level: give the loop its turn when this one has run
        long (the deadline's timer fires at such a point), and stop past the deadline
        (the executor then answers with the budget's error at once)."""
        await give_way()
        if self.ex.budget.exhausted():
            raise Unsupported("past the deadline: the executor gives its error")

    # --- shared computations ------------------------------------------------------------

    def expected(self, cycle: Row) -> float:
        got = self._expected.get(cycle.id)
        if got is None:
            got = self._expected[cycle.id] = facts.expected_progress(cycle, self.now)
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
            out.append(facts.cadence(team.check_in_cadence_days if team else None, default))
        return out

    def window(self, sel: Sel) -> tuple[int, int | None, bool]:
        """(size, cursor position, backward) of a connection, as the executor's
        page_window reads it; anything it answers with an error is left to it."""
        args = sel.args
        first, after = args.get("first"), args.get("after")
        last, before = args.get("last"), args.get("before")
        if first is not None and last is not None:
            raise Unsupported("first with last")
        backward = last is not None or before is not None
        if (backward and (first is not None or after is not None)) or (
            after is not None and before is not None
        ):
            raise Unsupported("paging both ways at once")
        size = last if backward else first
        if size is None:
            size = self.settings.default_page_size
        if size < 0 or size > self.settings.max_page_size:
            raise Unsupported("page size out of range")
        cursor = before if backward else after
        position = None
        if cursor is not None:
            try:
                position = ids.uncursor(cursor)
            except ids.BadId:
                raise Unsupported("bad cursor") from None
        return size, position, backward

    def decode(self, gid: Any, type_name: str) -> int | None:
        if gid is None:
            return None
        try:
            return ids.decode_as(gid, type_name)
        except ids.BadId:
            raise Unsupported("bad id") from None


_STRINGS = {"String", "ID"}
_NONE: set[type] = {type(None)}
_STR: set[type] = {str}
_STR_OR_NONE: set[type] = {str, type(None)}
_BOOL_OR_NONE: set[type] = {bool, type(None)}
_FLOAT: set[type] = {float}
_INT: set[type] = {int}

# Filled by schema/plan/render.py: type name -> field name -> resolver (plan, sel, rows).
RESOLVERS: dict[str, dict[str, Callable[..., Any]]] = {}
FIELDS: dict[str, set[str]] = {}


class Page:
    """A connection's source: rows in the order fetched (forward: from the cursor on;
    backward: from the cursor toward the start), one more than `first` when more lie
    that way; the window; how to count all of them; and, with a cursor, whether any row
    lies on its other side (`beyond`): hasPreviousPage and hasNextPage true to the data,
    as the executor's keyset pages (service/reads/keyset.py) give them."""

    __slots__ = ("after", "backward", "beyond", "counter", "first", "node_type", "rows")

    def __init__(
        self,
        rows: list[Row],
        first: int,
        after: int | None,
        node_type: str,
        counter: Callable[[], Any],
        beyond: Callable[[], Any] | None = None,
        backward: bool = False,
    ) -> None:
        self.rows, self.first, self.after = rows, first, after
        self.node_type, self.counter = node_type, counter
        self.beyond, self.backward = beyond, backward

    def shown(self) -> list[Row]:
        """The page's rows in the list's order."""
        rows = self.rows[: self.first]
        return rows[::-1] if self.backward else rows

    @property
    def more(self) -> bool:
        """More rows lie past the page, the way it was read."""
        return len(self.rows) > self.first

    async def across(self) -> bool:
        """Any row on the cursor's other side (none without a cursor)."""
        if self.after is None:
            return False
        if self.beyond is None:
            raise Unsupported("no probe of the cursor's other side")
        return bool(await self.beyond())


class Probe:
    """Which parents have a row on the cursor's other side: one statement for all the
    pages of a level, run the first time any of them asks (`fetch` returns the set)."""

    __slots__ = ("_fetch", "_found")

    def __init__(self, fetch: Callable[[], Any]) -> None:
        self._fetch = fetch
        self._found: set[int] | None = None

    async def has(self, parent: int) -> bool:
        if self._found is None:
            self._found = set(await self._fetch())
        return parent in self._found
