"""The GraphQL Cycle type. Each wraps a table row; relations read through loaders."""

from __future__ import annotations

from datetime import date
from typing import Any

import strawberry
from strawberry import ID

from schema import ids
from schema.context import Info
from schema.enums import (
    CycleStatus,
)
from schema.types.common import Node
from service.domain import enums, rules

# --- cycles -------------------------------------------------------------------------------


@strawberry.type
class Cycle(Node):
    row: strawberry.Private[Any]
    id: ID
    name: str
    starts_on: date
    ends_on: date
    status: CycleStatus

    @classmethod
    def of(cls, row: Any) -> Cycle:
        return cls(
            row=row,
            id=ID(ids.encode("Cycle", row.id)),
            name=row.name,
            starts_on=row.starts_on,
            ends_on=row.ends_on,
            status=enums.CycleStatus(row.status),
        )

    @strawberry.field(description="For updateCycle's expectedVersion.")
    def version(self) -> int:
        return int(self.row.version)

    @strawberry.field(description="Share of the cycle elapsed, now.")
    def expected_progress(self, info: Info) -> float:
        return rules.expected_progress(self.row.starts_on, self.row.ends_on, info.context.now)

    @strawberry.field(description="Ended (past the end of endsOn, UTC) and still ACTIVE.")
    def review_due(self, info: Info) -> bool:
        status = enums.CycleStatus(self.row.status)
        return rules.review_due(status, self.row.starts_on, self.row.ends_on, info.context.now)
