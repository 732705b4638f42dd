"""The per-request context: the caller, the database, fresh data loaders."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

from strawberry.fastapi import BaseContext
from strawberry.types import Info as _Info

from service import clock
from service.db import Database
from service.domain.errors import Unauthenticated
from service.domain.principal import Principal
from service.fanout import EventHub
from service.reads.loaders import Loaders
from service.settings import Settings


class Context(BaseContext):
    def __init__(
        self,
        db: Database,
        settings: Settings,
        principal: Principal | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__()
        self.db = db
        self.settings = settings
        self._principal = principal
        self.request_id = request_id or uuid.uuid4().hex[:16]
        self.now = clock.now()
        self._loaders: Loaders | None = None
        self.connection_params: dict | None = None  # a WebSocket's connection_init payload
        self.hub: EventHub | None = None  # the replica's EventHub, for subscriptions
        # A broadcast's rows for one of its views (schema/broadcast.py), instead of the hub's.
        self.row_feed: AsyncIterator[Any] | None = None
        # A WebSocket's running subscriptions (schema/sharing.py, schema/ws.py count them).
        self.active_subscriptions = 0
        # What this request's mutations wrote, by response key: the global ids of their
        # payloads (schema/mutations/common.py), told even when the response is cut off.
        self.written: dict[str, list[str]] = {}
        # Reads that scan a whole cycle (cycleReport) run one at a time within a request:
        # twenty aliased reports would otherwise take twenty pooled connections and decode
        # twenty cycles' rows in one turn of the loop, holding every other request.
        self.one_scan_at_a_time = asyncio.Semaphore(1)

    @property
    def principal(self) -> Principal:
        if self._principal is None:
            raise Unauthenticated("authentication required")
        return self._principal

    @property
    def principal_or_none(self) -> Principal | None:
        """The caller, or None before authentication (never raises)."""
        return self._principal

    @property
    def is_authenticated(self) -> bool:
        return self._principal is not None

    def authenticate_as(self, principal: Principal) -> None:
        self._principal = principal
        self._loaders = None

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders(self.db, self.principal)
        return self._loaders

    def fork(self) -> Context:
        """A context of its own (same caller and connection) for a broadcast."""
        ctx = Context(self.db, self.settings, self._principal, self.request_id)
        ctx.hub = self.hub
        ctx.request = self.request
        ctx.connection_params = self.connection_params
        return ctx

    def refresh(self) -> None:
        """New loaders and clock: a subscription calls this for every event."""
        self._loaders = None
        self.now = clock.now()


Info = _Info[Context, None]
