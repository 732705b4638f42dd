"""Rate limits per API key and per user: one token bucket per caller, per process.

Off unless `OKR_RATE_LIMIT_PER_MINUTE` is set. A caller may spend that many requests
at once (the bucket's size), then one every 60/N seconds. One allowance covers every
way in: each HTTP request to /graphql, each operation started on a WebSocket
(`subscribe` in graphql-transport-ws, `start` in graphql-ws; schema/ws.py) and each
CSV export. Beyond it an HTTP request is answered 429 with Retry-After, and a socket's
operation gets an error for that operation (the socket stays open); both carry a
GraphQL error with extensions.code RATE_LIMITED and retryAfter.

With several workers or replicas each process keeps its own buckets, so the effective
limit is N per process that a caller reaches: a shared limit belongs in a gateway in
front of the service."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

RATE_LIMITED = "RATE_LIMITED"


class RateLimiter:
    def __init__(
        self,
        per_minute: int,
        max_callers: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.max_callers = max_callers
        self.clock = clock
        # caller -> (tokens, when they were counted); least recently seen first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, caller: str) -> float:
        """0 when the request may go ahead (one token taken), else the seconds to wait."""
        now = self.clock()
        tokens, then = self._buckets.get(caller, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[caller] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[caller] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        self._buckets.move_to_end(caller)
        while len(self._buckets) > self.max_callers:
            # The caller seen longest ago: its bucket would be full again by now
            # unless it is very recent, so forgetting it is generous, not unsafe.
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))


def caller_key(principal: object) -> str | None:
    """An API key is limited on its own; a user across all their tokens."""
    api_key_id = getattr(principal, "api_key_id", None)
    if api_key_id is not None:
        return f"key:{api_key_id}"
    user_id = getattr(principal, "user_id", None)
    if user_id is not None:
        return f"user:{user_id}"
    return None


def rate_limited(limiter: RateLimiter | None, principal: object) -> dict[str, Any] | None:
    """Take one request from `principal`'s allowance: None when it may go ahead, else
    the GraphQL error that refuses it."""
    if limiter is None:
        return None
    key = caller_key(principal)
    if key is None:
        return None
    wait = limiter.take(key)
    if not wait:
        return None
    retry_after = limiter.retry_after(wait)
    return {
        "message": f"rate limit exceeded; retry in {retry_after} s",
        "extensions": {"code": RATE_LIMITED, "retryAfter": int(retry_after)},
    }
