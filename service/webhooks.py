"""Signed webhooks out (docs/design.md, "Work that happens later"; the contract's
"Webhooks"): endpoints managed by admins, deliveries queued from the outbox, signed as
Standard Webhooks, retried with backoff, logged.

Queueing, by outbox position. Each endpoint keeps `last_seq`, the organization's event
sequence it has been queued up to. Every job-runner turn (service/jobs.py) takes the
endpoints that are behind (row locks, SKIP LOCKED: one process per endpoint), reads
their organization's events after that position up to the committed head (sequences
follow commit order, so nothing committed later can land below the head), keeps those
the endpoint may see and wants, and in the same transaction writes one delivery and
one job per event and moves `last_seq`. Nothing is lost, nothing is queued twice, and a
write (a check-in) pays nothing for the endpoints listening.

What an endpoint sees: what a SERVICE key sees, and with a team, that team's TEAM
objectives as a member would (`principal_of`), through the one visibility rule
(service/reads/visibility.py); events it may not see are never queued for it.

A delivery is a job: one attempt per run, outside any transaction, through the safe
outbound client (service/outbound.py). A 2xx within the deadline succeeds; anything
else is tried again after OKR_WEBHOOK_RETRY_BASE_SECONDS doubling with jitter, until
the delivery is OKR_WEBHOOK_DISABLE_AFTER_SECONDS (3 days) old, then FAILED. An
endpoint all of whose attempts failed for that long is disabled (WEBHOOK_DISABLED). A
ping is tried once. A process killed mid-attempt leaves the job to run again after its
lease: a receiver may then see a delivery twice, only after a failed attempt, and
deduplicates on `webhook-id` (the event's cursor).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service import events, jobs, models
from service.access import require_admin
from service.db import Database
from service.domain.enums import DeliveryStatus, EventKind
from service.domain.errors import ErrorCode, Rejected, invalid, not_found
from service.domain.principal import Principal
from service.jobs import Job, Retry
from service.outbound import Outbound, OutboundFailed, UnsafeTarget
from service.reads.visibility import EVENT, visible_events
from service.secrets import Box
from service.settings import Settings
from service.usecases.commands import KEEP, Keep

DELIVER = "webhook.deliver"
SECRET_OVERLAP = timedelta(hours=24)  # after a rotation the old secret signs too
BODY_CUT = 1024  # of a response body kept in the log
BATCH = 1000  # events queued per endpoint per turn
MAX_BACKOFF = 86400.0
MAX_KINDS = len(EventKind)

ENDPOINT = models.table(models.WebhookEndpoint)
DELIVERY = models.table(models.WebhookDelivery)


def principal_of(organization_id: int, team_id: int | None) -> Principal:
    """Who an endpoint reads as: a SERVICE principal, a member of its team if it has one."""
    teams = frozenset({team_id}) if team_id is not None else frozenset()
    return Principal(organization_id=organization_id, role="SERVICE", team_ids=teams)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def global_id(type_name: str, pk: int) -> str:
    """A global id, encoded as schema/ids.py does (base64url of "Type:pk", unpadded); a
    test holds the two equal."""
    return base64.urlsafe_b64encode(f"{type_name}:{pk}".encode()).decode().rstrip("=")


def cursor_of(seq: int) -> str:
    """An event's cursor, as schema/ids.py writes it: the `webhook-id` of its deliveries."""
    return base64.urlsafe_b64encode(f"c:{seq}".encode()).decode().rstrip("=")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: `v1,` base64 HMAC-SHA256 of `id.timestamp.body`
    under the secret's bytes (the base64 after `whsec_`)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# --- management (ADMIN only) ------------------------------------------------------------


@dataclass(frozen=True)
class CreateEndpoint:
    url: str
    description: str | None
    kinds: tuple[str, ...]
    team_id: int | None


@dataclass(frozen=True)
class UpdateEndpoint:
    endpoint_id: int
    url: str | Keep = KEEP
    description: str | Keep | None = KEEP
    kinds: tuple[str, ...] | Keep = KEEP
    active: bool | Keep = KEEP


@dataclass(frozen=True)
class Saved:
    endpoint: Any
    secret: str | None = None  # shown on create and rotate only


async def _checked_url(outbound: Outbound, url: str) -> str:
    url = url.strip()
    try:
        await outbound.resolve(url)
    except UnsafeTarget as exc:
        raise invalid(str(exc), "url") from None
    return url


def _checked_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    known = set(EventKind)
    for i, kind in enumerate(kinds):
        if kind not in known:
            raise invalid(f"unknown event kind {kind!r}", "kinds", str(i))
    return tuple(sorted(set(kinds)))


