"""Text that nothing downstream can hold is refused before anything runs.

NUL characters: PostgreSQL's `text` refuses them. Unpaired UTF-16 surrogates
("\\ud800", which JSON's escapes can carry): no UTF-8 encodes them, so neither the
database nor the JSON encoder of the response can. Both are checked in every variable
(keys and values, however deep) and in every string literal of the document, as part
of validation: the caller gets one BAD_USER_INPUT error and nothing executes, whatever
field the text was meant for (`search`, a title, a note, an id).

Instants given to the history (`asOf`, `from`, `to`) lie between 1900 and 2999
(`instant`): near year 1 or 9999 the arithmetic on them would overflow.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from graphql import (
    FloatValueNode,
    GraphQLError,
    IntValueNode,
    Node,
    StringValueNode,
    ValidationRule,
    Visitor,
    visit,
)
from strawberry.extensions import SchemaExtension

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")
MESSAGE = "must not contain NUL characters or unpaired surrogates"
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def bad_input(message: str, **kwargs: Any) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "BAD_USER_INPUT"}, **kwargs)


def instant(value: datetime, name: str) -> datetime:
    """An instant argument in UTC (naive ones are read as UTC), between 1900 and 2999:
    near year 1 or 9999 the arithmetic on it would overflow."""
    refused = bad_input(f"{name} must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    try:
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError:
        raise refused from None
    if not EARLIEST <= value <= LATEST:
        raise refused
    return value


def unstorable(text: str) -> bool:
    return _UNSTORABLE.search(text) is not None


def find_unstorable(variables: dict[str, Any]) -> str | None:
    """Where the first unstorable text in the variables is ("variable $input.title"),
    or None."""
    stack: list[tuple[str, Any]] = [(f"${name}", value) for name, value in variables.items()]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if unstorable(value):
                return f"variable {path}"
        elif isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str) or unstorable(key):
                    return f"a key in variable {path}"  # the key itself cannot be echoed
                stack.append((f"{path}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


# No Int or Float the schema takes needs more digits than this; a longer literal would
# reach Python's int() limits (4,300 digits) or overflow a float.
MAX_NUMBER_CHARS = 40


def find_huge_number(variables: dict[str, Any]) -> str | None:
    """Where the first integer too large for any number the schema takes is, or None."""
    stack: list[tuple[str, Any]] = [(f"${name}", value) for name, value in variables.items()]
    while stack:
        path, value = stack.pop()
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) >= 10**MAX_NUMBER_CHARS:
                return f"variable {path}"
        elif isinstance(value, dict):
            stack.extend((f"{path}.{key}", item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


class StringLiterals(ValidationRule):
    def enter_string_value(self, node: StringValueNode, *_args: Any) -> None:
        if unstorable(node.value):
            self.report_error(bad_input(f"a string in the document {MESSAGE}", nodes=[node]))


class _HugeNumbers(Visitor):
    """Number literals longer than any the schema takes; found before validation, whose
    own rules would turn them into Python numbers first."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[Node] = []

    def enter_int_value(self, node: IntValueNode, *_args: Any) -> None:
        if len(node.value) > MAX_NUMBER_CHARS:
            self.found.append(node)

    def enter_float_value(self, node: FloatValueNode, *_args: Any) -> None:
        if len(node.value) > MAX_NUMBER_CHARS * 10:
            self.found.append(node)


# A parsed document is cached and handed out again for the same text (schema/caching.py):
# its literals are looked at once. Keyed by identity (a document's own hash walks the whole
# tree), holding the document so that its id is not reused; bounded like the parser cache.
_HUGE: dict[int, tuple[Any, list[Node]]] = {}


def huge_number_literals(document: Any) -> list[Node]:
    known = _HUGE.get(id(document))
    if known is not None and known[0] is document:
        return known[1]
    finder = _HugeNumbers()
    visit(document, finder)
    if len(_HUGE) >= 1000:
        _HUGE.clear()
    _HUGE[id(document)] = (document, finder.found)
    return finder.found


class StorableText(SchemaExtension):
    """The checks above, in the validation step (the limits extension validates the
    document with the rule this adds)."""

    def on_operation(self) -> Iterator[None]:
        ctx = self.execution_context
        ctx.validation_rules = (*ctx.validation_rules, StringLiterals)
        name = ctx.operation_name
        if isinstance(name, str) and not _NAME.fullmatch(name):
            # No operation can bear it (names are ASCII letters, digits and _); say so
            # in a form any encoder can carry instead of echoing it.
            ctx._provided_operation_name = name.encode("ascii", "backslashreplace").decode()
        yield

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        if ctx.pre_execution_errors is None and ctx.graphql_document is not None:
            huge = huge_number_literals(ctx.graphql_document)
            if huge:
                ctx.pre_execution_errors = [
                    bad_input("a number in the document is too large", nodes=huge[:1])
                ]
        if ctx.pre_execution_errors is None and isinstance(ctx.variables, dict):
            unstorable = find_unstorable(ctx.variables)
            if unstorable is not None:
                ctx.pre_execution_errors = [bad_input(f"{unstorable}: text {MESSAGE}")]
            elif (too_large := find_huge_number(ctx.variables)) is not None:
                ctx.pre_execution_errors = [bad_input(f"{too_large}: the number is too large")]
        yield
