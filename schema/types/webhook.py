"""The GraphQL face of webhooks (service/webhooks.py): WebhookEndpoint, WebhookDelivery
and the `webhookEndpoints` root field. ADMIN only: for anyone else the root field is a
FORBIDDEN error and the nodes are absent. Secrets are never a field: a secret is shown
once, in the payload of create and rotate (schema/mutations/webhooks.py)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry import ID

from schema import ids, nodes
from schema.context import Info
from schema.enums import DeliveryStatus, EventKind
from schema.types.common import Connection, Node, connection, page_window
from service.reads import lists

if TYPE_CHECKING:  # resolved lazily at run time (strawberry.lazy): no import circle
    from schema.types.event import Event
    from schema.types.team import Team


def _bad(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"})


def require_admin(info: Info) -> None:
    if not info.context.principal.is_admin:
        raise GraphQLError("webhooks are for admins only", extensions={"code": "FORBIDDEN"})


async def load_endpoint(loaders: Any, pk: int) -> Any:
    """The node loader (schema/nodes.py): admins only."""
    if not loaders.p.is_admin:
        return None
    return await loaders.webhook_endpoint.load(pk)


async def load_delivery(loaders: Any, pk: int) -> Any:
    if not loaders.p.is_admin:
        return None
    return await loaders.webhook_delivery.load(pk)


@strawberry.type(description="Where the organization's events are posted, signed. ADMIN only.")
class WebhookEndpoint(Node):
    row: strawberry.Private[Any]
    id: ID
    url: str
    description: str | None
    kinds: list[EventKind] = strawberry.field(description="Empty: every kind.")
    active: bool
    disabled_reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: Any) -> WebhookEndpoint:
        return cls(
            row=row,
            id=ID(ids.encode("WebhookEndpoint", row.id)),
            url=row.url,
            description=row.description,
            kinds=[EventKind(k) for k in row.kinds],
            active=row.active,
            disabled_reason=row.disabled_reason,
            created_at=row.created_at,
        )

    @strawberry.field(
        description="With a team, the endpoint also sees that team's TEAM objectives."
    )
    async def team(
        self, info: Info
    ) -> Annotated[Team, strawberry.lazy("schema.types.team")] | None:
        if self.row.team_id is None:
            return None
        row = await info.context.loaders.team.load(self.row.team_id)
        return nodes.NODES["Team"].type.of(row) if row is not None else None

    @strawberry.field(description="Newest last; `last`/`before` page from the newest.")
    async def deliveries(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        status: list[DeliveryStatus] | None = None,
    ) -> Connection[WebhookDelivery]:
        return await _deliveries(info, self.row.id, first, after, last, before, status)


@strawberry.type(description="One event (or ping) for one endpoint, and its last attempt.")
class WebhookDelivery(Node):
    row: strawberry.Private[Any]
    id: ID
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    response_status: int | None = strawberry.field(description="Of the last attempt.")
    response_body: str | None = strawberry.field(description="Of the last attempt, cut at 1 KB.")
    duration_ms: float | None = strawberry.field(description="Of the last attempt.")

    @classmethod
    def of(cls, row: Any) -> WebhookDelivery:
        return cls(
            row=row,
            id=ID(ids.encode("WebhookDelivery", row.id)),
            status=DeliveryStatus(row.status),
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_attempt_at=row.last_attempt_at,
            response_status=row.response_status,
            response_body=row.response_body,
            duration_ms=row.duration_ms,
        )

    @strawberry.field
    async def endpoint(self, info: Info) -> WebhookEndpoint:
        row = await info.context.loaders.webhook_endpoint.load(self.row.endpoint_id)
        return WebhookEndpoint.of(row)

    @strawberry.field(description="Null for a ping.")
    async def event(
        self, info: Info
    ) -> Annotated[Event, strawberry.lazy("schema.types.event")] | None:
        if self.row.event_id is None:
            return None
        found: Event | None = await nodes.resolve(info, "Event", self.row.event_id)
        return found


async def _deliveries(
    info: Info,
    endpoint_id: int,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    status: list[DeliveryStatus] | None,
) -> Connection[WebhookDelivery]:
    window = page_window(info, first, after, last, before)
    statuses = [str(s.value) for s in status] if status else None
    listing = lists.deliveries(info.context.db, info.context.principal, endpoint_id, statuses)
    return connection(await listing.page(window), window, WebhookDelivery.of, listing.count)


async def webhook_endpoints(
    info: Info,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
) -> Connection[WebhookEndpoint]:
    require_admin(info)
    window = page_window(info, first, after, last, before)
    listing = lists.webhook_endpoints(info.context.db, info.context.principal)
    return connection(await listing.page(window), window, WebhookEndpoint.of, listing.count)
