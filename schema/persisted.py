"""Apollo's automatic persisted queries (APQ), over POST and GET.

A client sends `extensions.persistedQuery = {"version": 1, "sha256Hash": H}`:

- without `query`: answered from the store when H is known; otherwise the JSON error
  `PersistedQueryNotFound` (`extensions.code` PERSISTED_QUERY_NOT_FOUND) with HTTP 200,
  which makes Apollo's link retry with the query;
- with `query`: the store checks that sha256(query) is H (a mismatch is refused and
  nothing is stored), keeps the text and runs it.

The store is one bounded LRU per process holding query texts only (never variables or
results), kept per organization: a hash registered by one organization is unknown to
every other (PERSISTED_QUERY_NOT_FOUND, as for a hash nobody sent), so a caller cannot
learn whether another tenant ever sent a given query text."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
BAD_REQUEST = "BAD_REQUEST"


class RequestError(Exception):
    """A request the GraphQL layer cannot run, answered as a JSON GraphQL error."""

    def __init__(
        self, status: int, message: str, code: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"errors": [{"message": self.message, "extensions": {"code": self.code}}]}


def sha256_hex(query: str) -> str:
    # "surrogatepass": a lone surrogate (which JSON can carry) is hashed, not a crash;
    # schema/inputs.py refuses it later with a clear error.
    return hashlib.sha256(query.encode("utf-8", "surrogatepass")).hexdigest()


class PersistedQueries:
    """Query texts by their SHA-256, least recently used first out: at most
    `max_entries` texts of at most `max_query_bytes` each, `max_total_bytes` in all."""

    def __init__(
        self,
        max_entries: int,
        max_query_bytes: int = 100_000,
        max_total_bytes: int = 16_000_000,
    ) -> None:
        self.max_entries = max_entries
        self.max_query_bytes = max_query_bytes
        self.max_total_bytes = max_total_bytes
        self._texts: OrderedDict[str, str] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._texts)

    def get(self, digest: str) -> str | None:
        """`digest` is the store's key: see `resolve` (the organization, then the hash)."""
        text = self._texts.get(digest)
        if text is None:
            self.misses += 1
            return None
        self._texts.move_to_end(digest)
        self.hits += 1
        return text

    def put(self, digest: str, query: str) -> None:
        size = len(query.encode("utf-8", "surrogatepass"))
        if self.max_entries <= 0 or size > self.max_query_bytes:
            return  # too large to keep: it runs, and the client sends it again next time
        if digest in self._texts:
            self._texts.move_to_end(digest)
            return
        self._texts[digest] = query
        self.bytes += size
        while len(self._texts) > self.max_entries or self.bytes > self.max_total_bytes:
            _digest, dropped = self._texts.popitem(last=False)
            self.bytes -= len(dropped.encode("utf-8", "surrogatepass"))

    def resolve(
        self, query: str | None, extensions: dict[str, Any] | None, organization: int | None
    ) -> str | None:
        """The query to run for a request of `organization`: its own, or the one stored
        for that organization under its hash. Raises RequestError for a hash that is
        malformed, unknown (to this organization) or does not match."""
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            return query
        if not isinstance(persisted, dict):
            raise RequestError(400, "extensions.persistedQuery must be an object", BAD_REQUEST)
        if persisted.get("version") != 1:
            raise RequestError(
                400,
                "PersistedQueryNotSupported: only persistedQuery version 1 is supported",
                PERSISTED_QUERY_NOT_SUPPORTED,
            )
        digest = persisted.get("sha256Hash")
        if not isinstance(digest, str) or len(digest) != 64:
            raise RequestError(
                400,
                "extensions.persistedQuery.sha256Hash must be 64 hexadecimal digits",
                BAD_REQUEST,
            )
        digest = digest.lower()
        key = f"{organization}:{digest}"
        if query is None:
            text = self.get(key)
            if text is None:
                # HTTP 200, as Apollo's link expects: it then retries with the query.
                raise RequestError(200, "PersistedQueryNotFound", PERSISTED_QUERY_NOT_FOUND)
            return text
        if sha256_hex(query) != digest:
            raise RequestError(
                400,
                "provided sha256Hash does not match the SHA-256 of the query",
                BAD_REQUEST,
            )
        self.put(key, query)
        return query
