"""What a document must be before it is validated further: which operation to run is
never a guess, and its depth is bounded as the setting says.

- A document with several operations and no `operationName` is refused (BAD_REQUEST),
  as GraphQL over HTTP says: running the first one would run what a gateway in front,
  or the client itself, may not have meant.
- Depth counts field levels, the root field being 1: with `OKR_MAX_QUERY_DEPTH=12`,
  `{ a { b { ... } } }` may nest 12 fields and not 13. Strawberry's own limiter counts
  the root field as 0 (so it lets one more level through) and skips subscriptions; this
  one covers every operation, fragments and inline fragments included.
"""

from __future__ import annotations

from collections.abc import Iterator

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from strawberry.extensions import AddValidationRules, SchemaExtension

BAD_REQUEST = "BAD_REQUEST"


class OneOperationChosen(SchemaExtension):
    """Refuses a document of several operations that names none to run."""

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        document = ctx.graphql_document
        if (
            ctx.pre_execution_errors is None
            and document is not None
            # The name the request gave (`operation_name` falls back to the first).
            and not getattr(ctx, "_provided_operation_name", None)
        ):
            operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
            if len(operations) > 1:
                ctx.pre_execution_errors = [
                    GraphQLError(
                        "the document holds several operations: operationName must say "
                        "which one to run",
                        extensions={"code": BAD_REQUEST},
                    )
                ]
        yield


def _depth(
    selections: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    visiting: frozenset[str],
) -> int:
    """The deepest chain of fields under `selections` (a leaf field counts 1)."""
    if selections is None:
        return 0
    deepest = 0
    for node in selections.selections:
        if isinstance(node, FieldNode):
            if node.name.value.startswith("__"):
                continue  # introspection: bounded by the schema itself
            deepest = max(deepest, 1 + _depth(node.selection_set, fragments, visiting))
        elif isinstance(node, InlineFragmentNode):
            deepest = max(deepest, _depth(node.selection_set, fragments, visiting))
        elif isinstance(node, FragmentSpreadNode):
            name = node.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in visiting:  # a cycle: validation says
                deepest = max(deepest, _depth(fragment.selection_set, fragments, visiting | {name}))
    return deepest


def depth_rule(max_depth: int) -> type[ValidationRule]:
    class DepthLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            definitions = context.document.definitions
            fragments = {
                d.name.value: d for d in definitions if isinstance(d, FragmentDefinitionNode)
            }
            for operation in definitions:
                if not isinstance(operation, OperationDefinitionNode):
                    continue
                depth = _depth(operation.selection_set, fragments, frozenset())
                if depth > max_depth:
                    name = operation.name.value if operation.name else "anonymous"
                    context.report_error(
                        GraphQLError(
                            f"'{name}' is {depth} fields deep: it exceeds maximum "
                            f"operation depth of {max_depth}",
                            [operation],
                        )
                    )

    return DepthLimit


class DepthLimiter(AddValidationRules):
    def __init__(self, max_depth: int) -> None:
        super().__init__([depth_rule(max_depth)])
