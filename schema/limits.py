"""Limits checked before any resolver runs: `first` or `last` on every connection (never
both), and a query cost in the style of GitHub's and Shopify's (`extensions.cost`).

Cost: every object a query can return counts 1, multiplied by the page sizes of the
connections around it; a plain list counts as LIST_GUESS items, `nodes(ids:)` as its
ids and `_entities(representations:)` (federation) as its representations. Scalars are
free, but for the two that read the check-in history once per object
(HISTORY_READ). Arguments are read as execution will read them: graphql-core's
own coercion, with the variables' and the arguments' defaults. Depth, tokens and
aliases are limited by Strawberry's own extensions beside this one.

Three fields are priced by what they read, as best known before execution, from
statistics read for the caller just before the cost is computed (service/reads/sizes.py,
one cheap statement each, run only when the document asks for the field): a
`descendants` as the mean tree under a root, a `forecast` as one object plus the mean
check-ins per key result (it fits a line through all of them), and a `cycleReport` as
the objectives and key results of its cycle. A plain list's real length is known only
once it is read: the response budget (`schema/budget.py`) bounds it while the response
is built, and the deadline ends what runs long.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    is_abstract_type,
    is_composite_type,
    validate,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from strawberry.extensions import SchemaExtension

from schema import ids
from schema.caching import MAX_CACHED_QUERY_CHARS
from service.reads.sizes import Sizes, sizes

LIST_GUESS = 10
# A read of the check-in history made for one object alone (`progress(asOf:)`,
# `progressHistory`): priced like a hundred objects, so that a few thousand of them in
# one document are refused before they hold the database and the event loop.
HISTORY_READ = 100
PRICED_SCALARS = frozenset({"progress", "progressHistory"})
# A cycle report reads every objective and key result of the cycle, and their records:
# priced as that many (service/reads/sizes.py); this when the cycle cannot be counted.
CYCLE_REPORT = 1000


class Wants:
    """The statistics a document's price needs (found by a first walk)."""

    def __init__(self) -> None:
        self.tree = False
        self.check_ins = False
        self.cycle_ids: set[int] = set()

    def __bool__(self) -> bool:
        return self.tree or self.check_ins or bool(self.cycle_ids)


class LimitExceeded(Exception):
    pass


def _unwrap(t: Any) -> tuple[Any, bool]:
    is_list = False
    while isinstance(t, (GraphQLNonNull, GraphQLList)):
        if isinstance(t, GraphQLList):
            is_list = True
        t = t.of_type
    return t, is_list