async def _endpoint(session: AsyncSession, p: Principal, endpoint_id: int, lock: bool) -> Any:
    stmt = select(ENDPOINT).where(
        ENDPOINT.c.id == endpoint_id, ENDPOINT.c.organization_id == p.organization_id
    )
    row = (await session.execute(stmt.with_for_update() if lock else stmt)).one_or_none()
    if row is None:
        raise not_found("webhook endpoint", "endpointId")
    return row


async def _team_ok(session: AsyncSession, p: Principal, team_id: int | None) -> None:
    if team_id is None:
        return
    found = await session.scalar(
        text("SELECT 1 FROM team WHERE id = :id AND organization_id = :org"),
        {"id": team_id, "org": p.organization_id},
    )
    if found is None:
        raise not_found("team", "teamId")


async def _record_at_head(
    session: AsyncSession, p: Principal, event: events.Event, pk: int
) -> None:
    """Write the event, then start the endpoint after it: it gets what comes next."""
    seq = await events.record(session, p, p.organization_id, event)
    await session.execute(
        text("UPDATE webhook_endpoint SET last_seq = :seq WHERE id = :id"), {"seq": seq, "id": pk}
    )


async def create_endpoint(
    session: AsyncSession, p: Principal, cmd: CreateEndpoint, *, outbound: Outbound, box: Box
) -> Saved:
    require_admin(p)
    url = await _checked_url(outbound, cmd.url)
    kinds = _checked_kinds(cmd.kinds)
    await _team_ok(session, p, cmd.team_id)
    secret = new_secret()
    row = models.WebhookEndpoint(
        organization_id=p.organization_id,
        url=url,
        description=cmd.description,
        kinds=list(kinds),
        team_id=cmd.team_id,
        secret=box.seal(secret),
    )
    session.add(row)
    await session.flush()
    pk = models.pk_of(row)
    await _record_at_head(session, p, events.webhook_endpoint_created(pk, url, kinds), pk)
    return Saved(await _endpoint(session, p, pk, lock=False), secret)


async def update_endpoint(
    session: AsyncSession, p: Principal, cmd: UpdateEndpoint, *, outbound: Outbound
) -> Saved:
    require_admin(p)
    row = await _endpoint(session, p, cmd.endpoint_id, lock=True)
    changes: dict[str, Any] = {}
    if not isinstance(cmd.url, Keep):
        changes["url"] = await _checked_url(outbound, cmd.url)
    if not isinstance(cmd.description, Keep):
        changes["description"] = cmd.description
    if not isinstance(cmd.kinds, Keep):
        changes["kinds"] = list(_checked_kinds(cmd.kinds))
    if not isinstance(cmd.active, Keep):
        if cmd.active and row.secret is None:
            raise Rejected(
                ErrorCode.CONFLICT, "the endpoint has no secret: rotate one first", ["active"]
            )
        changes["active"] = cmd.active
        if cmd.active:
            changes |= {"disabled_reason": None, "failing_since": None}
    changes = {k: v for k, v in changes.items() if getattr(row, k) != v}
    if not changes:
        return Saved(row)
    await session.execute(ENDPOINT.update().where(ENDPOINT.c.id == row.id).values(**changes))
    shown = {k: v for k, v in changes.items() if k in ("url", "description", "kinds", "active")}
    event = events.webhook_endpoint_updated(row.id, {k: getattr(row, k) for k in shown}, shown)
    if changes.get("active") is True:  # back on: from now, not a flood of what it missed
        await _record_at_head(session, p, event, row.id)
    else:
        await events.record(session, p, p.organization_id, event)
    return Saved(await _endpoint(session, p, row.id, lock=False))


async def rotate_secret(
    session: AsyncSession, p: Principal, endpoint_id: int, *, box: Box
) -> Saved:
    """A new secret; the old one signs too for SECRET_OVERLAP."""
    require_admin(p)
    row = await _endpoint(session, p, endpoint_id, lock=True)
    secret = new_secret()
    await session.execute(
        ENDPOINT.update()
        .where(ENDPOINT.c.id == row.id)
        .values(
            secret=box.seal(secret),
            old_secret=row.secret,
            old_secret_until=func.now() + SECRET_OVERLAP if row.secret else None,
        )
    )
    event = events.webhook_endpoint_updated(row.id, {}, {"secret": "rotated"})
    await events.record(session, p, p.organization_id, event)
    return Saved(await _endpoint(session, p, row.id, lock=False), secret)


async def _new_delivery(
    session: AsyncSession, p: Principal, endpoint: Any, event_id: int | None
) -> Any:
    if endpoint.secret is None or not endpoint.active:
        raise Rejected(ErrorCode.CONFLICT, "the endpoint is not active", ["endpointId"])
    row = models.WebhookDelivery(
        organization_id=p.organization_id, endpoint_id=endpoint.id, event_id=event_id
    )
    session.add(row)
    await session.flush()
    pk = models.pk_of(row)
    # Stamped by the database's clock, as the deliveries queued from the outbox are.
    await session.execute(
        text("UPDATE webhook_delivery SET created_at = now() WHERE id = :id"), {"id": pk}
    )
    await jobs.enqueue(session, DELIVER, {"delivery_id": pk}, organization_id=p.organization_id)
    return (await session.execute(select(DELIVERY).where(DELIVERY.c.id == pk))).one()


