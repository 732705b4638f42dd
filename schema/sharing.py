"""Subscriptions before they run: which operation of a document is a subscription, its
root field's arguments as execution will see them (schema/broadcast.py decides from
them whether a subscription can be shared), and the schema that bounds how many
subscriptions one connection runs at once.

Sharing work between subscribers lives in one place, schema/broadcast.py.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
    parse,
)
from graphql.execution import Executor
from graphql.execution.collect_fields import collect_fields
from graphql.execution.values import get_argument_values
from strawberry.types.execution import ExecutionResult, PreExecutionError

log = logging.getLogger(__name__)

_END = object()


def _parsed(query: str, max_tokens: int | None) -> DocumentNode | None:
    """The document, or None when it does not parse (execution then reports why). Not
    cached: a cache keyed by query text would hold whatever large texts clients send."""
    try:
        return parse(query, max_tokens=max_tokens)
    except (GraphQLError, RecursionError):
        return None


def subscription_operation(
    query: str | None, operation_name: str | None, max_tokens: int | None = None
) -> tuple[DocumentNode, OperationDefinitionNode] | None:
    """The parsed document and its operation, when the operation to run is a
    subscription; None for queries, mutations and anything that does not parse."""
    if not query:
        return None
    document = _parsed(query, max_tokens)
    if document is None:
        return None
    try:
        operation = get_operation_ast(document, operation_name)
    except GraphQLError:
        return None
    if operation is None or operation.operation != OperationType.SUBSCRIPTION:
        return None
    return document, operation


def root_arguments(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: dict[str, Any] | None,
    operation_name: str | None,
) -> dict[str, Any] | None:
    """The subscription field's arguments as execution will see them: variables coerced
    with their defaults, fragments and @skip/@include applied. None when execution would
    refuse the operation (it then reports the error on a stream of its own)."""
    root = schema.subscription_type
    if root is None:
        return None
    try:
        executor = Executor.build(
            schema, document, raw_variable_values=variables or {}, operation_name=operation_name
        )
        if isinstance(executor, list):  # variables that do not coerce
            return None
        grouped = collect_fields(
            schema, executor.fragments, executor.variable_values, root, executor.operation
        ).grouped_field_set
        if len(grouped) != 1:
            return None
        (details,) = grouped.values()
        field = root.fields.get(details[0].node.name.value)
        if field is None:
            return None
        return get_argument_values(
            field,
            details[0].node,
            executor.variable_values,
            details[0].fragment_variable_values,
        )
    except GraphQLError:
        return None


class CountingSchema(strawberry.Schema):
    """A schema which allows a connection `max_per_connection` subscriptions at once
    (the broadcasts of schema/broadcast.py count theirs in schema/ws.py)."""

    max_per_connection: int = 20
    max_tokens: int | None = None  # the token limit, for the document parsed here

    async def stream(
        self,
        query,
        variable_values=None,
        context_value=None,
        root_value=None,
        operation_name=None,
        operation_extensions=None,
        allowed_operation_types=None,
    ):
        args = (
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            operation_extensions,
            allowed_operation_types,
        )
        subscription = subscription_operation(query, operation_name, self.max_tokens)
        if subscription is not None and context_value is not None:
            return self._counted(context_value, args)
        return await super().stream(*args)

    def _counted(self, context: Any, args: tuple) -> AsyncGenerator[Any, None]:
        async def counted() -> AsyncGenerator[Any, None]:
            active = getattr(context, "active_subscriptions", 0)
            if active >= self.max_per_connection:
                yield PreExecutionError(
                    data=None,
                    errors=[
                        GraphQLError(
                            f"at most {self.max_per_connection} subscriptions at once "
                            "per connection",
                            extensions={"code": "TOO_MANY_SUBSCRIPTIONS"},
                        )
                    ],
                )
                return
            context.active_subscriptions = active + 1
            source = None
            try:
                source = await super(CountingSchema, self).stream(*args)
                if isinstance(source, ExecutionResult):  # refused before it started
                    yield source
                    return
                async for item in source:
                    yield item
            finally:
                context.active_subscriptions -= 1
                if source is not None and hasattr(source, "aclose"):
                    with contextlib.suppress(Exception):
                        await source.aclose()

        return counted()
