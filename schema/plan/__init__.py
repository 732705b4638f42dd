"""The read engine: one plan answers every operation, every field level by level, by
set-based steps where a field has one and by its own resolver (a counted miss) where it
has none. Modules: collect (selections, the Plan and its builders), resolvers (the
set-based steps per type), hints (what a document's selection joins into a statement),
render (the roots and the executor class)."""

from schema.plan.collect import FIELDS, MISSES, RESOLVERS, ByResolver, Plan, Sel, Stop
from schema.plan.render import ROOTS, SWITCH, Switch, planned_executor, run

__all__ = [
    "FIELDS",
    "MISSES",
    "RESOLVERS",
    "ROOTS",
    "SWITCH",
    "ByResolver",
    "Plan",
    "Sel",
    "Stop",
    "Switch",
    "planned_executor",
    "run",
]