async def redeliver(session: AsyncSession, p: Principal, delivery_id: int) -> Any:
    """A new delivery of the same event (the same `webhook-id`)."""
    require_admin(p)
    old = (
        await session.execute(
            select(DELIVERY).where(
                DELIVERY.c.id == delivery_id, DELIVERY.c.organization_id == p.organization_id
            )
        )
    ).one_or_none()
    if old is None:
        raise not_found("webhook delivery", "deliveryId")
    endpoint = await _endpoint(session, p, old.endpoint_id, lock=False)
    return await _new_delivery(session, p, endpoint, old.event_id)


async def ping(session: AsyncSession, p: Principal, endpoint_id: int) -> Any:
    require_admin(p)
    endpoint = await _endpoint(session, p, endpoint_id, lock=False)
    return await _new_delivery(session, p, endpoint, None)


# --- queueing from the outbox -------------------------------------------------------------

_BEHIND = text(
    """
    SELECT e.id, e.organization_id, e.team_id, e.kinds, e.last_seq, o.event_seq AS head
    FROM webhook_endpoint e JOIN organization o ON o.id = e.organization_id
    WHERE e.active AND e.secret IS NOT NULL AND e.last_seq < o.event_seq
    ORDER BY e.id
    LIMIT 50
    FOR UPDATE OF e SKIP LOCKED
    """
)
_QUEUE = text(
    """
    WITH d AS (
        INSERT INTO webhook_delivery (organization_id, endpoint_id, event_id)
        SELECT :org, :endpoint, u.id FROM unnest(CAST(:events AS bigint[])) AS u(id)
        RETURNING id
    )
    INSERT INTO job (kind, organization_id, payload)
    SELECT :kind, :org, jsonb_build_object('delivery_id', d.id) FROM d
    """
)


async def fan_out(db: Database) -> int:
    """Queue deliveries for the events committed since each endpoint's position."""

    async def work(session: AsyncSession) -> int:
        queued = 0
        for e in (await session.execute(_BEHIND)).all():
            upto = min(e.head, e.last_seq + BATCH)
            wanted = select(EVENT.c.id).where(
                EVENT.c.organization_id == e.organization_id,
                EVENT.c.seq > e.last_seq,
                EVENT.c.seq <= upto,
                visible_events(principal_of(e.organization_id, e.team_id), EVENT),
            )
            if e.kinds:
                wanted = wanted.where(EVENT.c.kind.in_(list(e.kinds)))
            found = list((await session.scalars(wanted.order_by(EVENT.c.seq))).all())
            if found:
                await session.execute(
                    _QUEUE,
                    {"org": e.organization_id, "endpoint": e.id, "events": found, "kind": DELIVER},
                )
            await session.execute(
                text("UPDATE webhook_endpoint SET last_seq = :seq WHERE id = :id"),
                {"seq": upto, "id": e.id},
            )
            queued += len(found)
        return queued

    return await db.transaction(work)


# --- one attempt --------------------------------------------------------------------------

_ATTEMPT = text(
    """
    SELECT d.id, d.organization_id, d.endpoint_id, d.event_id, d.status, d.attempts,
           d.created_at, e.url, e.active, e.secret, e.old_secret, e.old_secret_until,
           v.seq, v.kind, v.occurred_at, v.actor_user_id, v.subject_type, v.subject_id,
           v.payload, now() AS db_now
    FROM webhook_delivery d
    JOIN webhook_endpoint e ON e.id = d.endpoint_id
    LEFT JOIN event v ON v.id = d.event_id
    WHERE d.id = :id
    """
)
_RESULT = text(
    """
    UPDATE webhook_delivery
    SET status = :status, attempts = attempts + 1, last_attempt_at = :now,
        next_attempt_at = :next, response_status = :code, response_body = :body,
        duration_ms = :ms
    WHERE id = :id
    """
)


