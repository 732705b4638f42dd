"""Broadcast fan-out: one execution and one encoding per event for every socket that
holds the same subscription, and the frame written straight to each socket.

A live screen is usually one of thousands showing the same thing. Subscribers whose
operation shares a key (same document, coerced variables without `after`, operation
name, and *visibility class*: organization, role, teams, and the user only when they
own an objective that is not PUBLIC, since that is the one rule that depends on who
they are) join one `Broadcast`. Its task runs the subscription once (with a context of
its own, forked from the first subscriber's), encodes each result's payload once with
orjson, and hands every member the same text; a member adds only the envelope with its
operation id (`{"id":"7","type":"next","payload":...}` under graphql-transport-ws,
`{"type":"data","id":"7","payload":...}` under graphql-ws) and writes it to its
socket's `Outlet`.

No per-connection GraphQL, queue, task or protocol round runs per event: an `Outlet`
sends the frame synchronously when the socket can take it (the ASGI send does not
suspend unless the transport paused writing). A socket that cannot keep up gets a
bounded backlog (the subscriber queue size, in frames) drained by a task of its own;
when the backlog overflows, each of its broadcast operations gets SUBSCRIBER_BEHIND with
the cursor of the last event queued for it, and ends, as before; nobody else waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
import strawberry
from graphql import GraphQLError
from sqlalchemy import text
from strawberry.types.execution import ExecutionResult, PreExecutionError

from schema import ids
from schema.sharing import root_arguments, subscription_operation

log = logging.getLogger(__name__)

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"

_OWNS_HIDDEN = text(
    "SELECT EXISTS (SELECT 1 FROM objective WHERE organization_id = :org AND owner_id = :user "
    "AND visibility IS DISTINCT FROM 'PUBLIC')"
)
_OWNER_TTL = 5.0
_owners: dict[tuple[int, int], tuple[float, bool]] = {}


async def visibility_class(context: Any) -> tuple | None:
    """Who sees the same events and fields as this caller: see the module doc."""
    p = getattr(context, "_principal", None)
    if p is None:
        return None
    if p.is_admin:
        return (p.organization_id, p.role)
    owner = None
    if p.user_id is not None:
        key = (p.organization_id, p.user_id)
        now = time.monotonic()
        cached = _owners.get(key)
        if cached is None or now - cached[0] > _OWNER_TTL:
            async with context.db.connect() as conn:
                owns = bool(
                    await conn.scalar(_OWNS_HIDDEN, {"org": p.organization_id, "user": p.user_id})
                )
            if len(_owners) > 50_000:
                _owners.clear()
            cached = _owners[key] = (now, owns)
        owner = p.user_id if cached[1] else None
    return (p.organization_id, p.role, tuple(sorted(p.team_ids)), owner)


async def broadcast_key(
    schema: Any, query: str | None, variables: Any, operation_name: str | None, context: Any
) -> tuple | None:
    """The key this operation broadcasts under, or None (it then runs on its own)."""
    if not isinstance(query, str) or (variables is not None and not isinstance(variables, dict)):
        return None
    if operation_name is not None and not isinstance(operation_name, str):
        return None
    found = subscription_operation(query, operation_name, getattr(schema, "max_tokens", None))
    if found is None:
        return None
    arguments = root_arguments(schema._schema, found[0], variables, operation_name)
    if arguments is None or arguments.get("after") is not None:
        return None
    who = await visibility_class(context)
    if who is None:
        return None
    try:
        frozen = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    return (query, frozen, operation_name, who)


class Outlet:
    """One socket's writer. `write` sends at once when the socket can take it; otherwise
    frames wait in a bounded backlog, drained in order by one task."""

    def __init__(self, send_text: Callable[[str], Coroutine[Any, Any, None]], limit: int):
        self.send_text = send_text
        self.limit = limit
        self.backlog: deque[str] = deque()
        self.task: asyncio.Task | None = None
        self.dead = False
        self.members: set[Member] = set()

    def write(self, frame: str) -> bool:
        """False when the frame would overflow the backlog (it is not queued)."""
        if self.dead:
            return True
        if self.task is not None:
            if len(self.backlog) >= self.limit:
                return False
            self.backlog.append(frame)
            return True
        coro = self.send_text(frame)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return True
        except Exception:
            self._died()
            return True
        # The transport paused writing: the rest of this send, then the backlog, in a task.
        self.task = asyncio.create_task(self._drain(coro, waiting), name="okr-ws-outlet")
        return True

    def force(self, frame: str) -> None:
        """Queue a frame past the limit (the last words of an operation)."""
        if self.dead:
            return
        if self.task is not None:
            self.backlog.append(frame)
        else:
            self.write(frame)

    async def _drain(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        try:
            await _finish(coro, waiting)
            while self.backlog:
                await self.send_text(self.backlog.popleft())
        except asyncio.CancelledError:
            raise
        except Exception:
            self._died()
        finally:
            self.task = None

    async def flush(self) -> None:
        """Wait until what is queued has been written (or the socket is gone)."""
        while self.task is not None and not self.dead:
            await asyncio.shield(self.task)

    def _died(self) -> None:
        log.debug("a WebSocket went away while frames were written to it", exc_info=True)
        self.dead = True
        self.backlog.clear()

    def close(self) -> None:
        self.dead = True
        self.backlog.clear()
        if self.task is not None:
            self.task.cancel()
        for member in list(self.members):
            member.leave()


async def _finish(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Run a coroutine that suspended on `waiting` (a future) to its end, as a task would."""
    while True:
        # Yielded by the coroutine but handled by no task yet: a task taking a yielded
        # future resets this flag first, and so do we.
        waiting._asyncio_future_blocking = False
        try:
            await waiting
        except BaseException as exc:
            try:
                waiting = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting = coro.send(None)
        except StopIteration:
            return


