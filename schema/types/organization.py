"""The GraphQL Organization, User, Viewer types. Each wraps a table row; relations read
through loaders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import ID

from schema import ids, nodes
from schema.context import Info
from schema.enums import (
    Role,
)
from schema.types.common import Node

if TYPE_CHECKING:  # resolved lazily at run time (strawberry.lazy): no import circle
    from schema.types.team import Team


# --- the organization and its people --------------------------------------------------------


@strawberry.type
class Organization(Node):
    row: strawberry.Private[Any]
    id: ID
    name: str
    slug: str
    check_in_cadence_days: int
    on_track_gap: float
    at_risk_gap: float

    @classmethod
    def of(cls, row: Any) -> Organization:
        return cls(
            row=row,
            id=ID(ids.encode("Organization", row.id)),
            name=row.name,
            slug=row.slug,
            check_in_cadence_days=row.check_in_cadence_days,
            on_track_gap=row.on_track_gap,
            at_risk_gap=row.at_risk_gap,
        )


@strawberry.type
class User(Node):
    row: strawberry.Private[Any]
    id: ID
    name: str
    email: str
    role: Role
    active: bool = strawberry.field(description="A deactivated user's tokens do not work.")

    @classmethod
    def of(cls, row: Any) -> User:
        return cls(
            row=row,
            id=ID(ids.encode("User", row.id)),
            name=row.name,
            email=row.email,
            role=Role(row.role),
            active=row.active,
        )

    @strawberry.field(
        description="Erased on request (anonymizeUser): name and email are a placeholder, for good."
    )
    def anonymized(self) -> bool:
        return self.row.anonymized_at is not None

    @strawberry.field
    async def teams(
        self, info: Info
    ) -> list[Annotated[Team, strawberry.lazy("schema.types.team")]]:
        # Teams are few per user; read through the members loader's inverse.
        loaders = info.context.loaders
        rows = await loaders.teams_of_user.load(self.row.id)
        return [nodes.NODES["Team"].type.of(r) for r in rows]


@strawberry.type
class Viewer:
    user: User | None
    organization: Organization
    role: Role
