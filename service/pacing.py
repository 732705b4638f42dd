"""Time slices of the event loop for long synchronous stretches.

One process serves every request on one event loop: a read that computes for a second
without awaiting (a report over a whole cycle, a forecast per key result over thousands
of key results, a response of thousands of objects) holds every other request, `/healthz`
included, for that second, and no timer (a deadline's) can fire meanwhile. Such a
stretch calls `give_way()` between its steps (or asks `pacer.must_wait()`, as the
response budget does inside graphql-core's completion): once the current turn of the
loop has run SLICE_SECONDS, it waits for the next turn, after the loop has looked for
other work. A stretch shorter than a slice never waits.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

SLICE_SECONDS = 0.02
# Waiters set going per turn of the loop: the rest stay parked on their futures and cost
# nothing (thousands of resolvers may wait at once; run again every turn only to wait
# again, they would fill the turns themselves).
RELEASE_PER_TURN = 256


class Pacer:
    """Once one has run SLICE_SECONDS in a turn of the loop, the rest wait for the next
    turn, after the loop has looked for other work (a health check, a small query)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started: float | None = None
        self.waiting = False
        self.parked: deque[asyncio.Future[None]] = deque()
        self.releasing = False

    def must_wait(self) -> bool:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            self.loop, self.started, self.waiting = loop, None, False
            self.parked, self.releasing = deque(), False
        if self.waiting:
            return True
        now = time.monotonic()
        if self.started is None:
            self.started = now
            loop.call_soon(self._next_turn)  # runs first in the next turn
            return False
        if now - self.started > SLICE_SECONDS:
            self.waiting = True
        return self.waiting

    def _next_turn(self) -> None:
        self.started, self.waiting = None, False

    def turn(self) -> asyncio.Future[None]:
        """A future done in a later turn of the loop, first parked first (after
        `must_wait` said so, which set `self.loop`)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.parked.append(fut)
        if not self.releasing:
            self.releasing = True
            loop.call_soon(self._release)
        return fut

    def _release(self) -> None:
        released = 0
        while self.parked and released < RELEASE_PER_TURN:
            fut = self.parked.popleft()
            if not fut.done():  # a cancelled waiter's is done already
                fut.set_result(None)
                released += 1
        if self.parked and self.loop is not None:
            self.loop.call_soon(self._release)
        else:
            self.releasing = False


pacer = Pacer()


async def give_way() -> None:
    """Between the steps of a long synchronous stretch: wait for the next turn of the
    loop once this one has run its slice (a deadline's timer fires at such a point)."""
    if pacer.must_wait():
        await pacer.turn()