def body_of(row: Any, now: datetime) -> tuple[str, bytes]:
    """The `webhook-id` and body of a delivery (see the contract's settled points)."""
    if row.event_id is None:
        ping = {
            "type": "ping",
            "timestamp": now.isoformat(),
            "data": {"endpoint": global_id("WebhookEndpoint", row.endpoint_id)},
        }
        return f"ping_{row.id}", json.dumps(ping).encode()
    payload = row.payload or {}
    data = {
        "cursor": cursor_of(row.seq),
        "sequence": row.seq,
        "kind": row.kind,
        "occurredAt": row.occurred_at.isoformat(),
        "actorId": global_id("User", row.actor_user_id) if row.actor_user_id else None,
        "subject": {
            "typename": row.subject_type,
            "id": global_id(row.subject_type, row.subject_id),
        },
        "before": payload.get("before"),
        "after": payload.get("after"),
    }
    body = {"type": row.kind, "timestamp": now.isoformat(), "data": data}
    return cursor_of(row.seq), json.dumps(body).encode()


def deliverer(
    db: Database, settings: Settings, outbound: Outbound, box: Box
) -> Callable[[Job], Awaitable[None]]:
    base = settings.webhook_retry_base_seconds
    window = timedelta(seconds=settings.webhook_disable_after_seconds)

    async def deliver(job: Job) -> None:
        delivery_id = int(job.payload["delivery_id"])
        async with db.sessions() as s:
            row = (await s.execute(_ATTEMPT, {"id": delivery_id})).one_or_none()
        if row is None or row.status in (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED):
            return  # gone with its endpoint, or settled by an earlier run
        # Retries, windows and the secrets' overlap run on the database's clock (the one
        # every process shares, which stamped the delivery); the signature's timestamp is
        # this host's wall clock, as the receiver's tolerance expects.
        now = row.db_now
        if not row.active or row.secret is None:
            await _settle(db, row, DeliveryStatus.FAILED, now, None, None, "endpoint not active")
            return
        wall = datetime.now(UTC)
        msg_id, body = body_of(row, wall)
        stamp = int(wall.timestamp())
        signatures = [sign(box.open(row.secret), msg_id, stamp, body)]
        if row.old_secret and row.old_secret_until and row.old_secret_until > now:
            signatures.append(sign(box.open(row.old_secret), msg_id, stamp, body))
        headers = {
            "content-type": "application/json",
            "user-agent": "okr-service-webhooks",
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": " ".join(signatures),
        }
        code: int | None = None
        text_body: str | None = None
        ms: float | None = None
        try:
            answer = await outbound.request("POST", row.url, headers=headers, content=body)
            code, ms = answer.status, answer.duration_ms
            text_body = answer.body[:BODY_CUT].decode("utf-8", "replace")
        except (OutboundFailed, UnsafeTarget) as exc:
            text_body = str(exc)[:BODY_CUT]
        ok = code is not None and 200 <= code < 300
        if ok:
            await _settle(db, row, DeliveryStatus.SUCCEEDED, now, code, ms, text_body)
            return
        give_up = row.event_id is None or now - row.created_at >= window
        next_at = (
            None
            if give_up
            else now + timedelta(seconds=jobs.backoff(row.attempts + 1, base, MAX_BACKOFF))
        )
        status = DeliveryStatus.FAILED if give_up else DeliveryStatus.RETRYING
        await _settle(db, row, status, now, code, ms, text_body, next_at, window)
        if next_at is not None:
            raise Retry(next_at, f"attempt {row.attempts + 1} failed")

    return deliver


async def _settle(
    db: Database,
    row: Any,
    status: DeliveryStatus,
    now: datetime,
    code: int | None,
    ms: float | None,
    body: str | None,
    next_at: datetime | None = None,
    window: timedelta | None = None,
) -> None:
    """Log the attempt; keep the endpoint's failing streak; disable it past the window."""

    async def work(s: AsyncSession) -> None:
        params = {"id": row.id, "status": str(status), "now": now, "next": next_at}
        await s.execute(_RESULT, {**params, "code": code, "body": body, "ms": ms})
        if status == DeliveryStatus.SUCCEEDED:
            await s.execute(
                text("UPDATE webhook_endpoint SET failing_since = NULL WHERE id = :id"),
                {"id": row.endpoint_id},
            )
            return
        if window is None:
            return
        since = await s.scalar(
            text(
                "UPDATE webhook_endpoint SET failing_since = coalesce(failing_since, :since) "
                "WHERE id = :id AND active RETURNING failing_since"
            ),
            # The streak began when the failing delivery was due: a delivery that gave up
            # after the whole window means the endpoint failed for all of it.
            {"id": row.endpoint_id, "since": min(now, row.created_at)},
        )
        if since is not None and now - since >= window:
            reason = f"every delivery failed for {window.total_seconds() / 86400:g} days"
            disabled = await s.scalar(
                text(
                    "UPDATE webhook_endpoint SET active = false, disabled_reason = :reason "
                    "WHERE id = :id AND active RETURNING id"
                ),
                {"id": row.endpoint_id, "reason": reason},
            )
            if disabled is not None:
                event = events.webhook_disabled(row.endpoint_id, reason)
                await events.record(s, None, row.organization_id, event)

    await db.transaction(work)
