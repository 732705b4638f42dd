"""applyPlan (README, "Plans as files"): a cycle's objectives and key results as a YAML
or JSON document, applied through the one funnel (common.py) by the use case
service/usecases/plans.py, which calls the use case each change stands for."""

from __future__ import annotations

from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from schema.context import Info
from schema.mutations.common import Payload, mutate
from service.usecases import commands, plans

strawberry.enum(plans.PlanAction, name="PlanAction")


@strawberry.input
class ApplyPlanInput:
    document: str = strawberry.field(description="The plan, as YAML or JSON text.")
    dry_run: bool | None = strawberry.field(
        default=False, description="Compute and check the changes; write nothing."
    )
    prune: bool | None = strawberry.field(
        default=False,
        description="Archive the objectives and key results with a key that the plan no "
        "longer names (items without a key are never touched).",
    )

    def command(self) -> commands.ApplyPlan:
        return commands.ApplyPlan(self.document, dry_run=bool(self.dry_run), prune=bool(self.prune))


@strawberry.type(description="One change a plan makes, or would make on a dry run.")
class PlanChange:
    action: plans.PlanAction
    path: str = strawberry.field(
        description="`cycle`, `objectives/<key>` or `objectives/<key>/keyResults/<key>`."
    )
    before: JSON | None = strawberry.field(
        description="For an UPDATE or ARCHIVE: the changed fields as they were."
    )
    after: JSON | None = strawberry.field(
        description="For a CREATE: the item's fields as the plan gives them; for an UPDATE "
        "or ARCHIVE: the changed fields as they become."
    )

    @classmethod
    def of(cls, change: plans.PlanChange) -> PlanChange:
        before, after = cast(Any, change.before), cast(Any, change.after)
        return cls(action=change.action, path=change.path, before=before, after=after)


@strawberry.type
class ApplyPlanPayload(Payload):
    changes: list[PlanChange] = strawberry.field(
        default_factory=list,
        description="Every item of the plan (UNCHANGED included) and every archive, in the "
        "order they apply; empty when refused.",
    )

    @classmethod
    async def of(cls, info: Info, result: plans.PlanResult) -> ApplyPlanPayload:
        return cls(changes=[PlanChange.of(c) for c in result.changes])


# --- resolver (the Mutation root, schema/mutations/__init__.py) ---------------------------


async def apply_plan(info: Info, input: ApplyPlanInput) -> ApplyPlanPayload:
    return await mutate(info, input.command, plans.apply_plan, ApplyPlanPayload)
