"""The Subscription root: progress and the whole change feed, replayed from a cursor
and then live, off the outbox (service/fanout.py)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry import ID

from schema import ids, nodes
from schema.context import Info
from schema.enums import EventKind
from schema.ids import decode_filter_id
from schema.types.check_in import CheckIn
from schema.types.common import ProgressChange, check_in_of, progress_changes, user_of
from schema.types.event import Event
from schema.types.organization import User
from service.events import Scope
from service.fanout import CursorOutOfRange, SubscriberBehind


@strawberry.type(description="One committed change that moved progress.")
class ProgressEvent:
    row: strawberry.Private[Any]
    cursor: str
    occurred_at: datetime
    # The change was made somewhere the caller may not see (a check-in on a PRIVATE
    # objective's key result, say) and rolled up into what they may: they get the event,
    # with the visible part of the chain, and neither its cause nor who made it.
    cause_hidden: strawberry.Private[bool] = False

    @strawberry.field(description="Who made the change (null when that is not yours to see).")
    async def actor(self, info: Info) -> User | None:
        if self.cause_hidden:
            return None
        return await user_of(info, self.row.actor_user_id)

    @strawberry.field(description="What caused it, where a check-in did and you may see it.")
    async def check_in(self, info: Info) -> CheckIn | None:
        if self.cause_hidden:
            return None
        return await check_in_of(info, self.row.check_in_id)

    @strawberry.field(description="The key result and every objective up the chain.")
    async def changes(self, info: Info) -> list[ProgressChange]:
        return await progress_changes(info, self.row.payload.get("changes", []))


def _after(after: str | None) -> int | None:
    if after is None:
        return None
    try:
        return ids.uncursor(after)
    except ids.BadId as exc:
        raise GraphQLError(f"after: {exc}", extensions={"code": "BAD_USER_INPUT"}) from None


def _in_scope(row: Any, objective: int | None, team: int | None, cycle: int | None) -> bool:
    return Scope.parse(row.payload).covers(objective, team, cycle)


async def _visible(info: Info, row: Any) -> bool:
    """An event about something the caller may not see is not sent to them: the feed's
    own rule (service/reads/visibility.py), read as the event is delivered."""
    return await info.context.loaders.event(row.id) is not None


async def _events(info: Info, after: str | None) -> AsyncGenerator[Any, None]:
    """Rows of the caller's organization, from the cursor on, each with fresh loaders."""
    position = _after(after)
    feed = getattr(info.context, "row_feed", None)
    if feed is not None:  # a broadcast's view: its broadcast hands it the rows
        async for row in feed:
            info.context.refresh()  # cached values go stale between events
            yield row
        return
    hub = info.context.hub
    if hub is None:
        raise RuntimeError("subscriptions need the replica's EventHub (service/app.py sets it)")
    principal = info.context.principal
    try:
        subscriber = await hub.subscribe(principal.organization_id, position)
    except CursorOutOfRange as exc:
        raise GraphQLError(str(exc), extensions={"code": "BAD_USER_INPUT"}) from None
    rows = subscriber.rows()
    try:
        async for row in rows:
            info.context.refresh()  # cached values go stale between events
            yield row
    except SubscriberBehind as exc:
        raise GraphQLError(
            "this subscription fell behind and was closed; subscribe again with "
            "`after` set to the cursor in this error's extensions",
            extensions={"code": "SUBSCRIBER_BEHIND", "cursor": ids.cursor(exc.position)},
        ) from None
    finally:
        await rows.aclose()


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="One event per committed change that moved progress. Scope: an "
        "objective (its whole subtree rolls into it), a team, a cycle, or none (the whole "
        "organization). `after`: a cursor from an earlier event; events since then are "
        "replayed first, in commit order, none missed and none twice, then live ones follow."
    )
    async def progress_changed(
        self,
        info: Info,
        objective_id: ID | None = None,
        team_id: ID | None = None,
        cycle_id: ID | None = None,
        after: str | None = None,
    ) -> AsyncGenerator[ProgressEvent, None]:
        objective = decode_filter_id(objective_id, "Objective", "objectiveId")
        team = decode_filter_id(team_id, "Team", "teamId")
        cycle = decode_filter_id(cycle_id, "Cycle", "cycleId")
        for type_name, pk, name in (
            ("Objective", objective, "objectiveId"),
            ("Team", team, "teamId"),
            ("Cycle", cycle, "cycleId"),
        ):
            if pk is not None and await nodes.resolve(info, type_name, pk) is None:
                raise GraphQLError(f"{name}: not found", extensions={"code": "NOT_FOUND"})
        async for row in _events(info, after):
            if not row.payload.get("changes") or not _in_scope(row, objective, team, cycle):
                continue
            cause_hidden = not await _visible(info, row)
            if cause_hidden and not await progress_changes(info, row.payload["changes"]):
                continue  # nothing of it is the caller's to see
            yield ProgressEvent(
                row=row,
                cursor=ids.cursor(row.seq),
                occurred_at=row.occurred_at.astimezone(UTC),
                cause_hidden=cause_hidden,
            )

    @strawberry.subscription(
        description="Every committed change of the organization (or of the given kinds), "
        "with the same replay rule as progressChanged: another service can keep a copy in "
        "sync."
    )
    async def changes(
        self,
        info: Info,
        after: str | None = None,
        kinds: list[EventKind] | None = None,
    ) -> AsyncGenerator[Event, None]:
        wanted = {str(k.value) for k in kinds} if kinds else None
        async for row in _events(info, after):
            if wanted is not None and row.kind not in wanted:
                continue
            if not await _visible(info, row):
                continue
            yield Event.of(row)
