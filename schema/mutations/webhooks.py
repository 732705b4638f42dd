"""Mutations on webhook endpoints (service/webhooks.py), ADMIN only. The secret is in
the payload of create and rotate, and nowhere else, ever."""

from __future__ import annotations

from functools import partial
from typing import Any

import strawberry
from strawberry import ID, UNSET

from schema.context import Info
from schema.enums import EventKind
from schema.mutations.common import Payload, gid, keep, keep_as, mutate, required_gid
from schema.types.webhook import WebhookDelivery, WebhookEndpoint
from service import webhooks
from service.domain.errors import invalid
from service.outbound import Outbound
from service.secrets import Box
from service.usecases.commands import KEEP


@strawberry.input
class CreateWebhookEndpointInput:
    url: str = strawberry.field(description="https outside development; public addresses only.")
    description: str | None = None
    kinds: list[EventKind] | None = strawberry.field(
        default=None, description="Empty or missing: every kind."
    )
    team_id: ID | None = strawberry.field(
        default=None, description="The endpoint also sees this team's TEAM objectives."
    )

    def command(self) -> webhooks.CreateEndpoint:
        return webhooks.CreateEndpoint(
            url=self.url,
            description=self.description,
            kinds=tuple(str(k) for k in self.kinds or ()),
            team_id=gid(self.team_id, "Team", "teamId"),
        )


@strawberry.input
class UpdateWebhookEndpointInput:
    endpoint_id: ID
    url: str | None = UNSET
    description: str | None = UNSET
    kinds: list[EventKind] | None = UNSET
    active: bool | None = UNSET

    def command(self) -> webhooks.UpdateEndpoint:
        for name, value in (("url", self.url), ("active", self.active)):
            if value is None:
                raise invalid(f"{name} may not be null", name)
        return webhooks.UpdateEndpoint(
            endpoint_id=required_gid(self.endpoint_id, "WebhookEndpoint", "endpointId"),
            url=KEEP if self.url is UNSET or self.url is None else self.url,
            description=keep(self.description),
            kinds=keep_as(self.kinds, lambda ks: tuple(str(k) for k in ks)) or (),
            active=KEEP if self.active is UNSET or self.active is None else self.active,
        )


@strawberry.input
class RotateWebhookSecretInput:
    endpoint_id: ID

    def command(self) -> int:
        return required_gid(self.endpoint_id, "WebhookEndpoint", "endpointId")


@strawberry.input
class PingWebhookEndpointInput:
    endpoint_id: ID

    def command(self) -> int:
        return required_gid(self.endpoint_id, "WebhookEndpoint", "endpointId")


@strawberry.input
class RedeliverWebhookInput:
    delivery_id: ID

    def command(self) -> int:
        return required_gid(self.delivery_id, "WebhookDelivery", "deliveryId")


@strawberry.type
class WebhookEndpointPayload(Payload):
    endpoint: WebhookEndpoint | None = None
    secret: str | None = strawberry.field(
        default=None, description="Shown on create and rotate only: keep it then."
    )

    @classmethod
    async def of(cls, info: Info, saved: webhooks.Saved) -> WebhookEndpointPayload:
        return cls(endpoint=WebhookEndpoint.of(saved.endpoint), secret=saved.secret)


@strawberry.type
class WebhookDeliveryPayload(Payload):
    delivery: WebhookDelivery | None = None

    @classmethod
    async def of(cls, info: Info, row: Any) -> WebhookDeliveryPayload:
        return cls(delivery=WebhookDelivery.of(row))


def _outbound(info: Info) -> Outbound:
    return Outbound.from_settings(info.context.settings)


def _box(info: Info) -> Box:
    return Box.from_settings(info.context.settings)


async def create_webhook_endpoint(
    info: Info, input: CreateWebhookEndpointInput
) -> WebhookEndpointPayload:
    usecase = partial(webhooks.create_endpoint, outbound=_outbound(info), box=_box(info))
    return await mutate(info, input.command, usecase, WebhookEndpointPayload)


async def update_webhook_endpoint(
    info: Info, input: UpdateWebhookEndpointInput
) -> WebhookEndpointPayload:
    usecase = partial(webhooks.update_endpoint, outbound=_outbound(info))
    return await mutate(info, input.command, usecase, WebhookEndpointPayload)


async def rotate_webhook_secret(
    info: Info, input: RotateWebhookSecretInput
) -> WebhookEndpointPayload:
    usecase = partial(webhooks.rotate_secret, box=_box(info))
    return await mutate(info, input.command, usecase, WebhookEndpointPayload)


async def redeliver_webhook(info: Info, input: RedeliverWebhookInput) -> WebhookDeliveryPayload:
    return await mutate(info, input.command, webhooks.redeliver, WebhookDeliveryPayload)


async def ping_webhook_endpoint(
    info: Info, input: PingWebhookEndpointInput
) -> WebhookDeliveryPayload:
    return await mutate(info, input.command, webhooks.ping, WebhookDeliveryPayload)
