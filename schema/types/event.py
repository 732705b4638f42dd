"""The GraphQL Event type. Each wraps a table row; relations read through loaders."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import ID
from strawberry.scalars import JSON

from schema import ids, nodes
from schema.context import Info
from schema.enums import (
    EventKind,
)
from schema.types.common import Node, ProgressChange, check_in_of, progress_changes, user_of

if TYPE_CHECKING:  # resolved lazily at run time (strawberry.lazy): no import circle
    from schema.types.check_in import CheckIn
    from schema.types.organization import User


@strawberry.type(description="One committed change, from the outbox.")
class Event(Node):
    row: strawberry.Private[Any]
    id: ID
    cursor: str
    sequence: int
    kind: EventKind
    occurred_at: datetime

    @classmethod
    def of(cls, row: Any) -> Event:
        return cls(
            row=row,
            id=ID(ids.encode("Event", row.id)),
            cursor=ids.cursor(row.seq),
            sequence=row.seq,
            kind=row.kind,
            occurred_at=row.occurred_at,
        )

    @strawberry.field
    async def actor(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("schema.types.organization")] | None:
        return await user_of(info, self.row.actor_user_id)

    @strawberry.field(description="For edits: the changed fields as they were.")
    def before(self) -> JSON | None:
        return self.row.payload.get("before")

    @strawberry.field(description="For edits: the changed fields as they became.")
    def after(self) -> JSON | None:
        return self.row.payload.get("after")

    @strawberry.field(description="What the event is about (null when hidden or deleted).")
    async def subject(self, info: Info) -> Node | None:
        return await nodes.resolve(info, self.row.subject_type, self.row.subject_id)

    @strawberry.field
    async def check_in(
        self, info: Info
    ) -> Annotated[CheckIn, strawberry.lazy("schema.types.check_in")] | None:
        return await check_in_of(info, self.row.check_in_id)

    @strawberry.field(description="For progress: the key result and every objective up the chain.")
    async def changes(self, info: Info) -> list[ProgressChange]:
        return await progress_changes(info, self.row.payload.get("changes", []))
