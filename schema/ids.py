"""Opaque global ids ("Objective:42", base64url) and keyset cursors."""

from __future__ import annotations

import base64
import binascii
from typing import overload

from graphql import GraphQLError

from schema.nodes import NODES

MAX_PK = 2**63 - 1  # bigint


class BadId(ValueError):
    pass


def _number(raw: str) -> int | None:
    """ASCII digits only (`str.isdigit` also accepts "²" and other digits `int` refuses),
    within bigint."""
    if not raw or len(raw) > 19 or not raw.isascii() or not raw.isdigit():
        return None
    value = int(raw)
    return value if value <= MAX_PK else None


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise BadId("not a valid id")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadId("not a valid id") from None


def encode(type_name: str, pk: int) -> str:
    return _b64(f"{type_name}:{pk}")


def decode(gid: str) -> tuple[str, int]:
    type_name, _, raw = _unb64(gid).partition(":")
    pk = _number(raw)
    if type_name not in NODES or pk is None:
        raise BadId("not a valid id")
    return type_name, pk


def decode_as(gid: str, type_name: str) -> int:
    kind, pk = decode(gid)
    if kind != type_name:
        raise BadId(f"expected the id of a {type_name}, got one of a {kind}")
    return pk


def cursor(position: int) -> str:
    return _b64(f"c:{position}")


def uncursor(value: str) -> int:
    try:
        prefix, _, raw = _unb64(value).partition(":")
    except BadId:
        raise BadId("not a valid cursor") from None
    position = _number(raw)
    if prefix != "c" or position is None:
        raise BadId("not a valid cursor")
    return position


def pair_cursor(first: int, second: int) -> str:
    """A keyset cursor over two integers (an instant in microseconds, then an id)."""
    return _b64(f"p:{first}:{second}")


def unpair_cursor(value: str) -> tuple[int, int]:
    try:
        prefix, _, rest = _unb64(value).partition(":")
    except BadId:
        raise BadId("not a valid cursor") from None
    raw_first, _, raw_second = rest.partition(":")
    negative = raw_first.startswith("-")
    first = _number(raw_first[1:] if negative else raw_first)
    second = _number(raw_second)
    if prefix != "p" or first is None or second is None:
        raise BadId("not a valid cursor")
    return (-first if negative else first), second


def named_cursor(name: str, pk: int) -> str:
    """A keyset cursor over (a name, then an id), for lists ordered by name: the name
    travels in the cursor, so a page follows where the last one ended whatever is renamed
    or added in between."""
    return base64.urlsafe_b64encode(f"n:{pk}:{name}".encode()).decode().rstrip("=")


def unname_cursor(value: str) -> tuple[str, int]:
    if not isinstance(value, str) or not value or len(value) > 1200:
        raise BadId("not a valid cursor")
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadId("not a valid cursor") from None
    prefix, _, rest = text.partition(":")
    raw, _, name = rest.partition(":")
    pk = _number(raw)
    if prefix != "n" or pk is None or "\x00" in name:
        raise BadId("not a valid cursor")
    return name, pk


@overload
def decode_filter_id(gid: str, type_name: str, field: str) -> int: ...
@overload
def decode_filter_id(gid: None, type_name: str, field: str) -> None: ...
@overload
def decode_filter_id(gid: str | None, type_name: str, field: str) -> int | None: ...
def decode_filter_id(gid: str | None, type_name: str, field: str) -> int | None:
    """An optional id argument of a filter: None, or the key of a `type_name`; any other
    id is the caller's mistake (BAD_USER_INPUT)."""
    if gid is None:
        return None
    try:
        return decode_as(gid, type_name)
    except BadId as exc:
        raise GraphQLError(f"{field}: {exc}", extensions={"code": "BAD_USER_INPUT"}) from None
