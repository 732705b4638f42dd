"""Planned reads: the resolver tables, the roots, and the executor class that answers a
query by the plan or hands it to the general executor."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from graphql import GraphQLObjectType, OperationType
from graphql.execution.values import get_argument_values

from schema import ids
from schema.enums import Measure, Role, Visibility
from schema.plan.collect import (
    FIELDS,
    RESOLVERS,
    OverBudget,
    Page,
    Plan,
    Sel,
    Unsupported,
    _named,
    require_plain,
)
from schema.plan.hints import _key_result_ahead, _set_joins
from schema.plan.resolvers import (
    _attr,
    _c_check_in,
    _c_edges,
    _c_page_info,
    _c_total,
    _connection_type,
    _cy_expected,
    _cy_review_due,
    _e_cursor,
    _e_node,
    _field,
    _gid,
    _k_check_ins,
    _k_expected,
    _k_forecast,
    _k_last_check_in,
    _k_next_due,
    _k_objective,
    _k_stale,
    _k_status,
    _o_cycle,
    _o_descendants,
    _o_expected,
    _o_key_results,
    _o_parent,
    _o_stale,
    _o_status,
    _pi_end,
    _pi_next,
    _pi_previous,
    _pi_start,
    _progress,
    _t_objectives,
    _team,
    _user,
)
from service.domain.enums import CycleStatus, KeyResultType
from service.reads.rows import Reads

log = logging.getLogger("okr.fastpath")

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
    "objectives": _t_objectives,
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


RESOLVERS.update(
    {
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
)
FIELDS.update({name: set(fields) for name, fields in RESOLVERS.items()})

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
        row = await reads.key_result(pk, *_key_result_ahead(plan, sel))
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
    from schema.queries import ObjectiveFilter
    from service.reads import lists
    from service.reads.lists import OBJECTIVE

    first, position, backward = plan.window(sel)
    raw = sel.args.get("filter")
    wanted = lists.ObjectiveFilter()
    if raw is not None:
        f = (
            raw
            if isinstance(raw, ObjectiveFilter)
            else ObjectiveFilter(**{_FILTER_FIELDS[k]: v for k, v in raw.items()})
        )
        search = f.search.strip() if f.search else None
        if search is not None and len(search) > lists.MAX_SEARCH:
            raise Unsupported("search too long")
        wanted = lists.ObjectiveFilter(
            cycle_id=plan.decode(f.cycle_id, "Cycle"),
            team_id=plan.decode(f.team_id, "Team"),
            owner_id=plan.decode(f.owner_id, "User"),
            parent_id=plan.decode(f.parent_id, "Objective"),
            roots_only=bool(f.roots_only),
            statuses=None if f.status is None else [str(s.value) for s in f.status],
            search=search,
            include_archived=bool(f.include_archived),
        )
    ctx = plan.ctx
    listing = lists.objectives(ctx.db, ctx.principal, wanted, ctx.now)
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
        # Any row of the list on the cursor's other side (the executor's probe).
        assert position is not None
        return int((await reads.execute(listing.any_beyond(position, backward)))[0][0]) > 0

    page = Page(rows, first, position, "Objective", count, beyond, backward)
    return (await plan.build(_connection_type(sel), sel.details, [page]))[0]


def _by_id(row: Any) -> int:
    return int(row.id)


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
        _set_joins(plan, reads)
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
        require_plain(fdl)
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
    if any(k in args for k in ("first", "after", "last", "before")):
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
            plan.wants.add((t.name, child.name))
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
