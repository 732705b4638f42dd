"""The read engine's roots (`node`, `objectives` by set-based steps, every other root by
its resolver inside the plan) and the executor class whose root fields the plan answers:
queries, mutations (one root after another, each payload read after its write) and
subscription events."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from graphql import GraphQLError, GraphQLObjectType
from graphql.execution.values import get_argument_values
from graphql.pyutils import Path
from prometheus_client import Counter

from schema import ids
from schema.enums import Measure, Role, Visibility
from schema.plan.collect import (
    FIELDS,
    OBJECT_TYPES,
    RESOLVERS,
    TABLE_TYPES,
    ByResolver,
    Nulled,
    Page,
    Plan,
    Sel,
    Stop,
    require_plain,
)
from schema.plan.hints import key_result_ahead
from schema.plan.resolvers import (
    _attr,
    _c_check_in,
    _c_edges,
    _c_key_result,
    _c_page_info,
    _c_total,
    _connection_type,
    _cy_expected,
    _cy_review_due,
    _e_cursor,
    _e_node,
    _ev_actor,
    _ev_subject,
    _field,
    _gid,
    _k_check_ins,
    _k_expected,
    _k_forecast,
    _k_last_check_in,
    _k_next_due,
    _k_objective,
    _k_realism,
    _k_stale,
    _k_status,
    _m_key_results,
    _m_latest,
    _o_cycle,
    _o_descendants,
    _o_expected,
    _o_key_results,
    _o_linked,
    _o_stale,
    _o_status,
    _owned_objectives,
    _pe_changes,
    _pe_check_in,
    _pi_end,
    _pi_next,
    _pi_previous,
    _pi_start,
    _progress,
    _team,
    _user,
)
from service.domain.enums import CycleStatus, KeyResultType

log = logging.getLogger("okr.plan")

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
    "parent": _o_linked("parent_id"),
    "carriedFrom": _o_linked("carried_from_id"),
    "children": _owned_objectives("parent_id", cycle_argument=False),
    "keyResults": _o_key_results,
    "descendants": _o_descendants,
}
_KEY_RESULT: dict[str, Callable[..., Any]] = {
    "id": _gid("KeyResult"),
    "title": _attr("title"),
    "type": _attr("type", KeyResultType),
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
    "realism": _k_realism,
}
_CHECK_IN: dict[str, Callable[..., Any]] = {
    "id": _gid("CheckIn"),
    "value": _attr("value"),
    "confidence": _attr("confidence"),
    "note": _attr("note"),
    "progress": _attr("progress"),
    "measuredAt": _attr("measured_at"),
    "createdAt": _attr("created_at"),
    "author": lambda plan, sel, rows: _user(plan, sel, rows, "author_id"),
    "retracted": lambda plan, sel, rows: [r["retracted_at"] is not None for r in rows],
    "retractedAt": _attr("retracted_at"),
    "reason": _attr("retraction_reason"),
    "retractedBy": lambda plan, sel, rows: _user(plan, sel, rows, "retracted_by_id"),
    "correctionOf": _c_check_in("correction_of_id"),
    "correctedBy": _c_check_in("corrected_by_id"),
    "keyResult": _c_key_result,
}
_USER = {
    "id": _gid("User"),
    "name": _attr("name"),
    "email": _attr("email"),
    "role": _attr("role", Role),
    "active": _attr("active"),
}
_TEAM: dict[str, Callable[..., Any]] = {
    "id": _gid("Team"),
    "name": _attr("name"),
    "checkInCadenceDays": _attr("check_in_cadence_days"),
    "parent": lambda plan, sel, rows: _team(plan, sel, rows, "parent_id"),
    "objectives": _owned_objectives("team_id", cycle_argument=True),
}
_CYCLE = {
    "id": _gid("Cycle"),
    "name": _attr("name"),
    "startsOn": _attr("starts_on"),
    "endsOn": _attr("ends_on"),
    "status": _attr("status", CycleStatus),
    "expectedProgress": _cy_expected,
    "reviewDue": _cy_review_due,
}
_METRIC: dict[str, Callable[..., Any]] = {
    "id": _gid("Metric"),
    "key": _attr("key"),
    "name": _attr("name"),
    "unit": _attr("unit"),
    "description": _attr("description"),
    "createdAt": _attr("created_at"),
    "archived": lambda plan, sel, rows: [r["archived_at"] is not None for r in rows],
    "latest": _m_latest,
    "keyResults": _m_key_results,
}
_FORECAST = {"value": _field("value"), "progress": _field("progress"), "status": _field("status")}
_REALISM = {
    "verdict": _field("verdict"),
    "requiredRate": _field("required_rate"),
    "observedRate": _field("observed_rate"),
    "ratio": _field("ratio"),
    "basis": _field("basis"),
}
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


RESOLVERS.update(
    {
        "Objective": _OBJECTIVE,
        "KeyResult": _KEY_RESULT,
        "CheckIn": _CHECK_IN,
        "User": _USER,
        "Team": _TEAM,
        "Cycle": _CYCLE,
        "Metric": _METRIC,
        "Event": {"actor": _ev_actor, "subject": _ev_subject},
        "ProgressEvent": {"actor": _ev_actor, "checkIn": _pe_check_in, "changes": _pe_changes},
        "Forecast": _FORECAST,
        "Realism": _REALISM,
        "PageInfo": _PAGE_INFO,
        "ObjectiveConnection": _connection("Objective"),
        "CheckInConnection": _connection("CheckIn"),
        "ObjectiveEdge": _edge("Objective"),
        "CheckInEdge": _edge("CheckIn"),
    }
)
FIELDS.update({name: set(fields) for name, fields in RESOLVERS.items()})


def _strawberry_of(type_name: str) -> Callable[[Any], Any]:
    def make(row: Any) -> Any:
        from schema import nodes

        return nodes.NODES[type_name].type.of(row)

    return make


TABLE_TYPES.update(
    {
        name: _strawberry_of(name)
        for name in ("Objective", "KeyResult", "CheckIn", "User", "Team", "Cycle", "Metric")
    }
)

OBJECT_TYPES.update({"Event", "ProgressEvent"})

# --- the roots ----------------------------------------------------------------------------

_NODE_TYPES = ("Objective", "KeyResult", "CheckIn", "User", "Team", "Cycle")


async def _root_node(plan: Plan, sel: Sel, path: Path) -> Any:
    try:
        type_name, pk = ids.decode(sel.args["id"])
    except ids.BadId:
        return None
    if type_name not in _NODE_TYPES:
        raise ByResolver(f"node of {type_name}")
    reads = plan.reads
    if type_name == "Objective":
        row = await reads.objective(pk)
    elif type_name == "KeyResult":
        row = await reads.key_result(pk, *key_result_ahead(plan, sel))
    elif type_name == "CheckIn":
        row = await reads.check_in(pk)
    else:
        table = {"User": "app_user", "Team": "team", "Cycle": "cycle"}[type_name]
        row = (await reads.by_id(table, [pk])).get(pk)
    if row is None:
        return None
    return (await plan.build(type_name, sel.details, [row], lambda i: path))[0]


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


async def _root_objectives(plan: Plan, sel: Sel, path: Path) -> Any:
    from schema.queries import ObjectiveFilter, objective_filter
    from service.reads import lists
    from service.reads.lists import OBJECTIVE

    first, position, backward = plan.window(sel)
    raw = sel.args.get("filter")
    if raw is not None and not isinstance(raw, ObjectiveFilter):
        raw = ObjectiveFilter(**{_FILTER_FIELDS[k]: v for k, v in raw.items()})
    wanted = objective_filter(raw)
    ctx = plan.ctx
    listing = lists.objectives(ctx.db, ctx.principal, wanted, plan.now)
    base = listing.base
    order = OBJECTIVE.c.id.desc() if backward else OBJECTIVE.c.id
    stmt = base.order_by(order).limit(first + 1)
    if position is not None:
        stmt = stmt.where(OBJECTIVE.c.id < position if backward else OBJECTIVE.c.id > position)
    reads = plan.reads
    rows = list(await reads.execute_joined(stmt))
    rows.sort(key=_by_id, reverse=backward)  # the order read: backward, toward the start
    reads.remember("objective", rows)
    await reads.by_id("cycle", [r.cycle_id for r in rows])

    async def count() -> int:
        return int((await reads.execute(listing.counting()))[0][0])

    async def beyond() -> bool:
        # Any row of the list on the cursor's other side.
        assert position is not None
        return int((await reads.execute(listing.any_beyond(position, backward)))[0][0]) > 0

    page = Page(rows, first, position, "Objective", count, beyond, backward)
    return (await plan.build(_connection_type(sel), sel.details, [page], lambda i: path))[0]


def _by_id(row: Any) -> int:
    return int(row.id)


ROOTS = {"node": _root_node, "objectives": _root_objectives}


async def _root(plan: Plan, root_type: GraphQLObjectType, sel: Sel, root_value: Any) -> Any:
    """A root field: by its set-based step when it has one (and the caller is signed
    in: the step's statements are the caller's), else by its own resolver; then what it
    returns built by the plan."""
    path = Path(None, sel.key, root_type.name)
    step = ROOTS.get(sel.name) if root_type.name == "Query" else None
    if step is not None and plan.ctx.is_authenticated:
        await plan.open_reads()
        try:
            return await step(plan, sel, path)
        except ByResolver as why:
            plan.missed(sel, str(why))
        except GraphQLError as refused:  # its arguments
            return plan.error(refused, sel, path)
    return (await plan.by_resolver(root_type, sel, [root_value], None))[0]


def _survey(plan: Plan, gtype: Any, details: list[Any], seen: set[tuple[str, int]]) -> None:
    """Every (type, field) the document selects (plan.wants): what each statement joins."""
    schema = plan.ex.schema
    types = [gtype] if isinstance(gtype, GraphQLObjectType) else schema.get_possible_types(gtype)
    for t in types:
        key = (t.name, id(details))
        if key in seen:
            continue
        seen.add(key)
        for child in plan.selections(t, details):
            plan.wants.add((t.name, child.name))
            if child.leaf is None and child.rtype is not None:
                _survey(plan, child.rtype, child.details, seen)


async def run(
    executor: Any, root_type: GraphQLObjectType, root_value: Any, grouped: Any
) -> dict[str, Any] | None:
    """The data of an operation (a query, a mutation's root fields one after another, a
    subscription's event), every field by the plan. None when a non-null root failed;
    {} past the budget (its one error is the response)."""
    SWITCH.planned += 1
    OPERATIONS.labels(root_type.name.lower()).inc()
    writes = root_type is executor.schema.mutation_type
    roots: list[Sel] = []
    for response_key, fdl in grouped.items():
        node = fdl[0].node
        require_plain(fdl)
        name = node.name.value
        if name == "__typename":
            roots.append(Sel(response_key, name, {}, fdl))
            continue
        field_def = executor.schema.get_field(root_type, name)  # __schema, __type too
        args = get_argument_values(field_def, node, executor.variable_values)
        generic = name not in ROOTS
        roots.append(Plan.sel(root_type, response_key, name, args, fdl, generic, field_def))
    data: dict[str, Any] = {}
    plan: Plan | None = None
    try:
        for sel in roots:
            if sel.name == "__typename":
                data[sel.key] = root_type.name
                continue
            if plan is None or writes:  # a mutation's payload reads what it committed
                if plan is not None:
                    await plan.close()
                plan = Plan(executor)
                seen: set[tuple[str, int]] = set()
                for s in [sel] if writes else roots:
                    if s.field_def is not None and s.rtype is not None and s.leaf is None:
                        _survey(plan, s.rtype, s.details, seen)
            value = await _root(plan, root_type, sel, root_value)
            if type(value) is Nulled:
                if not sel.nullable:  # the whole data is null
                    plan.absorb(value, None)
                    return None
                value = plan.absorb(value, Path(None, sel.key, root_type.name))
            data[sel.key] = value
    except Stop:
        return {}
    finally:
        if plan is not None:
            await plan.close()
    return data


OPERATIONS = Counter(
    "okr_plan_operations",
    "Operations the plan answered: queries, mutations (their payloads) and subscription events",
    ["operation"],
)


class Switch:
    """A test's hook (issue 20): `enabled = False` runs graphql-core's own executor over
    the same resolvers, the path the expectations of tests/graphql/test_planned_reads.py
    are recorded from (OKR_RECORD_EXPECTED=1) and which tests/graphql/test_corrections.py
    still reads corrections through beside the plan. No setting reaches it."""

    def __init__(self) -> None:
        self.enabled = True
        self.planned = 0  # operations the plan answered, for tests and the bench


SWITCH = Switch()


def planned_executor(base: type) -> type:
    """`base` (the budget executor) answering every operation by the plan."""

    class PlannedExecutor(base):  # type: ignore[valid-type,misc]
        def execute_collected_root_fields(
            self,
            root_type: GraphQLObjectType,
            root_value: Any,
            grouped_field_set: Any,
            serially: bool,
            new_defer_usages: Any,
        ) -> Any:
            if not SWITCH.enabled:
                return super().execute_collected_root_fields(
                    root_type, root_value, grouped_field_set, serially, new_defer_usages
                )
            if new_defer_usages:
                raise GraphQLError("@defer is not supported")

            return run(self, root_type, root_value, grouped_field_set)

    return PlannedExecutor
