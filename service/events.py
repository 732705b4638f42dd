"""The outbox. Every use case writes one event row in its own transaction, as its
last statement: the organization's row is bumped and locked until commit, so the
per-organization sequence has no gaps and follows commit order. The NOTIFY in the
same statement is delivered on commit and only wakes the replicas; the row is the
truth. `occurred_at` is the clock at this last statement, a hair before the commit."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.auth import Principal

CHANNEL = "okr_events"


class EventKind(StrEnum):
    ORGANIZATION_CREATED = "ORGANIZATION_CREATED"
    USER_CREATED = "USER_CREATED"
    TEAM_CREATED = "TEAM_CREATED"
    TEAM_MEMBER_ADDED = "TEAM_MEMBER_ADDED"
    TEAM_MEMBER_REMOVED = "TEAM_MEMBER_REMOVED"
    USER_DEACTIVATED = "USER_DEACTIVATED"
    CYCLE_CREATED = "CYCLE_CREATED"
    CYCLE_STATUS_CHANGED = "CYCLE_STATUS_CHANGED"
    OBJECTIVE_CREATED = "OBJECTIVE_CREATED"
    OBJECTIVE_UPDATED = "OBJECTIVE_UPDATED"
    OBJECTIVE_ALIGNED = "OBJECTIVE_ALIGNED"
    OBJECTIVE_ARCHIVED = "OBJECTIVE_ARCHIVED"
    OBJECTIVE_REFLECTED = "OBJECTIVE_REFLECTED"
    KEY_RESULT_CREATED = "KEY_RESULT_CREATED"
    KEY_RESULT_UPDATED = "KEY_RESULT_UPDATED"
    KEY_RESULT_SCORED = "KEY_RESULT_SCORED"
    CHECK_IN = "CHECK_IN"
    COMMENT_ADDED = "COMMENT_ADDED"
    OBJECTIVE_CARRIED_OVER = "OBJECTIVE_CARRIED_OVER"
    CHECK_IN_DUE = "CHECK_IN_DUE"
    CYCLE_REVIEW_DUE = "CYCLE_REVIEW_DUE"
    CHECK_IN_CADENCE_CHANGED = "CHECK_IN_CADENCE_CHANGED"
    API_KEY_CREATED = "API_KEY_CREATED"
    API_KEY_REVOKED = "API_KEY_REVOKED"
    METRIC_CREATED = "METRIC_CREATED"
    KEY_RESULT_BOUND = "KEY_RESULT_BOUND"
    MEASUREMENTS_RECORDED = "MEASUREMENTS_RECORDED"


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
