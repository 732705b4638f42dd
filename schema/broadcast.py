"""Broadcast fan-out: one execution and one encoding per event for every socket that
holds the same subscription and sees the same things, and the frame written straight to
each socket.

A live screen is usually one of thousands showing the same thing. Subscribers whose
operation shares a key (same document, coerced variables without `after`, operation
name, and *access class*: the principal without who it is, that is organization, role,
teams and the organization's settings) join one `Broadcast`. The broadcast follows the
organization's events itself (one `Subscriber` of the replica's EventHub) and runs the
subscription once per event for each of its *views*:

- the class view runs as the access class alone (no user, no key). The one visibility
  rule (service/reads/visibility.py) depends on who the caller is only through the
  objectives they own, so a member who owns no objective that is not PUBLIC sees
  exactly what the class sees, and is served by it;
- a member who owns such an objective gets a personal view, run as their own principal,
  as if they had subscribed alone.

Who owns what is never cached beyond the event that could change it: a member is put in
a view when it joins, from the database, and every event that may change who owns a
hidden objective (anything but the kinds in SAME_OWNERSHIP) is answered by reading the
owners again before that event runs, on every replica, since every replica's broadcasts
read every event of their organization. A change of the member's own access (teams,
role) closes its socket (schema/ws.py's `revocation`), so a class never outlives the
principal it was computed from. Every view reads the database as the event is
delivered, like any subscription: what a view sees follows visibility changes at once.

A view is Strawberry's own subscription execution over a `RowFeed`: the rows the
broadcast hands it instead of the EventHub's (schema/subscriptions.py reads the feed
when the context carries one). Each result's payload is encoded once with orjson; a
member adds only the envelope with its operation id (`{"id":"7","type":"next",
"payload":...}` under graphql-transport-ws, `{"type":"data","id":"7","payload":...}`
under graphql-ws) and writes it to its socket's `Outlet`.

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
import dataclasses
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
import strawberry
from graphql import GraphQLError
from strawberry.types.execution import ExecutionResult, PreExecutionError

from schema import ids
from schema.sharing import root_arguments, subscription_operation
from service.domain.enums import EventKind
from service.domain.principal import Principal
from service.fanout import SubscriberBehind
from service.reads.visibility import hidden_owners

log = logging.getLogger(__name__)

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"

# Kinds of event that never change who owns an objective or whether it is PUBLIC. Every
# other kind, including any kind added later, makes the broadcasts read the owners again.
SAME_OWNERSHIP = frozenset(
    {
        EventKind.CHECK_IN,
        EventKind.CHECK_IN_RETRACTED,
        EventKind.CHECK_IN_CORRECTED,
        EventKind.MEASUREMENT_RETRACTED,
        EventKind.COMMENT_ADDED,
        EventKind.CHECK_IN_DUE,
        EventKind.CYCLE_REVIEW_DUE,
        EventKind.KEY_RESULT_CREATED,
        EventKind.KEY_RESULT_UPDATED,
        EventKind.KEY_RESULT_SCORED,
        EventKind.KEY_RESULT_BOUND,
        EventKind.MEASUREMENTS_RECORDED,
        EventKind.WEBHOOK_ENDPOINT_CREATED,
        EventKind.WEBHOOK_ENDPOINT_UPDATED,
        EventKind.WEBHOOK_DISABLED,
        EventKind.METRIC_SOURCE_FAILED,
        EventKind.METRIC_SOURCE_RECOVERED,
        EventKind.METRIC_CREATED,
        EventKind.OBJECTIVE_ALIGNED,
        EventKind.OBJECTIVE_REFLECTED,
        EventKind.CYCLE_CREATED,
        EventKind.CYCLE_STATUS_CHANGED,
        EventKind.TEAM_CREATED,
        EventKind.USER_CREATED,
        EventKind.API_KEY_CREATED,
        EventKind.CHECK_IN_CADENCE_CHANGED,
        # Administration: none touches an objective's owner or visibility.
        EventKind.TEAM_UPDATED,
        EventKind.TEAM_ARCHIVED,
        EventKind.CYCLE_UPDATED,
        EventKind.KEY_RESULT_ARCHIVED,
        EventKind.OBJECTIVE_UNARCHIVED,
        EventKind.METRIC_UPDATED,
        EventKind.METRIC_ARCHIVED,
    }
)


def access_class(p: Principal) -> Principal:
    """The principal without who it is: what every member of one class view shares.
    Everything else the principal holds (role, teams, any field added later) stays, so
    it keys the broadcast as it is."""
    return dataclasses.replace(p, user_id=None, api_key_id=None, expires_at=None, event_seq=0)


def may_differ_from_class(p: Principal) -> bool:
    """Whether this principal can see more than its class: a user who is not an admin
    (an admin sees everything; a key has no user to own anything)."""
    return p.user_id is not None and not p.is_admin


class HiddenOwners:
    """Who owns an objective that is not PUBLIC, per organization, as read at or after a
    given event: one read per event that may change it, shared by every broadcast of the
    process. An answer is used only for an event no later than the one it was read for,
    so nothing here is ever older than the event being delivered."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.read: OrderedDict[int, tuple[int, frozenset[int]]] = OrderedDict()
        self.locks: dict[int, asyncio.Lock] = {}

    async def at(self, db: Any, org: int, seq: int) -> frozenset[int]:
        found = self.read.get(org)
        if found is not None and found[0] >= seq:
            return found[1]
        lock = self.locks.setdefault(org, asyncio.Lock())
        async with lock:
            found = self.read.get(org)
            if found is not None and found[0] >= seq:
                return found[1]
            async with db.connect() as conn:
                owners = await hidden_owners(conn, org)
            self.read[org] = (seq, owners)
            self.read.move_to_end(org)
            while len(self.read) > self.limit:
                gone, _ = self.read.popitem(last=False)
                self.locks.pop(gone, None)
            return owners


