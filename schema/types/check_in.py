"""The GraphQL CheckIn type. Each wraps a table row; relations read through loaders."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import ID

from schema import ids, nodes
from schema.context import Info
from schema.types.common import Node, _hidden, check_in_of, user_of

if TYPE_CHECKING:  # resolved lazily at run time (strawberry.lazy): no import circle
    from schema.types.key_result import KeyResult
    from schema.types.organization import User


@strawberry.type
class CheckIn(Node):
    row: strawberry.Private[Any]
    id: ID
    value: float
    confidence: float | None
    note: str | None
    progress: float
    measured_at: datetime = strawberry.field(description="When the value was true.")
    created_at: datetime
    retracted: bool = strawberry.field(
        description="Retracted (or corrected): kept and listed, but no longer the record "
        "(value, roll-ups, realism, forecast, history)."
    )
    retracted_at: datetime | None
    reason: str | None = strawberry.field(description="Why it was retracted or corrected.")

    @classmethod
    def of(cls, row: Any) -> CheckIn:
        return cls(
            row=row,
            id=ID(ids.encode("CheckIn", row.id)),
            value=row.value,
            confidence=row.confidence,
            note=row.note,
            progress=row.progress,
            measured_at=row.measured_at,
            created_at=row.created_at,
            retracted=row.retracted_at is not None,
            retracted_at=row.retracted_at,
            reason=row.retraction_reason,
        )

    @strawberry.field(description="Who retracted it (null when a service key did).")
    async def retracted_by(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("schema.types.organization")] | None:
        return await user_of(info, self.row.retracted_by_id)

    @strawberry.field(description="The check-in this one corrects (same instant).")
    async def correction_of(self, info: Info) -> CheckIn | None:
        return await check_in_of(info, self.row.correction_of_id)

    @strawberry.field(description="The check-in that corrected this one.")
    async def corrected_by(self, info: Info) -> CheckIn | None:
        return await check_in_of(info, self.row.corrected_by_id)

    @strawberry.field
    async def key_result(
        self, info: Info
    ) -> Annotated[KeyResult, strawberry.lazy("schema.types.key_result")]:
        row = await info.context.loaders.key_result(self.row.key_result_id)
        if row is None:
            raise _hidden("keyResult")
        return nodes.NODES["KeyResult"].type.of(row)

    @strawberry.field
    async def author(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("schema.types.organization")] | None:
        return await user_of(info, self.row.author_id)
