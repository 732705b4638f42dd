"""The GraphQL MetricSource type (service/sources.py): where a metric pulls its value
from. Headers are stored encrypted and never shown."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from schema.context import Info
from schema.enums import MetricSourceKind
from service import sources


@strawberry.type(description="Where a metric pulls its value from, at each interval.")
class MetricSource:
    kind: MetricSourceKind
    url: str
    query: str = strawberry.field(description="PromQL, or a JSON pointer (RFC 6901).")
    interval_seconds: int
    last_run_at: datetime | None
    last_value: float | None
    last_error: str | None
    next_run_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> MetricSource:
        return cls(
            kind=MetricSourceKind(row.kind),
            url=row.url,
            query=row.query,
            interval_seconds=row.interval_seconds,
            last_run_at=row.last_run_at,
            last_value=row.last_value,
            last_error=row.last_error,
            next_run_at=row.next_run_at,
        )


async def source_of(info: Info, metric_id: int) -> MetricSource | None:
    p = info.context.principal
    row = await sources.source_of(info.context.db, p.organization_id, metric_id)
    return MetricSource.of(row) if row is not None else None
