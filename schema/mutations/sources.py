"""Mutations on metric sources (service/sources.py): set one (ADMIN), run one now (ADMIN
or SERVICE)."""

from __future__ import annotations

from functools import partial

import strawberry
from strawberry import ID

from schema.context import Info
from schema.enums import MetricSourceKind
from schema.mutations.common import mutate, required_gid
from schema.mutations.metrics import MetricPayload
from service import sources
from service.domain.errors import Rejected
from service.outbound import Outbound
from service.secrets import Box


@strawberry.input
class HeaderInput:
    name: str
    value: str


@strawberry.input
class SetMetricSourceInput:
    metric_id: ID
    kind: MetricSourceKind | None = strawberry.field(description="null removes the source.")
    url: str | None = None
    query: str | None = strawberry.field(
        default=None, description="PromQL, or a JSON pointer (RFC 6901)."
    )
    interval_seconds: int | None = strawberry.field(default=None, description="At least 60.")
    headers: list[HeaderInput] | None = strawberry.field(
        default=None, description="Sent with each request; stored encrypted, never shown."
    )
    backfill: bool = strawberry.field(
        default=False,
        description="PROMETHEUS: first fill the record from the start of the bound key "
        "results' cycles, at their check-in cadence.",
    )

    def command(self) -> sources.SetSource:
        return sources.SetSource(
            metric_id=required_gid(self.metric_id, "Metric", "metricId"),
            kind=self.kind,
            url=self.url,
            query=self.query,
            interval_seconds=self.interval_seconds,
            headers=tuple((h.name, h.value) for h in self.headers or ()),
            backfill=self.backfill,
        )


@strawberry.input
class RunMetricSourceInput:
    metric_id: ID


async def set_metric_source(info: Info, input: SetMetricSourceInput) -> MetricPayload:
    settings = info.context.settings
    usecase = partial(
        sources.set_source,
        outbound=Outbound.from_settings(settings),
        box=Box.from_settings(settings),
    )
    return await mutate(info, input.command, usecase, MetricPayload)


async def run_metric_source(info: Info, input: RunMetricSourceInput) -> MetricPayload:
    """Now, once: the request is made outside any transaction, then recorded as a
    scheduled run is (so it does not go through `mutate`'s one transaction)."""
    settings = info.context.settings
    outbound = Outbound.from_settings(settings)
    try:
        metric_id = required_gid(input.metric_id, "Metric", "metricId")
        row = await sources.run_now(
            info.context.db,
            info.context.principal,
            metric_id,
            outbound=outbound,
            box=Box.from_settings(settings),
            max_check_ins=settings.max_batch_check_ins,
        )
    except Rejected as exc:
        return MetricPayload.refused(exc)
    finally:
        await outbound.close()
    info.context.authenticate_as(info.context.principal)  # fresh loaders see the run
    return await MetricPayload.of(info, row)