def broadcast_key(
    schema: Any,
    query: Any,
    variables: Any,
    operation_name: Any,
    principal: Principal | None,
    document: Any = None,
) -> tuple | None:
    """The key this operation broadcasts under, or None (it then runs on its own).
    Decided from the parsed document and the coerced arguments, so an `after` from a
    literal, a variable or a variable's default all make the stream the subscriber's
    own."""
    if principal is None or not isinstance(query, str):
        return None
    if variables is not None and not isinstance(variables, dict):
        return None
    if operation_name is not None and not isinstance(operation_name, str):
        return None
    try:
        frozen = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    # Whether a (document, variables, operation) may be shared does not depend on who
    # asks: remembered for the small documents that live screens send again and again
    # (a bounded LRU on the schema), so a subscribe parses and coerces once per process.
    remembered: OrderedDict[tuple, bool] | None = None
    if document is None and len(query) <= SHAREABLE_QUERY_CHARS and len(frozen) <= 1024:
        remembered = _shareable_of(schema)
    asked = (query, frozen, operation_name)
    shareable = remembered.get(asked) if remembered is not None else None
    if shareable is None:
        shareable = _shareable(schema, query, variables, operation_name, document)
        if remembered is not None:
            remembered[asked] = shareable
            while len(remembered) > SHAREABLE_ENTRIES:
                remembered.popitem(last=False)
    elif remembered is not None:
        remembered.move_to_end(asked)
    if not shareable:
        return None
    return (query, frozen, operation_name, access_class(principal))


SHAREABLE_QUERY_CHARS = 4096
SHAREABLE_ENTRIES = 256


def _shareable_of(schema: Any) -> OrderedDict[tuple, bool]:
    found = getattr(schema, "okr_shareable", None)
    if found is None:
        found = OrderedDict()
        schema.okr_shareable = found
    return found


def _shareable(
    schema: Any, query: str, variables: dict | None, operation_name: str | None, document: Any
) -> bool:
    """A subscription (parsed, arguments coerced as execution will) without `after`."""
    if document is None:
        found = subscription_operation(query, operation_name, getattr(schema, "max_tokens", None))
        if found is None:
            return False
        document = found[0]
    graphql_schema = getattr(schema, "_schema", schema)
    arguments = root_arguments(graphql_schema, document, variables, operation_name)
    return arguments is not None and arguments.get("after") is None


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

    def __init__(
        self,
        broadcast: Broadcast,
        outlet: Outlet,
        operation_id: str,
        protocol: str,
        principal: Principal,
    ):
        self.broadcast = broadcast
        self.outlet = outlet
        self.principal = principal
        self.view: View | None = None
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


