"""Shared subscription streams: subscribers that send the same subscription (same
document and variables, and no `after` once the variables are coerced with their
defaults) with the same access are served by one stream, executed once per event; each
gets the same result through its own bounded queue.

A live progress screen is usually one of many showing the same thing; without this,
every event would be resolved once per screen. A subscriber with `after` replays
from its own cursor and gets a stream of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
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

from schema import ids

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


def share_key(
    schema: GraphQLSchema,
    query: str | None,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    context: Any,
    max_tokens: int | None = None,
    document: DocumentNode | None = None,
) -> tuple | None:
    """The key under which this operation may share a stream, or None. Decided from the
    parsed document (`document`, or `query` parsed here) and the coerced arguments, so an
    `after` from a literal, a variable or a variable's default all make the stream the
    subscriber's own."""
    if document is None:
        found = subscription_operation(query, operation_name, max_tokens)
        if found is None:
            return None
        document = found[0]
    arguments = root_arguments(schema, document, variables, operation_name)
    if arguments is None or arguments.get("after") is not None:
        return None
    principal = getattr(context, "_principal", None)
    if principal is None:
        return None
    who = (
        principal.organization_id,
        principal.role,
        principal.user_id,
        principal.api_key_id,
        tuple(sorted(principal.team_ids)),
    )
    try:
        frozen = json.dumps(variables or {}, sort_keys=True)
    except TypeError:
        return None
    return (query, frozen, operation_name, who)


class _Member:
    def __init__(self, group: _Group, maxsize: int) -> None:
        self.group = group
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.behind = False
        self.last_seq: int | None = None

    def offer(self, item: Any) -> None:
        if self.behind:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.behind = True

    def end(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_END)
        if self.queue.full():
            self.behind = True  # it learns on its next read

    async def results(self) -> AsyncGenerator[Any, None]:
        try:
            while True:
                if self.behind and self.queue.empty():
                    yield _behind(
                        self.last_seq if self.last_seq is not None else self.group.start_seq
                    )
                    return
                item = await self.queue.get()
                if item is _END:
                    return
                result, seq = item
                yield result
                if seq is not None:
                    self.last_seq = seq
        finally:
            self.group.leave(self)


def _behind(seq: int | None) -> ExecutionResult:
    return ExecutionResult(
        data=None,
        errors=[
            GraphQLError(
                "this subscription fell behind and was closed; subscribe again with `after` set "
                "to the cursor in this error's extensions",
                extensions={
                    "code": "SUBSCRIBER_BEHIND",
                    "cursor": ids.cursor(seq) if seq is not None else None,
                },
            )
        ],
    )


class _Group:
    def __init__(
        self, registry: SharedStreams, key: tuple, source: AsyncIterator[Any], context: Any
    ) -> None:
        self.registry = registry
        self.key = key
        self.source = source
        self.context = context
        self.members: set[_Member] = set()
        self.start_seq: int | None = None
        self.task = asyncio.create_task(self._pump(), name="okr-shared-subscription")

    async def _pump(self) -> None:
        try:
            async for result in self.source:
                seq = getattr(self.context, "last_event_seq", None)
                for member in list(self.members):
                    member.offer((result, seq))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a shared subscription stream failed")
        finally:
            self.registry.groups.pop(self.key, None)
            for member in list(self.members):
                member.end()
            with contextlib.suppress(Exception):
                await self.source.aclose()  # type: ignore[attr-defined]

    def join(self, maxsize: int) -> _Member:
        member = _Member(self, maxsize)
        self.members.add(member)
        return member

    def leave(self, member: _Member) -> None:
        self.members.discard(member)
        if not self.members:
            self.registry.groups.pop(self.key, None)
            self.task.cancel()


class SharedStreams:
    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.groups: dict[tuple, _Group] = {}

    def member_stream(self, key: tuple, source_factory, context: Any):
        async def start() -> AsyncGenerator[Any, None]:
            group = self.groups.get(key)
            if group is None:
                group = _Group(self, key, await source_factory(), context)
                self.groups[key] = group
            async for result in group.join(self.queue_size).results():
                yield result

        return start()


class SharingSchema(strawberry.Schema):
    """A schema whose identical subscriptions share one stream (see the module doc), and
    which allows a connection `max_per_connection` subscriptions at once."""

    shared: SharedStreams
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
            return self._counted(context_value, args, subscription[0])
        return await super().stream(*args)

    def _counted(
        self, context: Any, args: tuple, document: DocumentNode
    ) -> AsyncGenerator[Any, None]:
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
                source = await self._shared_or_own(document, *args)
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

    async def _shared_or_own(
        self,
        document,
        query,
        variable_values,
        context_value,
        root_value,
        operation_name,
        operation_extensions,
        allowed_operation_types,
    ):
        key = share_key(
            self._schema,
            query,
            variable_values,
            operation_name,
            context_value,
            self.max_tokens,
            document,
        )
        if key is None:
            return await super().stream(
                query,
                variable_values,
                context_value,
                root_value,
                operation_name,
                operation_extensions,
                allowed_operation_types,
            )
        own = context_value.fork()  # the seq it records is this stream's alone

        async def source():
            return await super(SharingSchema, self).stream(
                query,
                variable_values,
                own,
                root_value,
                operation_name,
                operation_extensions,
                allowed_operation_types,
            )

        return self.shared.member_stream(key, source, own)
