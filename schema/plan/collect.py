"""The read engine: every operation's fields, level by level (Grafast's way).

Queries, a mutation's payload and a subscription's events are all answered here
(schema/plan/render.py hands graphql-core's executor the root fields). Below each root,
the fields are collected with graphql-core's own field collection (@skip/@include, fields
merged by response key, argument defaults). The plan then walks the selection level by
level: for all the rows of one level each selected field runs once, by its set-based step
(RESOLVERS, schema/plan/resolvers.py: one statement for the level, service/reads/rows.py,
all on one connection, the derived facts by service/domain/facts.py), and the response
dict is built directly, serialised by the schema's own scalars and enums.

A field without a set-based step (or whose step hands the level back: `ByResolver`) is
computed inside the plan by its own resolver, once per row, and counted as a miss
(okr_plan_misses_total{type,field}, a warning logged once per field); a test fails when a
bench document or a README operation has one. Errors are located and nulled as
graphql-core does (a nullable position takes them); nothing is swallowed and nothing
falls back. The budget (objects, bytes, deadline) ends the response with its one error
(`Stop`); masking and the result cache sit outside.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial
from typing import Any, cast

from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLError,
    GraphQLFloat,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLString,
)
from graphql.error import located_error
from graphql.execution.collect_fields import collect_subfields
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path, Undefined
from prometheus_client import Counter
from strawberry.types.base import has_object_definition

from schema.types.common import window
from service.domain import facts
from service.pacing import give_way
from service.reads.joins import Row as JoinedRow
from service.reads.rows import Reads, Rec

Row = Any
log = logging.getLogger("okr.fastpath")


class ByResolver(Exception):
    """A set-based step cannot take this level (an argument it leaves to the field's own
    checks, a row it may not show): the field's resolver runs for the level instead,
    inside the plan, and the miss is counted (`okr_plan_misses_total`)."""


class Stop(Exception):
    """The budget is spent (objects, bytes or the deadline), its error set: the response
    is that one error."""


class Nulled:
    """A value that failed, with its located error: the nearest nullable position above
    it becomes null and records the error there, and only the first error under one
    nulled position is told (as graphql-core propagates and records them)."""

    __slots__ = ("error",)

    def __init__(self, error: GraphQLError) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Nulled({self.error.message!r})"


def first_nulled(values: Sequence[Any]) -> Nulled | None:
    for v in values:
        if type(v) is Nulled:
            return v
    return None


_ALLOWED_DIRECTIVES = {"skip", "include"}


def require_plain(fdl: Any) -> None:
    """Only @skip and @include reach execution (the schema declares no other executable
    directive and no @defer; validation refuses them): anything else is a bug, said."""
    for d in fdl:
        if d.defer_usage is not None or d.fragment_variable_values is not None:
            raise GraphQLError("@defer and fragment variables are not supported", d.node)
        for directive in d.node.directives or ():
            if directive.name.value not in _ALLOWED_DIRECTIVES:
                raise GraphQLError(f"@{directive.name.value} is not supported", directive)


_SENTINEL = object()


class Sel:
    """One response key of an object: its field, arguments and what lies below."""

    __slots__ = (
        "args",
        "details",
        "field_def",
        "generic",
        "key",
        "leaf",
        "name",
        "nullable",
        "parent",
        "rtype",
    )

    def __init__(self, key: str, name: str, args: dict[str, Any], details: list[Any]) -> None:
        self.key = key
        self.name = name
        self.args = args
        self.details = details
        self.leaf: Callable[[Any], Any] | None = None
        self.nullable = True
        self.rtype: Any = None
        self.field_def: Any = None
        self.parent = ""  # the type it is a field of
        self.generic = False  # no set-based step: the field's resolver runs for the level


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
    """One request's read (one root field's, for a mutation; one event's, for a
    subscription): its rows, caches and the budget's counts.

    Every field of the schema is answered here. A field with a set-based step (RESOLVERS)
    is computed for all the rows of a level at once; any other field runs its own resolver
    for each row of the level (all of them at once, so their data loaders batch), and
    what it returns is built here too: table rows go back to the set-based steps, other
    objects field by field. Errors are GraphQL's: a field that fails is null with its
    error located at its path, and a null in a non-null position nulls the nearest
    nullable one above it."""

    def __init__(self, executor: Any) -> None:
        self.ex = executor
        ctx = executor.context_value
        self.ctx = ctx
        self.now = ctx.now
        self._reads: Reads | None = None
        self._exits = AsyncExitStack()
        self.settings = ctx.settings
        self.budget = executor.budget
        self.objects = 0
        self.chars = 0
        self._expected: dict[int, float] = {}
        self._plans: dict[tuple[str, int], list[Sel]] = {}
        self.wants: set[tuple[str, str]] = set()  # (type, field) anywhere in the document
        self._level: list[Callable[[int], Path]] = []  # the path of each row of a level
        self.nulled = 0  # how many values were nulled by errors so far

    # --- the request's statements -------------------------------------------------------

    @property
    def p(self) -> Any:
        return self.ctx.principal

    @property
    def reads(self) -> Reads:
        if self._reads is None:
            raise RuntimeError("the plan's reads are opened by build() before any step")
        return self._reads

    @reads.setter
    def reads(self, reads: Reads) -> None:
        self._reads = reads

    async def open_reads(self) -> None:
        """One pooled connection for the plan's statements, opened the first time a
        set-based step runs (after a mutation's write: it reads what was committed)."""
        if self._reads is None:
            reads = await self._exits.enter_async_context(Reads.open(self.ctx.db, self.p))
            from schema.plan.hints import set_joins

            set_joins(self, reads)
            self._reads = reads

    async def close(self) -> None:
        await self._exits.aclose()
        self._reads = None

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
            raise GraphQLError("the selection is nested too deeply") from None
        steps = RESOLVERS.get(gtype.name, {})
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
                sel.parent = gtype.name
                out.append(sel)
                continue
            field_def = ex.schema.get_field(gtype, name)
            args = get_argument_values(field_def, node, ex.variable_values)
            out.append(self.sel(gtype, response_key, name, args, fdl, name not in steps, field_def))
        self._plans[key] = out
        return out

    @staticmethod
    def sel(
        gtype: GraphQLObjectType,
        key: str,
        name: str,
        args: dict[str, Any],
        fdl: list[Any],
        generic: bool,
        field_def: Any,
    ) -> Sel:
        sel = Sel(key, name, args, fdl)
        sel.field_def = field_def
        sel.parent = gtype.name
        sel.generic = generic
        sel.nullable = not isinstance(field_def.type, GraphQLNonNull)
        named = _named(field_def.type)
        sel.rtype = named
        if isinstance(named, GraphQLEnumType):
            sel.leaf = _enum_serializer(named)
        elif isinstance(named, GraphQLScalarType):
            sel.leaf = _FAST.get(named.name, named.serialize)
        return sel

    # --- building -------------------------------------------------------------------

    def leaf(self, sel: Sel, values: list[Any]) -> list[Any]:
        """A leaf column serialised in bulk: the values as they are when their types show
        the scalar's serialize would return them unchanged, else serialize per value
        (None stays None: the caller checks non-null positions)."""
        serialize = sel.leaf
        assert serialize is not None
        types = set(map(type, values))
        # The budget counts raw strings as the executor's complete_leaf_value does.
        if str in types:
            if types == _STR:
                self.chars += sum(map(len, values))
            elif types == _STR_OR_NONE:
                self.chars += sum(map(len, filter(None, values)))
            else:
                self.chars += sum(len(v) for v in values if type(v) is str)
            if self.chars > self.settings.max_response_bytes:
                self.budget.too_many_bytes()
                raise Stop
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

    def _count(self, n: int) -> None:
        self.objects += n
        if self.objects > self.settings.max_response_objects:
            self.budget.too_many_objects()
            raise Stop

    async def build(
        self,
        type_name: str,
        details: list[Any],
        items: list[Any],
        path_of: Callable[[int], Path],
    ) -> list[Any]:
        """The response objects of `items` (all of one object type) for the selection
        `details`: one column of values per response key, then the objects in one pass.
        An object whose non-null field failed is that failure (Nulled)."""
        gtype = self.ex.schema.type_map[type_name]
        sels = self.selections(gtype, details)
        self._count(len(items))
        steps = RESOLVERS.get(type_name)
        native = steps is not None
        if native and items:
            if type_name in TABLE_TYPES and not all(type(x) in _PLAN_ROWS for x in items):
                items = [as_row(x) for x in items]  # a resolver's objects, a payload's
            elif type_name not in OBJECT_TYPES and any(
                map(_strawberry_type, set(map(type, items)))
            ):
                native = False  # Strawberry's own objects (a payload's connection)
        sources: list[Any] | None = None if native else items
        keys: list[str] = []
        columns: list[list[Any]] = []
        failed: dict[int, Nulled] = {}
        self._level.append(path_of)
        try:
            for sel in sels:
                await self.on_time()
                nulled = self.nulled
                got: Any = None
                if sel.name == "__typename":
                    got = [type_name] * len(items)
                elif native and not sel.generic:
                    if self._reads is None:
                        await self.open_reads()
                    try:
                        got = steps[sel.name](self, sel, items)  # type: ignore[index]
                        if hasattr(got, "__await__"):
                            got = await got
                    except ByResolver as why:
                        self.missed(sel, str(why))
                        got = None
                    except GraphQLError as refused:  # its arguments: each item's error
                        got = [
                            self.error(refused, sel, path_of(i).add_key(sel.key))
                            for i in range(len(items))
                        ]
                    else:
                        if len(got) != len(items):
                            raise ValueError(f"{type_name}.{sel.name}: a column of another length")
                        if sel.leaf is not None:
                            got = self.leaf(sel, got)
                if got is None:
                    if sources is None:
                        sources = self.sources(type_name, items)
                    got = await self.by_resolver(gtype, sel, sources, path_of)
                if not sel.nullable and None in got:
                    got = list(got)
                    for i, v in enumerate(got):
                        if v is None:
                            got[i] = self.error(_null_error(sel), sel, path_of(i).add_key(sel.key))
                if self.nulled != nulled:
                    got = list(got)
                    for i, v in enumerate(got):
                        if type(v) is Nulled:
                            if sel.nullable:
                                got[i] = self.absorb(v, path_of(i).add_key(sel.key))
                            elif i not in failed:
                                failed[i] = v
                keys.append(sel.key)
                columns.append(got)
        finally:
            self._level.pop()
        if not keys:
            out: list[Any] = [{} for _ in items]
        else:
            out = list(map(dict, map(partial(zip, keys), zip(*columns, strict=True))))
        for i, v in failed.items():
            out[i] = v
        return out

    def sources(self, type_name: str, rows: list[Any]) -> list[Any]:
        """What a field's own resolver is handed for plan rows: its Strawberry object."""
        if type_name in OBJECT_TYPES:
            return rows  # they are
        make = TABLE_TYPES.get(type_name)
        if make is None:
            raise GraphQLError(
                f"{type_name} is built from plan rows, and one of its selected fields has "
                "no set-based step: give it one (schema/plan/render.py)"
            )
        return [make(r) for r in rows]

    async def completed(self, sel: Sel, values: list[Any]) -> list[Any]:
        """Values of one field for the level being built (Strawberry objects, say, of
        an abstract type), completed as the field's type says."""
        parent = self._level[-1]
        key = sel.key
        return await self.complete(
            sel.field_def.type, sel, values, lambda i: parent(i).add_key(key)
        )

    async def related(self, type_name: str, sel: Sel, targets: Sequence[Row | None]) -> list[Any]:
        """One object per row of the level being built (or None): built together, then
        put back in place."""
        parent = self._level[-1]
        places = [i for i, t in enumerate(targets) if t is not None]
        present = [targets[i] for i in places]
        key = sel.key
        built = iter(
            await self.build(
                type_name, sel.details, present, lambda j: parent(places[j]).add_key(key)
            )
        )
        return [None if t is None else next(built) for t in targets]

    async def related_lists(self, type_name: str, sel: Sel, groups: list[list[Row]]) -> list[Any]:
        """A list per row of the level being built. Past the object budget for certain
        (every row would be shown), the budget's error without building any."""
        flat = [r for g in groups for r in g]
        if self.objects + len(flat) > self.settings.max_response_objects:
            self.budget.too_many_objects()
            raise Stop
        parent = self._level[-1]
        owner: list[int] = []
        index: list[int] = []
        for i, g in enumerate(groups):
            owner.extend([i] * len(g))
            index.extend(range(len(g)))
        key = sel.key
        built = await self.build(
            type_name,
            sel.details,
            flat,
            lambda k: parent(owner[k]).add_key(key).add_key(index[k]),
        )
        out: list[Any] = []
        list_type = sel.field_def.type
        if isinstance(list_type, GraphQLNonNull):
            list_type = list_type.of_type
        nullable_items = not isinstance(list_type.of_type, GraphQLNonNull)
        i = 0
        for n, g in enumerate(groups):
            part = built[i : i + len(g)]
            i += len(g)
            bad = first_nulled(part) if self.nulled else None
            if bad is None:
                out.append(part)
            elif nullable_items:
                out.append(
                    [
                        self.absorb(x, parent(n).add_key(key).add_key(j))
                        if type(x) is Nulled
                        else x
                        for j, x in enumerate(part)
                    ]
                )
            else:  # non-null items: the list is null
                out.append(bad)
        return out

    # --- fields without a set-based step: their own resolvers, inside the plan ------------

    def missed(self, sel: Sel, why: str) -> None:
        """A field read past the set-based steps (by its resolver and the data loaders):
        counted per type and field, and logged at warning once per process and cause."""
        MISSES.labels(sel.parent, sel.name).inc()
        cause = (sel.parent, sel.name, why)
        if cause not in _WARNED:
            _WARNED.add(cause)
            log.warning("read by its resolver, past the plan: %s.%s (%s)", *cause)

    async def by_resolver(
        self,
        gtype: GraphQLObjectType,
        sel: Sel,
        sources: list[Any],
        path_of: Callable[[int], Path] | None,
    ) -> list[Any]:
        """The field's own resolver for every source of the level (awaited together, so
        that their data loaders batch), then what they return built by the plan."""
        field_def = sel.field_def
        # Below the roots a resolver runs per row and reads through the data loaders: a
        # miss (a set-based step that gave the level up counted its own). A root field's
        # resolver is its step: one call, its own statements (service/reads/lists.py).
        if sel.generic and path_of is not None and _reads_data(gtype.name, sel.name, field_def):
            self.missed(sel, "no set-based step")
        ex = self.ex
        resolve = field_def.resolve or ex.field_resolver
        if ex.middleware_manager:  # the schema extensions' resolve hooks (tracing)
            resolve = ex.middleware_manager.get_field_resolver(resolve)
        nodes = [d.node for d in sel.details]
        key = sel.key
        if path_of is None:  # a root field
            paths = [Path(None, key, gtype.name)]
        else:
            paths = [path_of(i).add_key(key, gtype.name) for i in range(len(sources))]
        values: list[Any] = [None] * len(sources)
        pending: list[tuple[int, Any]] = []
        for i, source in enumerate(sources):
            info = ex.build_resolve_info(field_def, nodes, gtype, paths[i])
            try:
                value = resolve(source, info, **sel.args)
            except Exception as exc:
                values[i] = self.error(exc, sel, paths[i])
                continue
            if ex.is_awaitable(value):
                pending.append((i, value))
            else:
                values[i] = value
        if pending:
            done = await asyncio.gather(*(v for _, v in pending), return_exceptions=True)
            for (i, _), value in zip(pending, done, strict=True):
                if isinstance(value, BaseException):
                    if not isinstance(value, Exception):
                        raise value  # a cancellation (the deadline) is passed on
                    values[i] = self.error(value, sel, paths[i])
                else:
                    values[i] = value
        return await self.complete(field_def.type, sel, values, paths.__getitem__)

    def error(self, exc: Exception, sel: Sel, path: Path) -> Nulled:
        """The field's error, located at its path: its value (the nearest nullable
        position above records it, see `absorb`)."""
        if isinstance(exc, Stop):
            raise exc
        self.nulled += 1
        return Nulled(located_error(exc, [d.node for d in sel.details], path.as_list()))

    def absorb(self, failed: Nulled, path: Path | None) -> Any:
        """A nullable position takes a failure below it: its error recorded, and the
        null it holds instead returned."""
        self.ex.collected_errors.add(failed.error, path)
        return None

    async def complete(
        self, rtype: Any, sel: Sel, values: list[Any], path_of: Callable[[int], Path]
    ) -> list[Any]:
        """What resolvers returned, completed as the field's type says: leaves
        serialised, lists flattened and completed together, objects built by the plan.
        Failed values (Nulled) stay as they are."""
        if isinstance(rtype, GraphQLNonNull):
            out = await self.complete(rtype.of_type, sel, values, path_of)
            for i, v in enumerate(out):
                if v is None:
                    out[i] = self.error(_null_error(sel), sel, path_of(i))
            return out
        out = list(values)
        live = [i for i, v in enumerate(values) if v is not None and type(v) is not Nulled]
        if not live:
            return out
        if any(isinstance(values[i], Exception) for i in live):  # an error as a value
            for i in live:
                if isinstance(values[i], Exception):
                    out[i] = self.error(values[i], sel, path_of(i))
            live = [i for i in live if type(out[i]) is not Nulled]
        if isinstance(rtype, GraphQLList):
            flat: list[Any] = []
            spans: list[tuple[int, int, int]] = []
            for i in live:
                v = values[i]
                if isinstance(v, (str, bytes, dict)) or not hasattr(v, "__iter__"):
                    out[i] = self.error(
                        TypeError(
                            f"Expected Iterable, but did not find one for field "
                            f"'{sel.parent}.{sel.name}'."
                        ),
                        sel,
                        path_of(i),
                    )
                    continue
                items = list(v)
                spans.append((i, len(flat), len(items)))
                flat.extend(items)
            if self.objects + len(flat) > self.settings.max_response_objects:
                self.budget.too_many_objects()
                raise Stop
            owner: list[int] = []
            index: list[int] = []
            for i, _start, n in spans:
                owner.extend([i] * n)
                index.extend(range(n))
            done = await self.complete(
                rtype.of_type, sel, flat, lambda k: path_of(owner[k]).add_key(index[k])
            )
            nullable_items = not isinstance(rtype.of_type, GraphQLNonNull)
            for i, start, n in spans:
                part = done[start : start + n]
                bad = first_nulled(part) if self.nulled else None
                if bad is not None:
                    if nullable_items:
                        part = [
                            self.absorb(x, path_of(i).add_key(j)) if type(x) is Nulled else x
                            for j, x in enumerate(part)
                        ]
                    else:
                        out[i] = bad
                        continue
                out[i] = part
            return out
        if isinstance(rtype, (GraphQLScalarType, GraphQLEnumType)):
            for i in live:
                v = values[i]
                try:
                    got = rtype.serialize(v)
                except Exception as exc:
                    out[i] = self.error(exc, sel, path_of(i))
                    continue
                if got is Undefined or got is None:
                    out[i] = self.error(
                        TypeError(f"Expected a value of type '{rtype}' but received: {v!r}"),
                        sel,
                        path_of(i),
                    )
                    continue
                if type(got) is str:
                    self.chars += len(got)
                out[i] = got
            if self.chars > self.settings.max_response_bytes:
                self.budget.too_many_bytes()
                raise Stop
            return out
        # objects: grouped by their concrete type (an interface's or union's is asked)
        by_type: dict[str, list[int]] = {}
        for i in live:
            name = rtype.name if isinstance(rtype, GraphQLObjectType) else None
            if name is None:
                name = await self._runtime_type(rtype, values[i], sel, path_of(i))
                if type(name) is Nulled:
                    out[i] = name
                    continue
            by_type.setdefault(name, []).append(i)
        for name, places in by_type.items():
            built = await self.build(
                name, sel.details, [values[i] for i in places], partial(_path_at, path_of, places)
            )
            for i, b in zip(places, built, strict=True):
                out[i] = b
        return out

    async def _runtime_type(self, abstract: Any, value: Any, sel: Sel, path: Path) -> Any:
        definition = getattr(value, "__strawberry_definition__", None)
        if definition is not None and not definition.is_graphql_generic:
            name = definition.name
        else:
            resolve_type = abstract.resolve_type or self.ex.type_resolver
            info = self.ex.build_resolve_info(
                sel.field_def,
                [d.node for d in sel.details],
                self.ex.schema.type_map[sel.parent],
                path,
            )
            name = resolve_type(value, info, abstract)
            if self.ex.is_awaitable(name):
                name = await name
        runtime = self.ex.schema.type_map.get(name) if isinstance(name, str) else None
        if runtime is None or not self.ex.schema.is_sub_type(abstract, runtime):
            return self.error(
                TypeError(
                    f"Abstract type '{abstract.name}' resolved to '{name}', "
                    "which is not one of its types."
                ),
                sel,
                path,
            )
        return name

    async def on_time(self) -> None:
        """Between the steps of a level: give the loop its turn when this one has run
        long (the deadline's timer fires at such a point), and stop past the deadline
        with the budget's error."""
        await give_way()
        budget = self.budget
        if budget.exhausted():
            if budget.error is None:
                budget.too_slow()
            raise Stop

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
        """(size, cursor position, backward) of a connection, by the one rule of page
        windows (schema/types/common.py): a bad one is the field's error."""
        args = sel.args
        page = window(
            self.settings,
            args.get("first"),
            args.get("after"),
            args.get("last"),
            args.get("before"),
        )
        return page.size, None if page.cursor is None else page.cursor[0], page.backward


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
# Filled by schema/plan/render.py: the types built from table rows -> their Strawberry
# object for a row (what a field's own resolver is handed).
TABLE_TYPES: dict[str, Callable[[Any], Any]] = {}
# Types whose values are Strawberry objects (an event as delivered: its row and what the
# caller may see of it), handed to their steps as they are.
OBJECT_TYPES: set[str] = set()

MISSES = Counter(
    "okr_plan_misses",
    "Fields read by their own resolver (and the data loaders) instead of a set-based "
    "step of the plan, per type and field",
    ["type", "field"],
)
_WARNED: set[tuple[str, str, str]] = set()


class RowView:
    """A row from outside the plan's statements (a use case's or a loader's model
    instance) read as the plan reads its own records: by item and by attribute."""

    __slots__ = ("_row",)

    def __init__(self, row: Any) -> None:
        self._row = row

    def __getitem__(self, name: str) -> Any:
        return getattr(self._row, name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)


# What the plan's own statements give: records, and rows rebuilt from joined columns.
_PLAN_ROWS = {Rec, JoinedRow}


def _path_at(path_of: Callable[[int], Path], places: list[int], j: int) -> Path:
    return path_of(places[j])


def as_row(item: Any) -> Any:
    """A table type's value as a plan row: its Strawberry object's row, as it is when it
    is one of the plan's records."""
    if has_object_definition(item):
        item = cast(Any, item).row
    return item if isinstance(item, (Rec, JoinedRow, RowView)) else RowView(item)


def _null_error(sel: Sel) -> TypeError:
    return TypeError(f"Cannot return null for non-nullable field {sel.parent}.{sel.name}.")


_DATA_READS: dict[tuple[str, str], bool] = {}


def _reads_data(type_name: str, field_name: str, field_def: Any) -> bool:
    """Whether the field's own resolver reads: it has one, it awaits (a synchronous
    resolver only computes from its object: no statement, no loader), and it is not a
    write's or an event's root. What the plan counts as a miss."""
    key = (type_name, field_name)
    got = _DATA_READS.get(key)
    if got is None:
        definition = (field_def.extensions or {}).get("strawberry-definition")
        resolver = getattr(definition, "base_resolver", None)
        got = _DATA_READS[key] = (
            type_name not in ("Mutation", "Subscription")
            and resolver is not None
            and bool(resolver.is_async)
        )
    return got


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
            raise ByResolver("no probe of the cursor's other side")
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


_STRAWBERRY_TYPES: dict[type, bool] = {}


def _strawberry_type(cls: type) -> bool:
    """Whether instances of `cls` are Strawberry objects, decided once per class (a
    level's items are checked by their distinct classes, not one by one)."""
    known = _STRAWBERRY_TYPES.get(cls)
    if known is None:
        known = _STRAWBERRY_TYPES[cls] = has_object_definition(cls)
    return known
