"""Caches in front of execution.

- Results of queries (never mutations or subscriptions), keyed by the document, the
  variables, the caller's access, and the organization's outbox position read when
  the caller was authenticated. Any committed write in the organization moves that
  position, so a cached answer is never older than the last write the caller could
  know of; entries also expire after `ttl` seconds, because expected progress, status
  and staleness move with the clock.
- Parsing and validation (Strawberry's own bounded caches) sit beside it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from strawberry.extensions import SchemaExtension


class ResultCache:
    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self.entries: OrderedDict[tuple, tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.in_flight: dict[tuple, asyncio.Future] = {}

    def get(self, key: tuple) -> Any | None:
        found = self.entries.get(key)
        if found is None:
            self.misses += 1
            return None
        stored, result = found
        if time.monotonic() - stored > self.ttl:
            del self.entries[key]
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return result

    def put(self, key: tuple, result: Any) -> None:
        self.entries[key] = (time.monotonic(), result)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


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
                if computing is not None:
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
            principal = getattr(ctx.context, "_principal", None)
            if principal is None:
                return None
            try:
                variables = json.dumps(ctx.variables or {}, sort_keys=True)
            except TypeError:
                return None
            return (
                ctx.query,
                variables,
                ctx.operation_name,
                principal.organization_id,
                principal.role,
                principal.user_id,
                principal.api_key_id,
                tuple(sorted(principal.team_ids)),
                principal.event_seq,
            )

    return CachedResults
