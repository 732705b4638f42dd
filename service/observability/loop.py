"""How long the event loop is held: a timer's lateness, in wall seconds and in the
loop's own CPU seconds.

One process serves every request on one event loop, so a synchronous stretch (a
report over a whole cycle, a response of thousands of objects) holds `/healthz`, every
other request and every deadline's timer for its length (service/pacing.py cuts such
stretches into slices). A timer asked for every INTERVAL seconds shows it: it fires late
by about the longest turn of the loop that ran meanwhile.

Lateness in wall seconds is what a client sees, and it also counts the time the
process waited for a CPU that other processes held (a busy 2-core machine, a pod at its
CPU limit): `okr_event_loop_lag_seconds`. Lateness in CPU seconds (the lateness times
the share of the CPU the loop's thread had over the interval) is what this process's
own code held the loop for, whatever else runs on the machine:
`okr_event_loop_held_seconds_max`, the largest since the process started. A regression
that makes a stretch synchronous shows in the second however loaded the machine is;
the first says when the machine is too small.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Gauge, Histogram

INTERVAL = 0.05

LOOP_LAG = Histogram(
    "okr_event_loop_lag_seconds",
    f"How late a timer asked for every {INTERVAL} s fired (wall seconds): the wait a "
    "request arriving then had before the loop looked at it.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LOOP_HELD = Gauge(
    "okr_event_loop_held_seconds_max",
    "The longest a timer was held by this process's own work (its lateness in the "
    "loop thread's CPU seconds), since the process started.",
    multiprocess_mode="max",
)


class LoopMonitor:
    """A task that measures the loop's lateness; `held_max` is also kept in-process."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.held_max = 0.0

    def note(self, lag: float, share: float) -> float:
        """Record one lateness (wall seconds) with the loop thread's CPU share over the
        interval it ends; return the lateness in CPU seconds."""
        held = max(0.0, lag) * min(1.0, max(0.0, share))
        LOOP_LAG.observe(max(0.0, lag))
        if held > self.held_max:
            self.held_max = held
            LOOP_HELD.set(held)
        return held

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started, cpu = loop.time(), time.thread_time()
            due = started + self.interval
            await asyncio.sleep(self.interval)
            now = loop.time()
            elapsed = now - started
            share = (time.thread_time() - cpu) / elapsed if elapsed > 0 else 0.0
            self.note(now - due, share)
