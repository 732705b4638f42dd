"""WebSocket sessions: who is on a socket, and for how long.

A socket authenticates once, on `connection_init`, but a credential can be taken away
while the socket stays open. So, under both subprotocols:

- connection_init may be answered from a principal read a moment ago on this process
  (service/auth.py's PrincipalCache: 1.5 s at most, dropped by any event of the
  organization), and the first operation within FRESH_SECONDS of it uses that
  authentication; every other operation (`subscribe` in graphql-transport-ws, `start`
  in graphql-ws) is authenticated again from the database with the socket's token; a
  revoked, expired or deactivated credential gets an error for that operation, which
  does not run, and a principal that changed (teams added) is used from then on;
- the socket is closed with 4403 and a reason when its JWT expires (a timer set by its
  `exp`), and when its API key is revoked, its user deactivated or removed from a team.
  Those changes are events of the outbox; every replica's EventHub reads them (a
  `Watcher` per socket), so every replica closes its sockets within moments. A removed
  membership closes the user's sockets ("credentials changed") rather than patching
  their principal in place: visibility follows from the principal, subscriptions and
  broadcasts hold it, and reconnecting is the one place it is computed afresh (a
  membership added closes the socket the same way);
- every operation takes one request from its caller's rate-limit allowance, the same
  as its HTTP requests (service/ratelimit.py); over it, that operation gets an error
  (RATE_LIMITED, with retryAfter) and does not run, and the socket stays open;
- a token that is not printable ASCII (a lone surrogate, which JSON can carry) is
  refused like any bad token: 4403 and a reason;
- a socket that sends no `connection_init` within `ws_init_timeout_seconds` is closed
  (4408);
- a message larger than `max_body_bytes` closes the socket (1009) before it is parsed,
  whatever server runs the app (`okr serve` also sets uvicorn's `ws_max_size`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from json import JSONDecodeError
from typing import Any, Protocol, cast

from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

from schema.broadcast import LEGACY_WS, TRANSPORT_WS, Member, Outlet, broadcast_key, broadcasts_of
from schema.context import Context
from service.auth import bearer
from service.domain.enums import EventKind
from service.domain.errors import Unauthenticated
from service.domain.principal import Principal
from service.fanout import EventHub, Watcher
from service.ratelimit import RateLimiter, rate_limited

log = logging.getLogger(__name__)

FORBIDDEN = 4403
INIT_TIMEOUT = 4408
TOO_MANY_INITS = 4429
TRY_AGAIN_LATER = 1013
TOO_BIG = 1009
# Scope key: the server's own ASGI send of a WebSocket, left by the outermost middleware
# (service/workers.py's WorkerHeader) for the broadcasts' frames.
RAW_SEND = "okr.raw_send"
# The first operation within this long of connection_init uses its authentication;
# every later one is authenticated again, from the database.
FRESH_SECONDS = 1.0

Refusal = dict[str, Any]  # a GraphQL error: {"message": ..., "extensions": {"code": ...}}


class SocketView(Protocol):
    """What the GraphQL router offers the handlers below."""

    max_message_bytes: int
    rate_limiter: RateLimiter | None

    async def authenticate_token(
        self, context: Context, token: str, *, cached: bool = False
    ) -> Principal:
        """The principal of `token`; raises Unauthenticated, or ConnectionRejectionError
        with an error payload of its own (the database is out, say). `cached`: a
        principal read a moment ago will do (service/auth.py's PrincipalCache)."""
        ...


def token_of(params: object, headers: Mapping[str, str]) -> str:
    """The bearer token: `Authorization` (or `token`) in connection_init's payload, else
    the upgrade request's header. Anything but a string is refused."""
    if params is not None and not isinstance(params, dict):
        raise Unauthenticated("the connection_init payload must be an object")
    params = params or {}
    header = params.get("Authorization", params.get("authorization"))
    if header is None and "token" in params:
        if not isinstance(params["token"], str):
            raise Unauthenticated("token must be a string")
        header = f"Bearer {params['token']}"
    if header is None:
        header = headers.get("authorization")
    if header is not None and not isinstance(header, str):
        raise Unauthenticated("Authorization must be a string: 'Bearer <token>'")
    return bearer(header)


# The kinds of event `revocation` looks at: a socket's watcher is handed only these.
REVOKING = frozenset(
    str(k)
    for k in (
        EventKind.API_KEY_REVOKED,
        EventKind.USER_DEACTIVATED,
        EventKind.USER_ANONYMIZED,
        EventKind.USER_UPDATED,
        EventKind.TEAM_MEMBER_REMOVED,
        EventKind.TEAM_MEMBER_ADDED,
    )
)


def revocation(row: Any, p: Principal) -> str | None:
    """Why the event `row` ends a socket of principal `p`, or None."""
    if row.kind == EventKind.API_KEY_REVOKED:
        if p.api_key_id is not None and row.subject_id == p.api_key_id:
            return "the API key was revoked"
    elif row.kind == EventKind.USER_DEACTIVATED:
        if p.user_id is not None and row.subject_id == p.user_id:
            return "the user was deactivated"
    elif row.kind == EventKind.USER_ANONYMIZED:
        if p.user_id is not None and row.subject_id == p.user_id:
            return "the user was anonymized"
    elif row.kind == EventKind.USER_UPDATED:
        # A new role is new rights: the socket's principal would no longer be the user's.
        after = (row.payload or {}).get("after") or {}
        if p.user_id is not None and row.subject_id == p.user_id and "role" in after:
            return f"credentials changed (the role is now {after['role']}); reconnect"
    elif row.kind in (EventKind.TEAM_MEMBER_REMOVED, EventKind.TEAM_MEMBER_ADDED):
        # Visibility follows the teams: the socket's principal, and every subscription
        # and broadcast holding it, would no longer be the user's. Reconnecting is the
        # one place it is computed afresh.
        if p.user_id is not None and (row.payload or {}).get("user_id") == p.user_id:
            what = "removed" if row.kind == EventKind.TEAM_MEMBER_REMOVED else "added"
            return f"credentials changed (a team membership was {what}); reconnect"
    return None


def refusal(message: str) -> Refusal:
    return {"message": message, "extensions": {"code": "UNAUTHENTICATED"}}


def close_code(refused: Refusal) -> int:
    """4403 when the credential is refused; 1013 (try again later) otherwise."""
    return FORBIDDEN if refused["extensions"]["code"] == "UNAUTHENTICATED" else TRY_AGAIN_LATER


def close_reason(refused: Refusal | str) -> str:
    """A close frame's reason holds at most 123 bytes."""
    text = refused if isinstance(refused, str) else str(refused["message"])
    return text.encode()[:120].decode(errors="ignore")


class Guard:
    """One socket's credential: authenticated on connection_init, again for every
    operation, watched for revocation, and timed to its expiry."""

    def __init__(self, view: Any, context: Context, end: Any) -> None:
        self.view = cast(SocketView, view)
        self.context = context
        self.end = end  # coroutine function(reason): close the socket
        self.token: str | None = None
        self.principal: Principal | None = None
        self.watcher: Watcher | None = None
        self.task: asyncio.Task | None = None
        self.ended = asyncio.Event()
        self.reason = ""
        self.admitted_at: float | None = None  # when connection_init was authenticated

    async def _authenticate(self, token: str, cached: bool = False) -> Principal | Refusal:
        try:
            return await self.view.authenticate_token(self.context, token, cached=cached)
        except Unauthenticated as exc:
            return refusal(str(exc))
        except ConnectionRejectionError as exc:
            return cast(Refusal, exc.payload)

    async def admit(self, params: object) -> Refusal | None:
        """Authenticate connection_init; returns why it is refused, or None."""
        try:
            request = self.context.request
            if request is None:  # never: a socket's context carries its connection
                return refusal("no connection to authenticate")
            token = token_of(params, request.headers)
        except Unauthenticated as exc:
            return refusal(str(exc))
        principal = await self._authenticate(token, cached=True)
        if not isinstance(principal, Principal):
            return principal
        self.token, self.principal = token, principal
        self.admitted_at = time.monotonic()
        self.context.authenticate_as(principal)
        return None

    async def start(self) -> None:
        """After connection_ack: watch the organization's events, and the clock."""
        p = self.principal
        assert p is not None
        hub: EventHub | None = self.context.hub
        if hub is not None:
            self.watcher = await hub.watch(
                p.organization_id, p.event_seq, self._notice, kinds=REVOKING
            )
        self.task = asyncio.create_task(self._close_when_over(), name="okr-ws-guard")

    def _notice(self, row: Any) -> None:
        reason = revocation(row, self.principal) if self.principal else None
        if reason and not self.ended.is_set():
            self.reason = reason
            self.ended.set()

    async def _close_when_over(self) -> None:
        p = self.principal
        left = None if p is None or p.expires_at is None else max(0.0, p.expires_at - time.time())
        try:
            await asyncio.wait_for(self.ended.wait(), left)
        except TimeoutError:
            self.reason = "the token expired"
            self.ended.set()
        try:
            await self.end(self.reason)
        except Exception:  # the client may be gone already
            log.debug("closing a WebSocket failed", exc_info=True)

    async def recheck(self) -> Refusal | None:
        """Authenticate the socket's token again, for a new operation: returns why the
        operation is refused, or None (and the fresh principal is the context's)."""
        if self.ended.is_set():
            return refusal(self.reason)
        if self.token is None:
            return refusal("authentication required")
        admitted, self.admitted_at = self.admitted_at, None
        if admitted is not None and time.monotonic() - admitted <= FRESH_SECONDS:
            # The first operation right after connection_init: that authentication
            # stands (the watcher, started from its event position, and the expiry
            # timer cover what changed since).
            p = self.principal
            if p is not None and (p.expires_at is None or p.expires_at > time.time()):
                return None
        principal = await self._authenticate(self.token)
        if not isinstance(principal, Principal):
            return principal
        if self.ended.is_set():  # revoked while we looked
            return refusal(self.reason)
        self.principal = principal
        self.context.authenticate_as(principal)
        return None

    async def operation_refused(self) -> Refusal | None:
        """Why a new operation may not run: its credential (`recheck`), or its caller's
        rate limit. None when it may."""
        refused = await self.recheck()
        if refused is not None:
            return refused
        return rate_limited(getattr(self.view, "rate_limiter", None), self.principal)

    async def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


class Broadcasting:
    """Both handlers: a subscription that can be broadcast (schema/broadcast.py) joins
    its broadcast instead of running on its own; its frames go through the socket's
    `Outlet`, written by the broadcast's task, with no per-event work here."""

    context: Context
    schema: Any
    websocket: Any
    outlet: Outlet | None = None

    async def join_broadcast(
        self, operation_id: str, query: Any, variables: Any, operation_name: Any, protocol: str
    ) -> Member | None:
        ctx = self.context
        principal = ctx.principal_or_none
        key = broadcast_key(self.schema, query, variables, operation_name, principal)
        if key is None:
            return None
        active = getattr(ctx, "active_subscriptions", 0)
        if active >= getattr(self.schema, "max_per_connection", 20):
            return None  # the schema's own path reports TOO_MANY_SUBSCRIPTIONS
        if self.outlet is None:
            self.outlet = Outlet(self._frame_sender(), ctx.settings.subscriber_queue_size)
        ctx.active_subscriptions = active + 1
        try:
            return await broadcasts_of(self.schema).join(
                self.schema,
                key,
                self.outlet,
                operation_id,
                protocol,
                query,
                variables,
                operation_name,
                ctx,
            )
        except BaseException:
            ctx.active_subscriptions -= 1
            raise

    def _frame_sender(self) -> Callable[[str], Coroutine[Any, Any, None]]:
        """How the outlet writes a text frame: the server's own ASGI send when the
        outermost middleware left it in the scope (service/workers.py; the socket is open
        by now, and nothing between acts on `websocket.send`), else Starlette's."""
        ws = self.websocket.ws
        raw = ws.scope.get(RAW_SEND)
        if raw is None:
            return cast(Callable[[str], Coroutine[Any, Any, None]], ws.send_text)

        def send_text(text: str) -> Coroutine[Any, Any, None]:
            return raw({"type": "websocket.send", "text": text})

        return send_text

    def left_broadcast(self, member: Member) -> None:
        member.leave()
        self.context.active_subscriptions -= 1

    def close_outlet(self) -> None:
        if self.outlet is not None:
            self.outlet.close()


class TransportWSHandler(Broadcasting, BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with the guard above (Strawberry's own init timeout runs
    with `connection_init_wait_timeout`, which the router takes from the settings)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = Guard(self.view, self.context, self.end)

    async def handle_connection_init(self, message: Any) -> None:
        if self.connection_init_timeout_task:
            self.connection_init_timeout_task.cancel()
        payload = message.get("payload", {})
        first = not self.connection_init_received and not self.connection_timed_out
        if first and isinstance(payload, dict):
            refused = await self.guard.admit(payload)
            if refused is not None:
                self.connection_init_received = True
                await self.websocket.close(close_code(refused), close_reason(refused))
                return
        await super().handle_connection_init(message)
        if first and self.connection_acknowledged:
            await self.guard.start()

    async def handle_subscribe(self, message: Any) -> None:
        if self.connection_acknowledged:
            refused = await self.guard.operation_refused()
            if refused is not None:
                error = {"id": message["id"], "type": "error", "payload": [refused]}
                await self.send_message(cast(Any, error))
                return
        await super().handle_subscribe(message)

    async def run_operation(self, operation: Any) -> None:
        member = await self.join_broadcast(
            operation.id,
            operation.query,
            operation.variables,
            operation.operation_name,
            TRANSPORT_WS,
        )
        if member is None:
            await super().run_operation(operation)
            return
        try:
            await member.done.wait()  # cancelled when the client completes it
        finally:
            self.left_broadcast(member)
        # It ended on its own; its last frames are on the outlet. Free the id.
        operation.completed = True
        operation_id = operation.id
        if self.operations.get(operation_id) is operation:
            del self.operations[operation_id]

    async def end(self, reason: str) -> None:
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        await self.websocket.close(FORBIDDEN, close_reason(reason))

    async def shutdown(self) -> None:
        await self.guard.stop()
        await super().shutdown()
        self.close_outlet()


class LegacyWSHandler(Broadcasting, BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws protocol with the guard above, an init timeout (the same
    setting), and one connection_init per socket."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = Guard(self.view, self.context, self.end)
        self.init_received = False

    async def handle(self) -> None:
        deadline = asyncio.create_task(self._init_deadline())
        try:
            await super().handle()
        finally:
            deadline.cancel()
            with contextlib.suppress(BaseException):
                await deadline
            await self.guard.stop()
            self.close_outlet()

    async def _init_deadline(self) -> None:
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        if not self.init_received:
            with contextlib.suppress(Exception):
                await self.websocket.close(INIT_TIMEOUT, "Connection initialisation timeout")

    async def handle_connection_init(self, message: Any) -> None:
        if self.init_received:
            await self.websocket.close(TOO_MANY_INITS, "Too many initialisation requests")
            return
        self.init_received = True
        payload = message.get("payload")
        if payload is None or isinstance(payload, dict):
            refused = await self.guard.admit(payload)
            if refused is not None:
                await self.send_message({"type": "connection_error", "payload": refused})
                await self.websocket.close(close_code(refused), close_reason(refused))
                return
        await super().handle_connection_init(message)
        if self.connection_acknowledged:
            await self.guard.start()

    async def handle_start(self, message: Any) -> None:
        if self.connection_acknowledged:
            refused = await self.guard.operation_refused()
            if refused is not None:
                error: Any = {"type": "error", "id": message["id"], "payload": refused}
                await self.send_message(error)
                return
        await super().handle_start(message)

    async def handle_async_results(
        self, operation_id: str, query: str, operation_name: str | None, variables: Any
    ) -> None:
        member = await self.join_broadcast(
            operation_id, query, variables, operation_name, LEGACY_WS
        )
        if member is None:
            await super().handle_async_results(operation_id, query, operation_name, variables)
            return
        try:
            await member.done.wait()
        except asyncio.CancelledError:  # stopped: graphql-ws confirms with complete
            member.end(complete=True)
        finally:
            self.left_broadcast(member)
            self.subscriptions.pop(operation_id, None)
            self.tasks.pop(operation_id, None)

    async def end(self, reason: str) -> None:
        await self.cleanup()
        await self.websocket.close(FORBIDDEN, close_reason(reason))


class BoundedWebSocket(ASGIWebSocketAdapter):
    """Strawberry's ASGI adapter, refusing a message larger than the view's
    `max_message_bytes` before parsing it."""

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        limit = cast(SocketView, self.view).max_message_bytes
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
                    await self.close(TOO_BIG, f"a message may be at most {limit} bytes")
                    return
                try:
                    message = self.view.decode_json(text)
                except JSONDecodeError as exc:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from exc
                    continue
                yield message
        except KeyError as exc:
            raise NonTextMessageReceived from exc
        except WebSocketDisconnect:
            pass