class Member:
    """One operation of one socket in a broadcast."""

    def __init__(self, broadcast: Broadcast, outlet: Outlet, operation_id: str, protocol: str):
        self.broadcast = broadcast
        self.outlet = outlet
        self.id_json = orjson.dumps(operation_id).decode()
        self.protocol = protocol
        if protocol == TRANSPORT_WS:
            self.prefix = '{"id":' + self.id_json + ',"type":"next","payload":'
        else:
            self.prefix = '{"type":"data","id":' + self.id_json + ',"payload":'
        self.last_seq: int | None = broadcast.last_seq
        self.done = asyncio.Event()
        self.active = True

    def deliver(self, payload: str, seq: int | None) -> None:
        if not self.active:
            return
        if self.outlet.write(self.prefix + payload + "}"):
            if seq is not None:
                self.last_seq = seq
            return
        # The socket's backlog is full: every broadcast operation on it is behind.
        log.info("a WebSocket fell behind; its broadcast subscriptions end with their cursor")
        for member in list(self.outlet.members):
            member.fall_behind()

    def fall_behind(self) -> None:
        if not self.active:
            return
        cursor = ids.cursor(self.last_seq) if self.last_seq is not None else None
        error = GraphQLError(
            "this subscription fell behind and was closed; subscribe again with `after` set "
            "to the cursor in this error's extensions",
            extensions={"code": "SUBSCRIBER_BEHIND", "cursor": cursor},
        )
        self.outlet.force(
            self.prefix + orjson.dumps({"data": None, "errors": [error.formatted]}).decode() + "}"
        )
        self.end(complete=True)

    def fail(self, errors: list[GraphQLError]) -> None:
        """Refused before execution (validation, say): an `error` message, no complete."""
        if not self.active:
            return
        if self.protocol == TRANSPORT_WS:
            payload: Any = [e.formatted for e in errors]
        else:
            payload = errors[0].formatted
        frame = {"type": "error", "id": None, "payload": payload}
        encoded = orjson.dumps(frame).decode().replace('"id":null', '"id":' + self.id_json, 1)
        self.outlet.force(encoded)
        self.end(complete=False)

    def end(self, complete: bool) -> None:
        if not self.active:
            return
        if complete:
            self.outlet.force('{"id":' + self.id_json + ',"type":"complete"}')
        self.leave()

    def leave(self) -> None:
        if not self.active:
            return
        self.active = False
        self.outlet.members.discard(self)
        self.broadcast.leave(self)
        self.done.set()


class Broadcast:
    """One subscription executed once per event for all its members."""

    def __init__(self, registry: Broadcasts, key: tuple, start: Callable[[], Awaitable[Any]]):
        self.registry = registry
        self.key = key
        self.members: set[Member] = set()
        self.last_seq: int | None = None
        self.context: Any = None
        self.task = asyncio.create_task(self._pump(start), name="okr-broadcast")

    async def _pump(self, start: Callable[[], Awaitable[Any]]) -> None:
        source = None
        try:
            source = await start()
            if isinstance(source, ExecutionResult):
                self._refused(source)
                return
            first = True
            async for result in source:
                if first and isinstance(result, PreExecutionError):
                    self._refused(result)
                    return
                first = False
                if not isinstance(result, ExecutionResult):
                    continue
                seq = getattr(self.context, "last_event_seq", None)
                payload: dict[str, Any] = {"data": result.data}
                if result.errors:
                    payload["errors"] = [e.formatted for e in result.errors]
                if result.extensions:
                    payload["extensions"] = result.extensions
                text_ = orjson.dumps(payload).decode()  # once, for every member
                if seq is not None:
                    self.last_seq = seq
                for member in list(self.members):
                    member.deliver(text_, seq)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a broadcast subscription failed")
        finally:
            self.registry.groups.pop(self.key, None)
            for member in list(self.members):
                member.end(complete=True)
            if source is not None and hasattr(source, "aclose"):
                with contextlib.suppress(Exception):
                    await source.aclose()

    def _refused(self, result: ExecutionResult) -> None:
        errors = list(result.errors or [GraphQLError("the subscription was refused")])
        for member in list(self.members):
            member.fail(errors)

    def leave(self, member: Member) -> None:
        self.members.discard(member)
        if not self.members:
            if self.registry.groups.get(self.key) is self:
                self.registry.groups.pop(self.key, None)
            self.task.cancel()


class Broadcasts:
    """The broadcasts of one schema (one process)."""

    def __init__(self) -> None:
        self.groups: dict[tuple, Broadcast] = {}

    def join(
        self,
        schema: Any,
        key: tuple,
        outlet: Outlet,
        operation_id: str,
        protocol: str,
        query: str,
        variables: dict | None,
        operation_name: str | None,
        context: Any,
    ) -> Member:
        group = self.groups.get(key)
        if group is None:
            own = context.fork()  # the seq it records is this broadcast's alone

            async def start() -> Any:
                # The plain execution (strawberry's), not the schema's sharing wrapper.
                return await strawberry.Schema.stream(
                    schema,
                    query,
                    variable_values=variables,
                    context_value=own,
                    operation_name=operation_name,
                )

            group = Broadcast(self, key, start)
            group.context = own
            own.audience = lambda: len(group.members)  # type: ignore[attr-defined]
            self.groups[key] = group
        member = Member(group, outlet, operation_id, protocol)
        group.members.add(member)
        outlet.members.add(member)
        return member

    @property
    def subscriber_count(self) -> int:
        return sum(len(g.members) for g in self.groups.values())


def broadcasts_of(schema: Any) -> Broadcasts:
    found = getattr(schema, "okr_broadcasts", None)
    if found is None:
        found = Broadcasts()
        schema.okr_broadcasts = found
    return found
