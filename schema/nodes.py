"""The node types, listed once: each GraphQL type name with its Strawberry type, its
table, and the loader that finds one row of it for the caller (None when absent or not
visible to them). Id decoding (schema/ids.py), `node(id:)` and `nodes(ids:)`, an event's
`subject`, progress changes and the schema's type list all read this registry.

The Strawberry types are named by module, read on first use (as `strawberry.lazy`
does), so every module of schema/ may read the registry without an import circle."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from service import models

if TYPE_CHECKING:  # a node type's table, for the annotation only
    from sqlmodel import SQLModel

Load = Callable[[Any, int], Awaitable[Any]]  # (the request's loaders, primary key) -> row


@dataclass(frozen=True)
class NodeType:
    name: str
    module: str  # where the Strawberry type of that name is defined
    model: type[SQLModel]
    load: Load

    @cached_property
    def type(self) -> Any:
        return getattr(importlib.import_module(self.module), self.name)


def _batched(loader: str) -> Load:
    """A DataLoader on the request's loaders: rows of the caller's organization."""
    return lambda loaders, pk: getattr(loaders, loader).load(pk)


def _visible(loader: str) -> Load:
    """A loader method that applies the visibility rule (service/reads/visibility.py)."""
    return lambda loaders, pk: getattr(loaders, loader)(pk)


def _admin_only(loader: str) -> Load:
    """A loader of schema/types/webhook.py that answers admins only."""
    return lambda loaders, pk: getattr(importlib.import_module("schema.types.webhook"), loader)(
        loaders, pk
    )


NODES: dict[str, NodeType] = {
    node.name: node
    for node in (
        NodeType(
            "Organization",
            "schema.types.organization",
            models.Organization,
            _batched("organization"),
        ),
        NodeType("User", "schema.types.organization", models.User, _batched("user")),
        NodeType("Team", "schema.types.team", models.Team, _batched("team")),
        NodeType("Cycle", "schema.types.cycle", models.Cycle, _batched("cycle")),
        NodeType("Objective", "schema.types.objective", models.Objective, _visible("objective")),
        NodeType("KeyResult", "schema.types.key_result", models.KeyResult, _visible("key_result")),
        NodeType("CheckIn", "schema.types.check_in", models.CheckIn, _visible("check_in")),
        NodeType("Comment", "schema.types.comment", models.Comment, _visible("comment")),
        NodeType("Event", "schema.types.event", models.Event, _visible("event")),
        NodeType("Metric", "schema.metrics", models.Metric, _batched("metric")),
        NodeType(
            "WebhookEndpoint",
            "schema.types.webhook",
            models.WebhookEndpoint,
            _admin_only("load_endpoint"),
        ),
        NodeType(
            "WebhookDelivery",
            "schema.types.webhook",
            models.WebhookDelivery,
            _admin_only("load_delivery"),
        ),
    )
}


async def resolve(info: Any, type_name: str, pk: int) -> Any:
    """Any node by type name and key, or None when it is absent or hidden."""
    node = NODES.get(type_name)
    if node is None:
        return None
    row = await node.load(info.context.loaders, pk)
    return node.type.of(row) if row is not None else None


def object_types() -> list[Any]:
    """Every node type, for the schema's type list."""
    return [node.type for node in NODES.values()]
