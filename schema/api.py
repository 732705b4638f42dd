"""The schema: the roots, the limits checked before any resolver runs, and error masking."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from functools import partial
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from schema.budget import budget_executor
from schema.caching import BoundedParserCache, ResultCache, result_cache
from schema.fastpath import planned_executor
from schema.inputs import StorableText
from schema.limits import cost_limit
from schema.mutations import Mutation
from schema.queries import Query
from schema.sharing import SharedStreams, SharingSchema
from schema.subscriptions import Subscription
from schema.types import ALL_TYPES
from service.errors import Unauthenticated
from service.outage import MESSAGE as OUTAGE_MESSAGE
from service.outage import SERVICE_UNAVAILABLE, is_unavailable, note_outage
from service.settings import Settings

log = logging.getLogger("okr.graphql")
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")

# What Strawberry raises about the request itself (no query, no such operation, a query
# sent where only subscriptions run): the caller's to fix, so shown as it is.
_REQUEST_ERRORS = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)


class MaskUnexpectedErrors(SchemaExtension):
    """What the caller can act on passes through; anything else becomes "Internal server
    error" with a request id, and its stack goes to the log only."""

    hide_suggestions = False

    def on_operation(self) -> Iterator[None]:
        yield
        self._mask(self.execution_context.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        """Each result a subscription streams is masked before it is sent, like a query's."""
        self._mask(result)
        yield

    def _mask(self, result: Any) -> None:
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [self._shape(e) for e in errors]
            if self.hide_suggestions:
                for error in result.errors:
                    error.message = _SUGGESTION.sub("", error.message)

    def _shape(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        if original is None or isinstance(original, (GraphQLError, *_REQUEST_ERRORS)):
            return error
        if isinstance(original, Unauthenticated):
            return GraphQLError(
                str(original),
                nodes=error.nodes,
                path=error.path,
                extensions={"code": "UNAUTHENTICATED"},
            )
        context = self.execution_context.context
        request_id = getattr(context, "request_id", None)
        if is_unavailable(original):
            note_outage(original, f"request {request_id}")
            return GraphQLError(
                OUTAGE_MESSAGE,
                nodes=error.nodes,
                path=error.path,
                extensions={"code": SERVICE_UNAVAILABLE, "requestId": request_id},
            )
        log.error(
            "unexpected error (request %s) at %s",
            request_id,
            error.path,
            exc_info=(type(original), original, original.__traceback__),
        )
        return GraphQLError(
            "Internal server error",
            nodes=error.nodes,
            path=error.path,
            extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id},
        )


class MaskUnexpectedErrorsAndSuggestions(MaskUnexpectedErrors):
    """Outside development, also no "Did you mean" for arguments, input fields and enum
    values (validation and variable coercion are told to hide them; this catches any
    message that still carries one)."""

    hide_suggestions = True


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings()
    development = settings.env == "development"
    extensions: list = [
        MaskUnexpectedErrors if development else MaskUnexpectedErrorsAndSuggestions,
        BoundedParserCache,
        partial(MaxTokensLimiter, max_token_count=settings.max_query_tokens),
        partial(QueryDepthLimiter, max_depth=settings.max_query_depth),
        partial(MaxAliasesLimiter, max_alias_count=settings.max_aliases),
    ]
    if not settings.introspection_enabled:
        extensions.append(DisableIntrospection)
    extensions.append(StorableText)
    # It validates the document with every rule the others added.
    extensions.append(
        cost_limit(
            settings.max_query_cost,
            settings.max_page_size,
            settings.default_page_size,
            hide_suggestions=not development,
        )
    )
    extensions.append(
        result_cache(
            ResultCache(
                settings.response_cache_seconds,
                settings.response_cache_size,
                settings.response_cache_bytes,
            )
        )
    )
    schema = SharingSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=ALL_TYPES,
        extensions=extensions,
        config=StrawberryConfig(auto_camel_case=True, disable_field_suggestions=True),
        # Counts objects, time and bytes while the response is built.
        # Queries the plan covers are answered by it (schema/fastpath.py).
        execution_context_class=planned_executor(
            budget_executor(
                settings.max_response_objects,
                settings.execution_deadline_seconds,
                settings.max_response_bytes,
            )
        ),
    )
    schema.shared = SharedStreams(settings.subscriber_queue_size)
    schema.max_per_connection = settings.max_subscriptions_per_connection
    schema.max_tokens = settings.max_query_tokens
    return schema


def sdl(settings: Settings | None = None) -> str:
    return build_schema(settings).as_str() + "\n"