class RowFeed:
    """The rows a view's subscription reads instead of the EventHub's: handed in one at a
    time by its broadcast. `hungry` is set while the subscription waits for a row with
    none left, which is how the broadcast knows a row has been answered in full (with a
    result, or with none when the row was not for this view)."""

    def __init__(self, on_hungry: Callable[[], None]) -> None:
        self.rows: deque[Any] = deque()
        self.wakeup: asyncio.Future[None] | None = None
        self.hungry = False
        self.on_hungry = on_hungry
        self.closed = False

    def put(self, row: Any) -> None:
        self.hungry = False
        self.rows.append(row)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)

    def __aiter__(self) -> RowFeed:
        return self

    async def __anext__(self) -> Any:
        while not self.rows:
            if self.closed:
                raise StopAsyncIteration
            self.wakeup = asyncio.get_running_loop().create_future()
            self.hungry = True
            self.on_hungry()
            await self.wakeup
        return self.rows.popleft()


_END = object()


class View:
    """One execution of a broadcast's subscription, as one principal (the class's, or a
    member's own), fed the broadcast's rows one at a time. The execution runs in a task
    of its own (as a lone subscription would, so its context variables hold from one
    event to the next) and hands its results over in order."""

    def __init__(self, broadcast: Broadcast, principal: Principal) -> None:
        self.broadcast = broadcast
        self.members: set[Member] = set()
        self.signal = asyncio.Event()
        self.feed = RowFeed(self.signal.set)
        ctx = broadcast.base_context.fork()
        ctx.authenticate_as(principal)
        ctx.row_feed = self.feed
        self.context = ctx
        self.results: deque[Any] = deque()
        self.task: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()
        self.ended = False

    async def open(self) -> None:
        """Start the subscription: its own checks run now (a NOT_FOUND scope is answered
        at once), and it waits for the first row."""
        async with self.lock:
            if self.task is not None or self.ended:
                return
            self.task = asyncio.create_task(self._run(), name="okr-broadcast-view")
            results = await self._answer()
            if results and isinstance(results[0], PreExecutionError):
                self._refused(results[0])
                return
            self._hand(results, None)
            # Prepare the statement every event runs first (the one rule's check of the
            # event, as this view's principal) now, not on the first event: it finds no
            # row and answers nothing.
            with contextlib.suppress(Exception):
                await self.context.loaders.event(0)

    async def step(self, row: Any) -> None:
        """Run the subscription for one row and hand its results to the members."""
        async with self.lock:
            if self.ended or self.task is None:
                return
            self.feed.put(row)
            self._hand(await self._answer(), row.seq)

    async def _run(self) -> None:
        b = self.broadcast
        source: Any = None
        try:
            # The plain execution (strawberry's), not the schema's counting wrapper.
            source = await strawberry.Schema.stream(
                b.schema,
                b.query,
                variable_values=b.variables,
                context_value=self.context,
                operation_name=b.operation_name,
            )
            if isinstance(source, ExecutionResult):
                self.results.append(PreExecutionError(data=None, errors=source.errors))
                return
            async for result in source:
                self.results.append(result)
                self.signal.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a broadcast subscription failed")
        finally:
            self.results.append(_END)
            self.signal.set()
            if source is not None and hasattr(source, "aclose"):
                with contextlib.suppress(Exception):
                    await source.aclose()

    async def _answer(self) -> list[Any]:
        """What the execution yields until it asks for another row, or ends."""
        answered: list[Any] = []
        while True:
            while self.results:
                item = self.results.popleft()
                if item is _END:
                    self.ended = True
                    return answered
                answered.append(item)
            # A result is handed over before the execution asks for the next row, so
            # once it is hungry everything for this row is here.
            if self.feed.hungry:
                return answered
            self.signal.clear()
            await self.signal.wait()

    def _hand(self, results: list[Any], seq: int | None) -> None:
        for result in results:
            if not isinstance(result, ExecutionResult):
                continue
            payload: dict[str, Any] = {"data": result.data}
            if result.errors:
                payload["errors"] = [e.formatted for e in result.errors]
            if result.extensions:
                payload["extensions"] = result.extensions
            text_ = orjson.dumps(payload).decode()  # once, for every member of the view
            for member in list(self.members):
                member.deliver(text_, seq)
        if self.ended:
            for member in list(self.members):
                member.end(complete=True)

    def _refused(self, result: ExecutionResult) -> None:
        self.ended = True
        errors = list(result.errors or [GraphQLError("the subscription was refused")])
        for member in list(self.members):
            member.fail(errors)

    async def close(self) -> None:
        self.ended = True
        self.feed.close()
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


