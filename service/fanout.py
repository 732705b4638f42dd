"""Fan-out of the outbox to subscribers on this replica.

The event row is the truth. A NOTIFY sent inside each writing transaction (delivered
on commit, carrying only "organization:sequence") wakes the replicas; each replica
then reads the new rows once per organization and offers them to its subscribers.

- One dedicated listener connection per replica, never one from the pool, and to
  PostgreSQL itself (`Database.direct_url`) when the pool goes through PgBouncer. A lost
  connection is noticed (termination listener, and a health check every few seconds),
  replaced, and every organization with subscribers is caught up from the last
  sequence seen. A slow poll covers any notification that went missing.
- Every subscriber has a bounded queue and its own position (the last sequence it was
  handed). A subscriber whose queue is full is marked as behind and closed with its
  cursor; it never silently misses an event.
- Replay: a new subscriber registers first, then reads what it missed from the table;
  rows that arrive live while it replays are skipped by sequence, so nothing is lost
  and nothing comes twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.db import Database
from service.events import CHANNEL

log = logging.getLogger(__name__)

BATCH = 500
_AFTER = text(
    "SELECT * FROM event WHERE organization_id = :org AND seq > :after ORDER BY seq LIMIT :n"
)
_BOUNDS = text(
    "SELECT o.event_seq AS top, (SELECT min(seq) FROM event e WHERE e.organization_id = o.id) "
    "AS oldest FROM organization o WHERE o.id = :org"
)


class SubscriberBehind(Exception):
    """The subscriber fell behind; it may resume from `position`."""

    def __init__(self, position: int) -> None:
        super().__init__(f"fell behind at sequence {position}")
        self.position = position


class CursorOutOfRange(Exception):
    pass


def listener_params(url: str) -> dict[str, Any]:
    """asyncpg.connect() arguments for a SQLAlchemy URL (sockets given as ?host=)."""
    u = make_url(url)
    params: dict[str, Any] = {
        "user": u.username,
        "password": u.password,
        "database": u.database,
        "host": u.host or u.query.get("host"),
        "port": u.port,
        "server_settings": {"application_name": "okr-listener"},
    }
    return {k: v for k, v in params.items() if v is not None}


class Subscriber:
    def __init__(self, hub: EventHub, organization_id: int, position: int, maxsize: int):
        self.hub = hub
        self.organization_id = organization_id
        self.position = position  # the last sequence handed to the consumer
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.behind = False
        self.closed = False
        # How many clients this subscriber serves (a broadcast serves many): /metrics.
        self.audience: Callable[[], int] | None = None

    def offer(self, row: Any) -> None:
        if self.behind or self.closed:
            return
        try:
            self.queue.put_nowait(row)
            self.hub.deliveries += 1  # read by service/observability/metrics.py
        except asyncio.QueueFull:
            self.behind = True  # closed with its cursor when it next reads
            log.info(
                "a subscriber of organization %s fell behind at %s",
                self.organization_id,
                self.position,
            )

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):  # a full queue has no waiting reader
            self.queue.put_nowait(None)

    async def rows(self) -> AsyncGenerator[Any, None]:
        """Missed rows from the table, then live ones, in sequence order."""
        try:
            while True:
                batch = await self.hub.read_after(self.organization_id, self.position)
                for row in batch:
                    self.position = row.seq
                    yield row
                if len(batch) < BATCH:
                    break
            while True:
                if self.behind:
                    raise SubscriberBehind(self.position)
                if self.closed and self.queue.empty():
                    return
                row = await self.queue.get()
                if row is None:
                    return
                if row.seq <= self.position:
                    continue  # already replayed
                self.position = row.seq
                yield row
        finally:
            self.hub.unsubscribe(self)


class Watcher(Subscriber):
    """Not a queue: a callback handed every live row of its organization, at once, in the
    fetch that reads it. The WebSocket layer watches for revoked credentials with it."""

    def __init__(
        self,
        hub: EventHub,
        organization_id: int,
        position: int,
        callback: Callable[[Any], None],
        kinds: frozenset[str] | None = None,
    ) -> None:
        super().__init__(hub, organization_id, position, 1)
        self.callback = callback
        self.kinds = kinds  # None: every row; else only rows of these kinds

    def offer(self, row: Any) -> None:
        if self.closed or row.seq <= self.position:
            return
        self.position = row.seq
        if self.kinds is None or row.kind in self.kinds:
            self.hand(row)

    def hand(self, row: Any) -> None:
        try:
            self.callback(row)
        except Exception:
            log.exception("an event watcher failed")

    def close(self) -> None:
        self.closed = True
        self.hub.unsubscribe(self)


class EventHub:
    def __init__(
        self,
        db: Database,
        *,
        queue_size: int = 1000,
        poll_seconds: float = 5.0,
        health_seconds: float = 2.0,
    ) -> None:
        self.db = db
        self.queue_size = queue_size
        self.poll_seconds = poll_seconds
        self.health_seconds = health_seconds
        self.subscribers: dict[int, set[Subscriber]] = defaultdict(set)
        self.last_seen: dict[int, int] = {}
        self.locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.listener: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._running: set[int] = set()
        self._again: set[int] = set()
        self._supervisor: asyncio.Task | None = None
        self._stopping = False
        self.reconnects = 0
        self.deliveries = 0  # events handed to subscribers' queues
        # Called with (organization, sequence) for every notification, at once and before
        # any row is read, and with (None, 0) when notifications may have been missed
        # (a new listener connection): the authentication cache forgets by them.
        self.notice_hooks: list[Callable[[int | None, int], None]] = []

    @property
    def listening(self) -> bool:
        """Whether notifications reach this replica right now."""
        return self.listener is not None and not self.listener.is_closed()

    def _tell(self, org: int | None, seq: int) -> None:
        for hook in self.notice_hooks:
            try:
                hook(org, seq)
            except Exception:
                log.exception("a notification hook failed")

    # --- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        await self._connect()
        self._supervisor = asyncio.create_task(self._supervise(), name="okr-event-hub")

    async def stop(self) -> None:
        self._stopping = True
        for subs in list(self.subscribers.values()):
            for sub in list(subs):
                sub.close()
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for task in list(self._tasks):
            task.cancel()
        if self.listener is not None and not self.listener.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.listener.close(), 2)

    async def _connect(self) -> None:
        # LISTEN is session state: PostgreSQL itself, never a pooler in transaction mode.
        conn = await asyncpg.connect(**listener_params(self.db.direct_url), timeout=10)
        conn.add_termination_listener(self._on_lost)
        await conn.add_listener(CHANNEL, self._on_notify)
        self._tell(None, 0)
        self.listener = conn
        log.info("listening for events on %r", CHANNEL)

    def _on_lost(self, _conn: asyncpg.Connection) -> None:
        self._tell(None, 0)
        if self._stopping:
            return
        log.warning("event listener connection lost")
        self._wake.set()

    async def _healthy(self) -> bool:
        conn = self.listener
        if conn is None or conn.is_closed():
            return False
        try:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), self.health_seconds)
        except (TimeoutError, Exception):
            return False
        return True

    async def _supervise(self) -> None:
        since_poll = 0.0
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.health_seconds)
            self._wake.clear()
            since_poll += self.health_seconds
            try:
                if not await self._healthy():
                    await self._reconnect()
                    since_poll = self.poll_seconds  # catch up at once
                if since_poll >= self.poll_seconds:
                    since_poll = 0.0
                    for org in list(self.subscribers):
                        self._schedule(org)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event hub supervision failed; retrying")
                await asyncio.sleep(0.5)

    async def _reconnect(self) -> None:
        old, self.listener = self.listener, None
        if old is not None and not old.is_closed():
            old.terminate()
        delay = 0.1
        while not self._stopping:
            try:
                await self._connect()
                self.reconnects += 1
                return
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                log.warning("event listener reconnect failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- notifications and fetching ------------------------------------------------

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            org_text, _, seq_text = payload.partition(":")
            org, seq = int(org_text), int(seq_text)
        except ValueError:
            log.warning("ignoring malformed notification %r", payload)
            return
        self._tell(org, seq)
        if self.subscribers.get(org) and seq > self.last_seen.get(org, 0):
            self._schedule(org)

    def _schedule(self, org: int) -> None:
        """One fetch at a time per organization; notifications that arrive while one
        runs are folded into a single further round."""
        if org in self._running:
            self._again.add(org)
            return
        self._running.add(org)
        task = asyncio.create_task(self._fetch_rounds(org))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_rounds(self, org: int) -> None:
        try:
            while True:
                self._again.discard(org)
                await self._fetch(org)
                if org not in self._again:
                    return
        except Exception:
            log.exception("fetching events of organization %s failed; the poll retries", org)
        finally:
            self._running.discard(org)

    async def _fetch(self, org: int) -> None:
        async with self.locks[org]:
            while self.subscribers.get(org):
                rows = await self.read_after(org, self.last_seen.get(org, 0))
                for row in rows:
                    for sub in list(self.subscribers.get(org, ())):
                        sub.offer(row)
                    self.last_seen[org] = row.seq
                if len(rows) < BATCH:
                    return

    async def read_after(self, org: int, after: int) -> list[Any]:
        async with self.db.connect() as conn:
            return list(await conn.execute(_AFTER, {"org": org, "after": after, "n": BATCH}))

    # --- subscribing -----------------------------------------------------------------

    async def subscribe(self, organization_id: int, after: int | None) -> Subscriber:
        """Register first, then replay: see the module's docstring."""
        async with self.db.connect() as conn:
            bounds = (await conn.execute(_BOUNDS, {"org": organization_id})).one()
        top, oldest = bounds.top, bounds.oldest
        if after is not None:
            if after > top:
                raise CursorOutOfRange(f"the cursor is ahead of the feed (which is at {top})")
            if oldest is not None and after < oldest - 1:
                raise CursorOutOfRange(
                    "the cursor is older than the events kept; reload and subscribe without `after`"
                )
        async with self.locks[organization_id]:
            if not self.subscribers.get(organization_id):
                # Nobody here followed this organization: start from what is committed.
                self.last_seen[organization_id] = max(self.last_seen.get(organization_id, 0), top)
            sub = Subscriber(
                self, organization_id, top if after is None else after, self.queue_size
            )
            self.subscribers[organization_id].add(sub)
        if self.last_seen[organization_id] < top:
            self._schedule(organization_id)
        return sub

    async def watch(
        self,
        organization_id: int,
        since: int,
        callback: Callable[[Any], None],
        kinds: frozenset[str] | None = None,
    ) -> Watcher:
        """Hand `callback` every row of the organization after sequence `since` (rows the
        hub already read are read again for it), or only those of `kinds`; `close()` the
        watcher to stop."""
        async with self.locks[organization_id]:
            followed = bool(self.subscribers.get(organization_id))
            if not followed:
                self.last_seen[organization_id] = max(self.last_seen.get(organization_id, 0), since)
            seen = self.last_seen[organization_id]
            watcher = Watcher(self, organization_id, max(since, seen), callback, kinds)
            self.subscribers[organization_id].add(watcher)
        if not followed:
            self._schedule(organization_id)  # rows committed since `since` came unnoticed
        position = since
        while position < seen:  # handed out before this watcher joined
            batch = await self.read_after(organization_id, position)
            for row in batch:
                if row.seq <= seen and (kinds is None or row.kind in kinds):
                    watcher.hand(row)
            if len(batch) < BATCH:
                break
            position = batch[-1].seq
        return watcher

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self.subscribers.get(sub.organization_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                self.subscribers.pop(sub.organization_id, None)

    @property
    def subscriber_count(self) -> int:
        return sum(
            (1 if sub.audience is None else sub.audience())
            for subs in self.subscribers.values()
            for sub in subs
            if not isinstance(sub, Watcher)
        )
