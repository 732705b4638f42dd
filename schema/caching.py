"""Caches in front of execution.

- Results of queries (never mutations or subscriptions), keyed by the document, the
  variables, the caller's access, and the organization's outbox position read when
  the caller was authenticated. Any committed write in the organization moves that
  position, so a cached answer is never older than the last write the caller could
  know of; entries also expire after `ttl` seconds, because expected progress, status
  and staleness move with the clock.
- Parsed documents, by their text, for texts up to MAX_CACHED_QUERY_CHARS: a longer
  one (a query padded with a large comment, say) is parsed every time, never kept.

Both are bounded in what they hold, not only in how many entries: the results by the
bytes of their JSON (`response_cache_bytes`), keyed by a digest of the document and the
variables rather than their text; expired results leave as soon as a new one comes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from functools import lru_cache
from typing import Any

import orjson
from graphql.language.parser import parse
from strawberry.extensions import SchemaExtension

from service.observability.metrics import count_cache

MAX_CACHED_QUERY_CHARS = 20_000


@lru_cache(maxsize=1000)
def _parse_cached(query: str, **options: Any) -> Any:
    return parse(query, **options)


class BoundedParserCache(SchemaExtension):
    """Strawberry's ParserCache, but a document text longer than MAX_CACHED_QUERY_CHARS
    is parsed without being kept: the cache holds at most 1,000 texts of bounded size."""

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        query = ctx.query or ""
        if len(query) <= MAX_CACHED_QUERY_CHARS:
            ctx.graphql_document = _parse_cached(query, **ctx.parse_options)
        else:
            ctx.graphql_document = parse(query, **ctx.parse_options)
        yield


class ResultCache:
    def __init__(self, ttl: float, size: int, max_bytes: int = 64_000_000) -> None:
        self.ttl = ttl
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: OrderedDict[tuple, tuple[float, Any, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.in_flight: dict[tuple, asyncio.Future] = {}

    def get(self, key: tuple) -> Any | None:
        found = self.entries.get(key)
        if found is None:
            self.misses += 1
            count_cache(hit=False)
            return None
        stored, result, _size = found
        if time.monotonic() - stored > self.ttl:
            self._drop(key)
            self.misses += 1
            count_cache(hit=False)
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        count_cache(hit=True)
        return result

    def put(self, key: tuple, result: Any) -> None:
        """Keep `result` unless it alone would take more than a sixteenth of the budget;
        expired entries go first, then the least recently used, until it fits."""
        size = len(orjson.dumps(result.data)) if result.data is not None else 0
        if size > self.max_bytes // 16:
            return
        now = time.monotonic()
        if key in self.entries:
            self._drop(key)
        # Oldest first: sweep expired entries from the front, not the whole cache on
        # every put (an entry a hit moved back leaves by age or by the bounds below).
        while self.entries:
            oldest = next(iter(self.entries))
            if now - self.entries[oldest][0] <= self.ttl:
                break
            self._drop(oldest)
        while self.entries and (
            len(self.entries) >= self.size or self.bytes + size > self.max_bytes
        ):
            self._drop(next(iter(self.entries)))
        self.entries[key] = (now, result, size)
        self.bytes += size

    def _drop(self, key: tuple) -> None:
        _stored, _result, size = self.entries.pop(key)
        self.bytes -= size


def result_cache(cache: ResultCache) -> type[SchemaExtension]:
    class CachedResults(SchemaExtension):
        async def on_execute(self) -> AsyncIterator[None]:
            ctx = self.execution_context
            key = self._key()
            computing: asyncio.Future | None = None
            if key is not None:
                hit = cache.get(key)
                if hit is None and key in cache.in_flight:
                    # Single flight: the same answer is being computed; wait for it.
                    hit = await asyncio.shield(cache.in_flight[key])
                if hit is not None:
                    ctx.result = hit
                else:
                    computing = asyncio.get_running_loop().create_future()
                    cache.in_flight[key] = computing
            try:
                yield
            finally:
                if key is not None and computing is not None:
                    result = ctx.result
                    good = result is not None and not result.errors
                    if good:
                        cache.put(key, result)
                    computing.set_result(result if good else None)
                    cache.in_flight.pop(key, None)

        def _key(self) -> tuple | None:
            ctx = self.execution_context
            if cache.ttl <= 0 or not ctx.query:
                return None
            try:
                if ctx.operation_type.value != "query":
                    return None
            except RuntimeError:
                return None
            principal = getattr(ctx.context, "principal_or_none", None)
            if principal is None:
                return None
            try:
                variables = json.dumps(ctx.variables or {}, sort_keys=True)
            except TypeError:
                return None
            digest = hashlib.sha256(
                f"{len(ctx.query)}:{ctx.query}{variables}".encode("utf-8", "surrogatepass")
            ).digest()
            return (
                digest,
                ctx.operation_name,
                principal.organization_id,
                principal.role,
                principal.user_id,
                principal.api_key_id,
                tuple(sorted(principal.team_ids)),
                principal.event_seq,
            )

    return CachedResults
