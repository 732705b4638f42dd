"""The outbox. Every use case writes one event row in its own transaction, as its
last statement: the organization's row is bumped and locked until commit, so the
per-organization sequence has no gaps and follows commit order. The NOTIFY in the
same statement is delivered on commit and only wakes the replicas; the row is the
truth. `occurred_at` is the clock at this last statement, a hair before the commit."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.domain.enums import EventKind
from service.domain.principal import Principal

CHANNEL = "okr_events"


_RECORD = text(
    """
    WITH s AS (
        UPDATE organization SET event_seq = event_seq + 1 WHERE id = :org RETURNING event_seq
    ), e AS (
        INSERT INTO event (organization_id, seq, kind, actor_user_id, actor_api_key_id,
                           subject_type, subject_id, check_in_id, payload, occurred_at)
        SELECT :org, s.event_seq, :kind, :user_id, :api_key_id, :subject_type, :subject_id,
               :check_in_id, CAST(:payload AS jsonb), clock_timestamp()
        FROM s
        RETURNING seq
    )
    SELECT e.seq, pg_notify(:channel, CAST(:org AS text) || ':' || e.seq) FROM e
    """
)


async def record(
    session: AsyncSession,
    actor: Principal | None,
    organization_id: int,
    kind: EventKind,
    subject_type: str,
    subject_id: int,
    payload: dict[str, Any] | None = None,
    check_in_id: int | None = None,
) -> int:
    """Write the event; call it last in the transaction. Returns its sequence number."""
    result = await session.execute(
        _RECORD,
        {
            "org": organization_id,
            "kind": str(kind),
            "user_id": actor.user_id if actor else None,
            "api_key_id": actor.api_key_id if actor else None,
            "subject_type": subject_type,
            "subject_id": subject_id,
            "check_in_id": check_in_id,
            "payload": json.dumps(payload or {}),
            "channel": CHANNEL,
        },
    )
    return result.scalar_one()
