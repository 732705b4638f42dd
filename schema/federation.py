"""Apollo Federation v2: the served schema is a subgraph.

Every node type of the registry (schema/nodes.py) is an entity, `@key(fields: "id")`,
resolved by `_entities` through the same visibility-checked loaders as `node(id:)`: an
entity is never built from the caller's representation, only found by its id (absent,
hidden or of another organization -> null). The Relay types every subgraph may define
alike are `@shareable`.

All of it is served only when OKR_FEDERATION is on (schema/api.py builds a plain schema
otherwise): a code generator pointed at the server would fail on `_Any`, which no client
knows. On, `_service { sdl }` (the subgraph SDL, with the federation directives) is
answered to a gateway even where introspection is off. `schema/schema.graphql`, the SDL
client codegen reads, is printed without anything federation added (`client_sdl`); the
subgraph SDL is exported beside it as `schema/subgraph.graphql`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import strawberry
from graphql import (
    GraphQLError,
    GraphQLNamedType,
    GraphQLObjectType,
    is_introspection_type,
    is_specified_directive,
    is_specified_scalar_type,
)
from graphql.utilities.print_schema import print_directive, print_type
from strawberry.federation.schema import FederationAny
from strawberry.federation.schema_directives import Key
from strawberry.federation.types import FieldSet
from strawberry.printer import print_schema

from schema import ids, nodes

FEDERATION_VERSION: Final = "2.7"
# What federation adds to a schema, none of it for clients: the root fields, their types,
# and the types and directives of the federation and link specifications.
ROOT_FIELDS = frozenset({"_service", "_entities"})
_FEDERATION_PREFIXES = ("_", "link__", "federation__")
FEDERATION_DIRECTIVES = frozenset(
    {
        "link", "key", "shareable", "external", "requires", "provides", "extends",
        "override", "inaccessible", "tag", "composeDirective", "interfaceObject",
        "authenticated", "requiresScopes", "policy", "context", "fromContext",
        "cost", "listSize",
    }
)  # fmt: skip


def bad_representation(index: int, message: str) -> GraphQLError:
    return GraphQLError(
        f"representations[{index}]: {message}", extensions={"code": "BAD_USER_INPUT"}
    )


def add_keys() -> None:
    """`@key(fields: "id")` on every node type of the registry (once per process)."""
    for node in nodes.NODES.values():
        definition = node.type.__strawberry_definition__
        if not any(isinstance(d, Key) for d in definition.directives or ()):
            definition.directives = [*(definition.directives or ()), Key(fields=FieldSet("id"))]


def _federation_directive(directive: Any) -> bool:
    return type(directive).__module__.startswith("strawberry.federation")


@contextmanager
def without_directives() -> Iterator[None]:
    """While a plain schema (federation off) is built: the federation directives (@key on
    the node types, @shareable on PageInfo) taken off the types, which are shared with
    the subgraph, and put back after. Left on, they would bring `_FieldSet` along."""
    from schema.types.common import PageInfo

    types = [node.type for node in nodes.NODES.values()] + [PageInfo]
    saved = {}
    for type_ in types:
        definition = type_.__strawberry_definition__
        saved[type_] = definition.directives
        definition.directives = [
            d for d in definition.directives or () if not _federation_directive(d)
        ]
    try:
        yield
    finally:
        for type_, directives in saved.items():
            type_.__strawberry_definition__.directives = directives


async def entity(info: Any, index: int, representation: Any) -> Any:
    """The node a representation names, looked up for the caller like `node(id:)`: None
    when absent or hidden; a GraphQLError (for that item only) when the representation
    itself is wrong. Nothing but `__typename` and `id` is read from it."""
    if not isinstance(representation, dict):
        return bad_representation(index, "must be an object with __typename and id")
    type_name = representation.get("__typename")
    if not isinstance(type_name, str) or type_name not in nodes.NODES:
        known = ", ".join(sorted(nodes.NODES))
        return bad_representation(index, f"__typename must be one of the entities: {known}")
    gid = representation.get("id")
    if not isinstance(gid, str):
        return bad_representation(index, f"needs the id (a string) of the {type_name}")
    try:
        pk = ids.decode_as(gid, type_name)
    except ids.BadId as exc:
        return bad_representation(index, str(exc))
    return await nodes.resolve(info, type_name, pk)


class Subgraph(strawberry.federation.Schema):
    """Strawberry's federation schema, with `_entities` answered from the node registry
    (Strawberry's own would build a type without `resolve_reference` from the
    representation) and bounded like `nodes(ids:)`."""

    async def entities_resolver(  # type: ignore[override]
        self, info: strawberry.Info, representations: list[FederationAny]
    ) -> list[FederationAny]:
        limit = info.context.settings.max_page_size
        if len(representations) > limit:
            raise GraphQLError(
                f"at most {limit} representations at once, got {len(representations)}",
                extensions={"code": "BAD_USER_INPUT"},
            )
        return list(
            await asyncio.gather(*(entity(info, i, r) for i, r in enumerate(representations)))
        )


def subgraph_sdl(schema: Any) -> str:
    """What `_service { sdl }` answers: the schema with @link, @key and @shareable."""
    return print_schema(schema) + "\n"


def _is_federation_name(name: str) -> bool:
    return name.startswith(_FEDERATION_PREFIXES) and not name.startswith("__")


def client_sdl(schema: Any) -> str:
    """The schema as clients see it: no `_service`/`_entities`, no federation types or
    directives, types in name order (as Strawberry prints them)."""
    core = schema._schema
    printed = [
        print_directive(d)
        for d in core.directives
        if not is_specified_directive(d) and d.name not in FEDERATION_DIRECTIVES
    ]
    for name in sorted(core.type_map):
        type_: GraphQLNamedType = core.type_map[name]
        if (
            _is_federation_name(name)
            or is_introspection_type(type_)
            or is_specified_scalar_type(type_)
        ):
            continue
        if type_ is core.query_type:
            assert isinstance(type_, GraphQLObjectType)
            type_ = GraphQLObjectType(
                type_.name,
                {k: v for k, v in type_.fields.items() if k not in ROOT_FIELDS},
                interfaces=type_.interfaces,
                description=type_.description,
            )
        printed.append(print_type(type_))
    return "\n\n".join(printed) + "\n"
