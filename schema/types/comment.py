"""The GraphQL Comment type. Each wraps a table row; relations read through loaders."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import ID

from schema import ids
from schema.context import Info
from schema.types.common import Node, user_of

if TYPE_CHECKING:  # resolved lazily at run time (strawberry.lazy): no import circle
    from schema.types.organization import User


@strawberry.type
class Comment(Node):
    row: strawberry.Private[Any]
    id: ID
    body: str
    created_at: datetime

    @classmethod
    def of(cls, row: Any) -> Comment:
        return cls(
            row=row, id=ID(ids.encode("Comment", row.id)), body=row.body, created_at=row.created_at
        )

    @strawberry.field
    async def author(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("schema.types.organization")] | None:
        return await user_of(info, self.row.author_id)