class CostWalker:
    def __init__(
        self,
        schema: Any,
        fragments: dict[str, FragmentDefinitionNode],
        variables: VariableValues,
        max_page: int,
        default_page: int,
        sizes: Sizes | None = None,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.max_page = max_page
        self.default_page = default_page
        self.sizes = sizes or Sizes()
        self.wants = Wants()

    def _args(self, field: Any, node: FieldNode) -> dict[str, Any]:
        """The arguments as execution will see them, defaults included (an argument
        that does not coerce fails the field before anything under it runs)."""
        try:
            return get_argument_values(field, node, self.variables)
        except GraphQLError:
            return {}

    def _page_size(self, args: dict[str, Any]) -> int:
        """A connection's page size, `first` or `last` alike (Relay): both at once, or
        either out of range, is refused before anything runs."""
        first, last = args.get("first"), args.get("last")
        if first is not None and last is not None:
            raise LimitExceeded("first and last cannot be used together")
        name, size = ("last", last) if last is not None else ("first", first)
        if size is None:
            size = self.default_page
        if not isinstance(size, int) or size < 0 or size > self.max_page:
            raise LimitExceeded(f"{name} must be between 0 and {self.max_page}")
        return size

    def _history_cost(self, name: str, field: Any, node: FieldNode) -> int:
        """What a field that reads the check-in history once per object, unbatched, costs
        beyond its objects: progress as of an instant, and a progress series."""
        if name == "cycleReport":
            try:
                args = self._args(field, node)
                cycle = ids.decode_as(str(args.get("cycle_id", args.get("cycleId"))), "Cycle")
            except (ids.BadId, TypeError, ValueError):
                return 0  # answered with an error, reading nothing
            self.wants.cycle_ids.add(cycle)
            return self.sizes.cycles.get(cycle, CYCLE_REPORT)
        if name == "forecast":
            self.wants.check_ins = True
            return self.sizes.check_ins or 0
        if name not in PRICED_SCALARS or not node.arguments:
            return 0
        args = self._args(field, node)
        if name == "progress":
            return HISTORY_READ if args.get("as_of", args.get("asOf")) is not None else 0
        start, end = args.get("from_", args.get("from")), args.get("to")
        interval = args.get("interval")
        step = {"HOUR": 3600, "DAY": 86400, "WEEK": 604800}.get(
            str(getattr(interval, "value", interval or "DAY")), 86400
        )
        points = 1
        if start is not None and end is not None:
            try:
                points = int((end - start).total_seconds() // step) + 1
            except (TypeError, AttributeError, OverflowError):
                points = 1
        return HISTORY_READ + max(0, min(points, 400))

    def _fields(
        self,
        selection_set: SelectionSetNode | None,
        parent: Any,
        seen: frozenset[str] = frozenset(),
    ) -> Iterator[tuple[FieldNode, Any]]:
        for sel in selection_set.selections if selection_set else ():
            if isinstance(sel, FieldNode):
                yield sel, parent
            elif isinstance(sel, InlineFragmentNode):
                cond = (
                    self.schema.get_type(sel.type_condition.name.value)
                    if sel.type_condition
                    else parent
                )
                yield from self._fields(sel.selection_set, cond, seen)
            elif isinstance(sel, FragmentSpreadNode):
                name = sel.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:
                    continue
                cond = self.schema.get_type(fragment.type_condition.name.value)
                yield from self._fields(fragment.selection_set, cond, seen | {name})

    def cost(self, selection_set: SelectionSetNode | None, parent: Any, multiplier: int) -> int:
        total = 0
        for node, owner in self._fields(selection_set, parent):
            name = node.name.value
            if name.startswith("__"):
                continue
            fields = getattr(owner, "fields", None)
            if fields is None or name not in fields:
                # An interface or union: count against the first type with the field.
                fields = {}
                for t in self.schema.get_possible_types(owner) if is_abstract_type(owner) else ():
                    if name in t.fields:
                        fields = t.fields
                        break
                if name not in fields:
                    continue
            field = fields[name]
            field_type, is_list = _unwrap(field.type)
            total += multiplier * self._history_cost(name, field, node)
            if not is_composite_type(get_named_type(field_type)):
                continue
            inner = multiplier
            type_name = getattr(field_type, "name", "")
            if type_name.endswith("Connection"):
                size = self._page_size(self._args(field, node))
                total += multiplier
                inner = multiplier * max(size, 1)
            elif getattr(owner, "name", "").endswith("Connection"):
                inner = multiplier  # edges, pageInfo: counted by the connection's page size
            elif is_list:
                args = self._args(field, node)
                listed = args.get("ids", args.get("representations"))  # nodes, _entities
                size = len(listed) if isinstance(listed, list) else LIST_GUESS
                if name == "descendants":
                    self.wants.tree = True
                    size = self.sizes.tree if self.sizes.tree is not None else LIST_GUESS
                inner = multiplier * max(size, 1)
                total += inner
            else:
                total += multiplier
            total += self.cost(node.selection_set, field_type, inner)
        return total


def _operation(document: Any, operation_name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    return operations[0] if operations else None


async def query_cost(
    schema: Any,
    document: Any,
    operation_name: str | None,
    variables: VariableValues,
    max_page: int,
    default_page: int,
    context: Any = None,
) -> int:
    """The document's cost; when it asks for a field priced by what it reads, and the
    caller is known, by the statistics read for that caller (service/reads/sizes.py)."""
    op = _operation(document, operation_name)
    if op is None:
        return 0
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    root = {
        "query": schema.query_type,
        "mutation": schema.mutation_type,
        "subscription": schema.subscription_type,
    }[op.operation.value]
    walker = CostWalker(schema, fragments, variables, max_page, default_page)
    cost = walker.cost(op.selection_set, root, 1)
    wants = walker.wants
    if wants and getattr(context, "is_authenticated", False):
        async with context.db.connect() as conn:
            known = await sizes(
                conn,
                context.principal,
                tree=wants.tree,
                check_ins=wants.check_ins,
                cycle_ids=wants.cycle_ids,
            )
        walker = CostWalker(schema, fragments, variables, max_page, default_page, known)
        cost = walker.cost(op.selection_set, root, 1)
    return max(1, cost)


def cost_limit(
    max_cost: int, max_page: int, default_page: int, hide_suggestions: bool = False
) -> type[SchemaExtension]:
    checked: dict[tuple, list[GraphQLError]] = {}  # validation errors per document

    class QueryCost(SchemaExtension):
        """Validates the document itself, then adds the limits' errors, so that
        nothing executes when any is exceeded."""

        cost: int | None = None

        async def on_validate(self) -> AsyncIterator[None]:
            ctx = self.execution_context
            if ctx.graphql_document is not None and ctx.pre_execution_errors is None:
                # Validation depends on the document only: remember it per document.
                # Keyed by a digest (the text of a padded document is never kept), and
                # only for texts the parser cache would keep too.
                key = (
                    (
                        hashlib.sha256(ctx.query.encode("utf-8", "surrogatepass")).digest(),
                        ctx.operation_name,
                    )
                    if ctx.query and len(ctx.query) <= MAX_CACHED_QUERY_CHARS
                    else None
                )
                errors = checked.get(key) if key else None
                if errors is None:
                    errors = list(
                        validate(
                            ctx.schema._schema,
                            ctx.graphql_document,
                            ctx.validation_rules,
                            hide_suggestions=hide_suggestions,
                        )
                    )
                    if key:
                        checked[key] = errors
                        while len(checked) > 1000:
                            checked.pop(next(iter(checked)))
                errors = list(errors)
                if not errors:
                    errors += await self._limits()  # the cost depends on the variables too
                ctx.pre_execution_errors = errors
            yield

        async def _limits(self) -> list[GraphQLError]:
            ctx = self.execution_context
            schema = ctx.schema._schema
            op = _operation(ctx.graphql_document, ctx.operation_name)
            if op is None:
                return []  # execution names the problem
            raw = ctx.variables if isinstance(ctx.variables, dict) else {}
            variables = get_variable_values(
                schema, op.variable_definitions or (), raw, 50, hide_suggestions
            )
            if isinstance(variables, list):
                return variables  # what execution would say, said before it starts
            try:
                self.cost = await query_cost(
                    schema,
                    ctx.graphql_document,
                    ctx.operation_name,
                    variables,
                    max_page,
                    default_page,
                    ctx.context,
                )
            except LimitExceeded as exc:
                return [GraphQLError(str(exc), extensions={"code": "BAD_USER_INPUT"})]
            if self.cost > max_cost:
                return [
                    GraphQLError(
                        f"query cost {self.cost} exceeds the maximum of {max_cost}; "
                        "ask for smaller pages or fewer fields",
                        extensions={
                            "code": "QUERY_TOO_COSTLY",
                            "cost": self.cost,
                            "maximumCost": max_cost,
                        },
                    )
                ]
            return []

        def get_results(self) -> dict[str, Any]:
            if self.cost is None:
                return {}
            return {"cost": {"requestedQueryCost": self.cost, "maximumAvailable": max_cost}}

    return QueryCost
