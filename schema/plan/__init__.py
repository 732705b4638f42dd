"""Planned reads: a query document answered past the general executor.

For a validated query, the fields below each root field are collected with graphql-core's
own field collection (it applies @skip/@include, merges fields by response key, fills
argument defaults). The plan then walks the selection level by level: for all the rows of
one level it fetches each selected relation in set-based statements (service/reads/,
all on one connection), joining the to-one relations the document asks for (cycle, owner,
last check-in) into the level's own statement, computes derived values (status, expected
progress, stale, next due, forecast) with the pure rules, and builds the response dict
directly, serialised by the schema's own scalars and enums. Nothing resolves per field.

Anything the plan does not cover raises `Unsupported` and the general executor answers
instead: it stays the reference, and a differential test holds the two equal.

Modules: collect (selections, the Plan and its builders), resolvers (per type),
render (resolver tables, roots, the executor class).
"""

from schema.plan.collect import FIELDS, RESOLVERS, OverBudget, Plan, Sel, Unsupported
from schema.plan.render import ROOTS, SWITCH, Switch, planned_executor, run_planned

__all__ = [
    "FIELDS",
    "RESOLVERS",
    "ROOTS",
    "SWITCH",
    "OverBudget",
    "Plan",
    "Sel",
    "Switch",
    "Unsupported",
    "planned_executor",
    "run_planned",
]
