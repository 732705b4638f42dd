"""Planned reads: what the document selects decides what each statement carries (the
to-one rows joined into a level's statement, a key result's check-in page fetched with it,
the objective columns a walk of descendants reads)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphql import GraphQLError

if TYPE_CHECKING:
    from schema.plan.collect import Plan, Sel
    from service.reads.rows import Reads

# What a field of Objective reads of its row, past what every objective row carries.
_OBJECTIVE_CORE = (
    "id", "cycle_id", "team_id", "owner_id", "parent_id", "visibility", "progress",
    "has_check_in",
)  # fmt: skip
_OBJECTIVE_LEAVES = {
    "title": "title",
    "description": "description",
    "weight": "weight",
    "score": "score",
    "version": "version",
    "createdAt": "created_at",
    "updatedAt": "updated_at",
    "archivedAt": "archived_at",
}
# Fields whose rule reads the row's cycle (directly or through its objective).
_NEEDS_CYCLE = {("Objective", f) for f in ("status", "expectedProgress", "stale", "cycle")} | {
    ("KeyResult", f) for f in ("status", "expectedProgress", "stale", "nextCheckInDue", "forecast")
}
_NEEDS_TEAM = {("Objective", "team"), ("Objective", "stale")} | {
    ("KeyResult", f) for f in ("stale", "nextCheckInDue")
}


def set_joins(plan: Plan, reads: Reads) -> None:
    """Join into each level's statement the to-one rows the document will ask for, and
    read only the objective columns its fields read on a walk of descendants."""
    wants = plan.wants
    joins = []
    if wants & _NEEDS_CYCLE:
        joins.append("cycle")
    if ("Objective", "owner") in wants:
        joins.append("owner")
    if wants & _NEEDS_TEAM:
        joins.append("team")
    reads.objective_joins = tuple(joins)
    if ("KeyResult", "lastCheckIn") in wants:
        reads.key_result_joins = ("last",)
    objective_fields = {f for t, f in wants if t == "Objective"}
    reads.descendant_columns = _OBJECTIVE_CORE + tuple(
        sorted({c for f, c in _OBJECTIVE_LEAVES.items() if f in objective_fields})
    )


def key_result_ahead(plan: Plan, sel: Sel) -> tuple[bool, tuple[int, int | None] | None]:
    """For a node that is a key result: whether its objective, cycle and team are read
    (then they come with it), and the window of its first `checkIns` (then that page
    comes with it too): one statement for the node and what hangs from it."""
    kr_sels = plan.selections(plan.ex.schema.type_map["KeyResult"], sel.details)
    whole = any(
        ("KeyResult", s.name) in _NEEDS_CYCLE | {("KeyResult", "objective")} for s in kr_sels
    )
    page = None
    for s in kr_sels:
        if s.name == "checkIns":
            try:
                first, after, backward = plan.window(s)
            except GraphQLError:  # its arguments: the field's own error, later
                break
            page = None if backward else (first, after)  # a backward page: on its own
            break
    return whole, page