class Broadcast:
    """One subscription for all its members: the organization's events read once, and
    each event run once per view (see the module doc)."""

    def __init__(
        self,
        registry: Broadcasts,
        key: tuple,
        schema: Any,
        query: str,
        variables: dict | None,
        operation_name: str | None,
        context: Any,
    ) -> None:
        self.registry = registry
        self.key = key
        self.schema = schema
        self.query = query
        self.variables = variables
        self.operation_name = operation_name
        self.base_context = context.fork()
        self.class_principal: Principal = key[-1]
        self.organization_id = self.class_principal.organization_id
        self.members: set[Member] = set()
        self.views: dict[int | None, View] = {}  # None: the class view; else a user's own
        self.last_seq: int | None = None
        self.started = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._pump(), name="okr-broadcast")

    async def add(self, member: Member) -> None:
        """Put a member in its view (opening the view if it is new). Whether it owns a
        hidden objective is read at or after the broadcast's position, one read shared by
        every member joining at that position (HiddenOwners); any later event that may
        change it makes `_regroup` read again before that event runs."""
        personal = False
        if may_differ_from_class(member.principal):
            owners = await self.registry.owners.at(
                self.base_context.db, self.organization_id, self.last_seq or 0
            )
            personal = member.principal.user_id in owners
        await self._place(member, member.principal.user_id if personal else None)

    async def _place(self, member: Member, user_id: int | None) -> None:
        view = self.views.get(user_id)
        if view is None or view.ended:
            principal = self.class_principal if user_id is None else member.principal
            view = self.views[user_id] = View(self, principal)
        if member.view is not None:
            member.view.members.discard(member)
        member.view = view
        view.members.add(member)
        await view.open()

    async def _pump(self) -> None:
        rows: AsyncIterator[Any] | None = None
        try:
            hub = self.base_context.hub
            if hub is None:
                raise RuntimeError("subscriptions need the replica's EventHub")
            subscriber = await hub.subscribe(self.organization_id, None)
            subscriber.audience = lambda: len(self.members)
            self.last_seq = subscriber.position
            rows = subscriber.rows()
            self.started.set_result(None)
            async for row in rows:
                await self._regroup(row)
                self.last_seq = row.seq
                live: list[View] = []
                for user_id, view in list(self.views.items()):
                    if not view.members or view.ended:
                        if self.views.get(user_id) is view:
                            del self.views[user_id]
                        await view.close()
                        continue
                    live.append(view)
                # The views run the event at once (each its own reads; their members are
                # disjoint, so each member still gets its frames in event order); the
                # next event starts when every view has answered this one.
                if len(live) == 1:
                    await live[0].step(row)
                elif live:
                    await asyncio.gather(*(view.step(row) for view in live))
        except asyncio.CancelledError:
            raise
        except SubscriberBehind:
            for member in list(self.members):
                member.fall_behind()
        except Exception as exc:
            if not self.started.done():
                self.started.set_exception(exc)
            log.exception("a broadcast subscription failed")
        finally:
            if not self.started.done():
                self.started.cancel()
            if self.registry.groups.get(self.key) is self:
                self.registry.groups.pop(self.key, None)
            for member in list(self.members):
                member.end(complete=True)
            for view in list(self.views.values()):
                await view.close()
            if rows is not None and hasattr(rows, "aclose"):
                with contextlib.suppress(Exception):
                    await rows.aclose()

    async def _regroup(self, row: Any) -> None:
        """Before an event that may change who owns a hidden objective runs: move every
        member of the class view who now owns one to a view of its own."""
        if row.kind in SAME_OWNERSHIP:
            return
        shared = self.views.get(None)
        if shared is None:
            return
        candidates = [m for m in shared.members if may_differ_from_class(m.principal)]
        if not candidates:
            return
        owners = await self.registry.owners.at(self.base_context.db, self.organization_id, row.seq)
        for member in candidates:
            if member.active and member.principal.user_id in owners:
                await self._place(member, member.principal.user_id)

    def leave(self, member: Member) -> None:
        self.members.discard(member)
        if member.view is not None:
            member.view.members.discard(member)
        if not self.members:
            if self.registry.groups.get(self.key) is self:
                self.registry.groups.pop(self.key, None)
            self.task.cancel()


class Broadcasts:
    """The broadcasts of one schema (one process)."""

    def __init__(self) -> None:
        self.groups: dict[tuple, Broadcast] = {}
        self.owners = HiddenOwners()

    async def join(
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
            group = Broadcast(self, key, schema, query, variables, operation_name, context)
            self.groups[key] = group
        await asyncio.shield(group.started)  # following the organization's events
        member = Member(group, outlet, operation_id, protocol, context.principal)
        group.members.add(member)
        outlet.members.add(member)
        try:
            await group.add(member)
        except BaseException:
            member.leave()
            raise
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
