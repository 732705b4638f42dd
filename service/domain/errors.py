"""Errors a caller can fix. Use cases raise `Rejected`; the GraphQL face turns it into
a `userErrors` entry after the transaction has rolled back, so nothing is written."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID = "INVALID"
    NOT_FOUND = "NOT_FOUND"
    FORBIDDEN = "FORBIDDEN"
    CONFLICT = "CONFLICT"
    CYCLE_CLOSED = "CYCLE_CLOSED"
    ALIGNMENT_LOOP = "ALIGNMENT_LOOP"


class Rejected(Exception):
    def __init__(self, code: ErrorCode, message: str, field: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def invalid(message: str, *field: str) -> Rejected:
    return Rejected(ErrorCode.INVALID, message, list(field) or None)


def not_found(what: str, *field: str) -> Rejected:
    return Rejected(ErrorCode.NOT_FOUND, f"{what} not found", list(field) or None)


def forbidden(message: str, *field: str) -> Rejected:
    return Rejected(ErrorCode.FORBIDDEN, message, list(field) or None)


class Unauthenticated(Exception):
    """No credentials, or credentials that do not name a principal."""
