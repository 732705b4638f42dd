"""Realism in GraphQL: is a key result's target realistic, judged by its record
(docs/design.md, "Realism"; the rule is `service.domain.rules.realism`, the record's read
`service.reads.realism`, batched per request by `Loaders.record_of`)."""

from __future__ import annotations

from typing import Any

import strawberry

from schema.context import Info
from service.domain import enums, rules
from service.reads.realism import judge

RealismVerdict = enums.RealismVerdict
strawberry.enum(RealismVerdict, name="RealismVerdict")


@strawberry.type(description="Is the target realistic, judged by the record.")
class Realism:
    verdict: RealismVerdict
    required_rate: float | None = strawberry.field(
        description="Units per week still needed to reach the target by the cycle's end."
    )
    observed_rate: float | None = strawberry.field(
        description="Units per week the record shows over a trailing window as long as the "
        "cycle, in the key result's direction (a DECREASE that falls is positive)."
    )
    ratio: float | None = strawberry.field(
        description="requiredRate / observedRate, when both are known."
    )
    basis: int = strawberry.field(description="How many points of record the judgement rests on.")

    @classmethod
    def of(cls, got: rules.Realism) -> Realism:
        return cls(
            verdict=got.verdict,
            required_rate=got.required_rate,
            observed_rate=got.observed_rate,
            ratio=got.ratio,
            basis=got.basis,
        )


@strawberry.type(description="How many key results have this verdict.")
class RealismCount:
    verdict: RealismVerdict
    count: int


def realism_counts(counts: dict[str, int]) -> list[RealismCount]:
    """Every verdict, in the enum's order, zeros included: a mix reads at a glance."""
    return [RealismCount(verdict=v, count=counts.get(str(v), 0)) for v in enums.RealismVerdict]


async def realism_of(info: Info, key_result: Any, cycle: Any) -> Realism:
    """A key result's realism, now, from its record."""
    start, end = rules.cycle_bounds(cycle.starts_on, cycle.ends_on)
    now = info.context.now
    since = rules.record_window(start, end, now)
    fit = await info.context.loaders.record_of.load((key_result.id, since, now))
    return Realism.of(judge(key_result, fit, start, end, now))
