"""The schema: the roots, the limits checked before any resolver runs, and error masking."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import nullcontext
from functools import partial
from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    SchemaExtension,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from schema import federation, nodes
from schema.budget import budget_executor
from schema.caching import BoundedParserCache, ResultCache, result_cache
from schema.documents import DepthLimiter, OneOperationChosen
from schema.inputs import StorableText
from schema.limits import cost_limit
from schema.mutations import Mutation
from schema.plan import planned_executor
from schema.queries import Query
from schema.sharing import CountingSchema
from schema.subscriptions import Subscription
from service.domain.errors import Unauthenticated
from service.outage import MESSAGE as OUTAGE_MESSAGE
from service.outage import SERVICE_UNAVAILABLE, is_unavailable, note_outage
from service.settings import Settings

log = logging.getLogger("okr.graphql")
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")

# Codes of errors graphql-core and Strawberry make without one (Apollo's spelling where
# it has one). Those found before execution are answered 400 under GraphQL over HTTP's
# media type (schema/http.py).
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
TOO_MANY_TOKENS = "TOO_MANY_TOKENS"
BAD_REQUEST = "BAD_REQUEST"
_TOO_DEEP = re.compile(r"exceeds maximum operation depth of \d+$")
_ALIASES = re.compile(r"^\d+ aliases found\. Allowed: \d+$")


def code_for(error: GraphQLError) -> str:
    """The code of an error graphql-core or Strawberry's limiters made without one."""
    message = error.message
    if isinstance(error, GraphQLSyntaxError):
        if message.startswith("Syntax Error: Document contains more than"):
            return TOO_MANY_TOKENS
        return GRAPHQL_PARSE_FAILED
    if _TOO_DEEP.search(message):
        return QUERY_TOO_DEEP
    if _ALIASES.match(message):
        return TOO_MANY_ALIASES
    if message.startswith("Variable '$"):
        return "BAD_USER_INPUT"  # a variable's value does not fit its type
    if error.path is None:
        return GRAPHQL_VALIDATION_FAILED  # reported before execution
    if isinstance(error.original_error, GraphQLError):
        return "BAD_USER_INPUT"  # raised on purpose while executing: an argument's value
    return "INTERNAL_SERVER_ERROR"


def is_client_error(error: GraphQLError) -> bool:
    """The caller's mistake (or refusal), not the service's fault."""
    original = error.original_error
    return original is None or isinstance(
        original, (GraphQLError, Unauthenticated, *_REQUEST_ERRORS)
    )


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
        if original is None or isinstance(original, GraphQLError):
            if not (error.extensions or {}).get("code"):
                error.extensions = {**(error.extensions or {}), "code": code_for(error)}
            return error
        if isinstance(original, _REQUEST_ERRORS):
            error.extensions = {**(error.extensions or {}), "code": BAD_REQUEST}
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


class Schema(CountingSchema):
    """Strawberry logs every error at ERROR with a traceback. Here a client's mistake
    (syntax, validation, limits, bad input, no credentials) is logged once at INFO,
    without one; a server's error is logged (with its stack) where it is masked, and an
    outage by service/outage.py, so neither is logged twice."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        """A syntax error raised while parsing (our parser cache parses in an
        extension hook) skips the extensions' masking: it gets its code here."""
        result = await super().execute(*args, **kwargs)
        for error in getattr(result, "errors", None) or ():
            if not (error.extensions or {}).get("code"):
                error.extensions = {**(error.extensions or {}), "code": code_for(error)}
        return result

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        context = getattr(execution_context, "context", None)
        request_id = getattr(context, "request_id", None)
        for error in errors:
            if is_client_error(error):
                log.info("client error (request %s): %s", request_id, error.message)


class FederatedSchema(Schema, federation.Subgraph):
    """The same schema as an Apollo Federation subgraph (OKR_FEDERATION=1): `_service`
    and `_entities` beside the client's fields (schema/federation.py)."""


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    """The schema the service serves. Federation's fields and types (`_service`,
    `_entities`, `_Any`, ...) are in it only when OKR_FEDERATION is on: code generators
    pointed at the server read no scalar they do not know."""
    settings = settings or Settings()
    development = settings.env == "development"
    extensions: list = [
        MaskUnexpectedErrors if development else MaskUnexpectedErrorsAndSuggestions,
        BoundedParserCache,
        partial(MaxTokensLimiter, max_token_count=settings.max_query_tokens),
        OneOperationChosen,
        partial(DepthLimiter, max_depth=settings.max_query_depth),
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
    federation.add_keys()
    federated: dict[str, Any] = {"federation_version": federation.FEDERATION_VERSION}
    with nullcontext() if settings.federation else federation.without_directives():
        schema = (FederatedSchema if settings.federation else Schema)(
            query=Query,
            mutation=Mutation,
            subscription=Subscription,
            types=nodes.object_types(),
            extensions=extensions,
            config=StrawberryConfig(auto_camel_case=True, disable_field_suggestions=True),
            **(federated if settings.federation else {}),
            # Counts objects, time and bytes while the response is built.
            # Queries the plan covers are answered by it (schema/plan/render.py).
            execution_context_class=planned_executor(
                budget_executor(
                    settings.max_response_objects,
                    settings.execution_deadline_seconds,
                    settings.max_response_bytes,
                )
            ),
        )
    schema.max_per_connection = settings.max_subscriptions_per_connection
    schema.max_tokens = settings.max_query_tokens
    return schema


def sdl(settings: Settings | None = None) -> str:
    """The client SDL (schema/schema.graphql): what codegen reads, without federation."""
    return federation.client_sdl(build_schema(federated(settings)))


def subgraph_sdl(settings: Settings | None = None) -> str:
    """The subgraph SDL (schema/subgraph.graphql): what `_service { sdl }` answers."""
    return federation.subgraph_sdl(build_schema(federated(settings)))


def federated(settings: Settings | None = None) -> Settings:
    """`settings` with federation on: the SDL files are printed from the subgraph (the
    client SDL leaves out what federation adds, so it is the same either way)."""
    settings = settings or Settings()
    return settings.model_copy(update={"federation": True})
