"""The outbox. Every use case writes one event row in its own transaction, as its
last statement: the organization's row is bumped and locked until commit, so the
per-organization sequence has no gaps and follows commit order. The NOTIFY in the
same statement is delivered on commit and only wakes the replicas; the row is the
truth. `occurred_at` is the OKR clock (service/clock.py) as this last statement is sent."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service import clock
from service.domain.enums import EventKind, SubjectType
from service.domain.principal import Principal

CHANNEL = "okr_events"

# The payload keys of the scope. Rows already stored spell them so; they never change.
_OBJECTIVES, _TEAMS, _CYCLES = "objective_ids", "team_ids", "cycle_ids"


@dataclass(frozen=True)
class Scope:
    """Which objectives, teams and cycles an event concerns (subscriptions filter on it).

    Stored in the payload as three id lists. A list that an event kind never carries is
    None here and absent from the payload; `parse` reads an absent key as empty."""

    objective_ids: tuple[int, ...] | None = None
    team_ids: tuple[int, ...] | None = None
    cycle_ids: tuple[int, ...] | None = None

    @classmethod
    def of_objective(cls, objective_id: int, team_id: int | None, cycle_id: int) -> Scope:
        return cls((objective_id,), _one(team_id), (cycle_id,))

    @classmethod
    def parse(cls, payload: Mapping[str, Any] | None) -> Scope:
        """The scope of a stored payload: the one place the keys are read."""
        payload = payload or {}
        return cls(
            tuple(payload.get(_OBJECTIVES) or ()),
            tuple(payload.get(_TEAMS) or ()),
            tuple(payload.get(_CYCLES) or ()),
        )

    def as_payload(self) -> dict[str, list[int]]:
        named = (
            (_OBJECTIVES, self.objective_ids),
            (_TEAMS, self.team_ids),
            (_CYCLES, self.cycle_ids),
        )
        return {key: list(ids) for key, ids in named if ids is not None}

    def covers(self, objective: int | None, team: int | None, cycle: int | None) -> bool:
        """Whether a subscription filtered on these ids (None: any) wants the event."""
        return (
            (objective is None or objective in (self.objective_ids or ()))
            and (team is None or team in (self.team_ids or ()))
            and (cycle is None or cycle in (self.cycle_ids or ()))
        )


def _one(team_id: int | None) -> tuple[int, ...]:
    return (team_id,) if team_id else ()


@dataclass(frozen=True)
class Event:
    """One outbox row to write: what happened (`kind`), to what, and its payload, which
    is `details` plus the scope's lists (the shapes of docs/design.md, "Events")."""

    kind: EventKind
    subject_type: SubjectType
    subject_id: int
    details: Mapping[str, Any] = field(default_factory=dict)
    scope: Scope = Scope()
    check_in_id: int | None = None

    def payload(self) -> dict[str, Any]:
        return {**self.details, **self.scope.as_payload()}


Changes = Sequence[Mapping[str, Any]]  # progress changes, leaf to root (service/rollup.py)


def _rolled(changes: Changes) -> dict[str, Any]:
    return {"changes": list(changes)}


_RECORD = text(
    """
    WITH s AS (
        UPDATE organization SET event_seq = event_seq + 1 WHERE id = :org RETURNING event_seq
    ), e AS (
        INSERT INTO event (organization_id, seq, kind, actor_user_id, actor_api_key_id,
                           subject_type, subject_id, check_in_id, payload, occurred_at)
        SELECT :org, s.event_seq, :kind, :user_id, :api_key_id, :subject_type, :subject_id,
               :check_in_id, CAST(:payload AS jsonb), :occurred_at
        FROM s
        RETURNING seq
    )
    SELECT e.seq, pg_notify(:channel, CAST(:org AS text) || ':' || e.seq) FROM e
    """
)


async def record(
    session: AsyncSession, actor: Principal | None, organization_id: int, event: Event
) -> int:
    """Write the event; call it last in the transaction. Returns its sequence number."""
    result = await session.execute(_RECORD, {"org": organization_id, **parameters(actor, event)})
    return result.scalar_one()


# Several events of one transaction in one statement: the sequence moves by their number
# once, and each takes the next number in the order given (each notified, as `record`).
_RECORD_ALL = text(
    """
    WITH s AS (
        UPDATE organization SET event_seq = event_seq + :n WHERE id = :org RETURNING event_seq
    ), e AS (
        INSERT INTO event (organization_id, seq, kind, actor_user_id, actor_api_key_id,
                           subject_type, subject_id, check_in_id, payload, occurred_at)
        SELECT :org, s.event_seq - :n + u.n, u.kind, :user_id, :api_key_id, u.subject_type,
               u.subject_id, u.check_in_id, CAST(u.payload AS jsonb), :occurred_at
        FROM s, unnest(CAST(:kind AS text[]), CAST(:subject_type AS text[]),
                       CAST(:subject_id AS bigint[]), CAST(:check_in_id AS bigint[]),
                       CAST(:payload AS text[]))
                WITH ORDINALITY AS u(kind, subject_type, subject_id, check_in_id, payload, n)
        RETURNING seq
    )
    SELECT e.seq, pg_notify(:channel, CAST(:org AS text) || ':' || e.seq) FROM e ORDER BY e.seq
    """
)


async def record_all(
    session: AsyncSession, actor: Principal | None, organization_id: int, events: list[Event]
) -> list[int]:
    """`record` for several events at once, in this order, in one round trip (a batch's
    events, written while its locks are held). Returns their sequence numbers."""
    if not events:
        return []
    rows = [parameters(actor, e) for e in events]
    first = rows[0]
    result = await session.execute(
        _RECORD_ALL,
        {
            "org": organization_id,
            "n": len(rows),
            "user_id": first["user_id"],
            "api_key_id": first["api_key_id"],
            "occurred_at": first["occurred_at"],
            "channel": first["channel"],
            "kind": [r["kind"] for r in rows],
            "subject_type": [r["subject_type"] for r in rows],
            "subject_id": [r["subject_id"] for r in rows],
            "check_in_id": [r["check_in_id"] for r in rows],
            "payload": [r["payload"] for r in rows],
        },
    )
    return [row.seq for row in result]


def parameters(actor: Principal | None, event: Event) -> dict[str, Any]:
    """The outbox row's bound parameters, for `record` and for a write that folds the
    event into its own statement (the check-in's, service/usecases/key_results.py)."""
    return {
        "kind": str(event.kind),
        "user_id": actor.user_id if actor else None,
        "api_key_id": actor.api_key_id if actor else None,
        "subject_type": str(event.subject_type),
        "subject_id": event.subject_id,
        "check_in_id": event.check_in_id,
        "payload": json.dumps(event.payload()),
        "channel": CHANNEL,
        "occurred_at": clock.now(),
    }


# --- one constructor per kind ---------------------------------------------------------

K, S = EventKind, SubjectType


def organization_created(org_id: int, name: str, slug: str, admin_user_id: int) -> Event:
    details = {"name": name, "slug": slug, "admin_user_id": admin_user_id}
    return Event(K.ORGANIZATION_CREATED, S.ORGANIZATION, org_id, details)


def organization_imported(org_id: int, name: str, slug: str, counts: Mapping[str, int]) -> Event:
    """An organization loaded from an export document (`okr import`); `counts`: rows
    per section of the document. Visible to admins only (service/reads/visibility.py)."""
    details = {"name": name, "slug": slug, "counts": dict(counts)}
    return Event(K.ORGANIZATION_IMPORTED, S.ORGANIZATION, org_id, details)


def user_created(user_id: int, email: str, role: str, source: str | None = None) -> Event:
    details = {"email": email, "role": role} | ({"source": source} if source else {})
    return Event(K.USER_CREATED, S.USER, user_id, details)


def user_deactivated(user_id: int, email: str) -> Event:
    return Event(K.USER_DEACTIVATED, S.USER, user_id, {"email": email})


def team_created(team_id: int, name: str, parent_id: int | None) -> Event:
    details = {"name": name, "parent_id": parent_id}
    return Event(K.TEAM_CREATED, S.TEAM, team_id, details, Scope(team_ids=(team_id,)))


def team_member_added(team_id: int, user_id: int) -> Event:
    scope = Scope(team_ids=(team_id,))
    return Event(K.TEAM_MEMBER_ADDED, S.TEAM, team_id, {"user_id": user_id}, scope)


def team_member_removed(team_id: int, user_id: int) -> Event:
    scope = Scope(team_ids=(team_id,))
    return Event(K.TEAM_MEMBER_REMOVED, S.TEAM, team_id, {"user_id": user_id}, scope)


def check_in_cadence_changed(org_id: int, team_id: int | None, days: int | None) -> Event:
    subject = (S.TEAM, team_id) if team_id else (S.ORGANIZATION, org_id)
    scope = Scope(team_ids=_one(team_id))
    return Event(K.CHECK_IN_CADENCE_CHANGED, *subject, {"days": days}, scope)


def api_key_created(key_id: int, name: str) -> Event:
    return Event(K.API_KEY_CREATED, S.API_KEY, key_id, {"name": name})


def api_key_revoked(key_id: int, name: str) -> Event:
    return Event(K.API_KEY_REVOKED, S.API_KEY, key_id, {"name": name})


def cycle_created(cycle_id: int, name: str) -> Event:
    scope = Scope(cycle_ids=(cycle_id,))
    return Event(K.CYCLE_CREATED, S.CYCLE, cycle_id, {"name": name}, scope)


def cycle_status_changed(cycle_id: int, old: str, new: str, rolled: Scope | None) -> Event:
    """`rolled`: the objectives rolled up when the cycle entered REVIEW, else None."""
    scope = Scope(
        rolled.objective_ids if rolled else None,
        rolled.team_ids if rolled else None,
        (cycle_id,),
    )
    return Event(K.CYCLE_STATUS_CHANGED, S.CYCLE, cycle_id, {"from": old, "to": new}, scope)


def cycle_review_due(cycle_id: int, name: str, ends_on: str) -> Event:
    scope = Scope(cycle_ids=(cycle_id,))
    details = {"name": name, "ends_on": ends_on}
    return Event(K.CYCLE_REVIEW_DUE, S.CYCLE, cycle_id, details, scope)


def objective_created(objective_id: int, title: str, changes: Changes, scope: Scope) -> Event:
    details = {"title": title, **_rolled(changes)}
    return Event(K.OBJECTIVE_CREATED, S.OBJECTIVE, objective_id, details, scope)


def objective_updated(
    objective_id: int,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    scope: Scope,
    changes: Changes | None = None,
) -> Event:
    """`changes`: the roll-up when the weight changed under a parent, else None."""
    details = {"before": before, "after": after} | (_rolled(changes) if changes is not None else {})
    return Event(K.OBJECTIVE_UPDATED, S.OBJECTIVE, objective_id, details, scope)


def objective_aligned(
    objective_id: int,
    old_parent: int | None,
    new_parent: int | None,
    changes: Changes,
    scope: Scope,
) -> Event:
    details = {"from": old_parent, "to": new_parent, **_rolled(changes)}
    return Event(K.OBJECTIVE_ALIGNED, S.OBJECTIVE, objective_id, details, scope)


def objective_archived(objective_id: int, changes: Changes, scope: Scope) -> Event:
    return Event(K.OBJECTIVE_ARCHIVED, S.OBJECTIVE, objective_id, _rolled(changes), scope)


def objective_reflected(objective_id: int, reflection: Mapping[str, Any], scope: Scope) -> Event:
    return Event(K.OBJECTIVE_REFLECTED, S.OBJECTIVE, objective_id, dict(reflection), scope)


def objective_carried_over(
    objective_id: int,
    source_id: int,
    to_cycle: int,
    key_results: Mapping[int, int],
    changes: Changes,
    scope: Scope,
) -> Event:
    details = {
        "from": source_id,
        "to_cycle": to_cycle,
        "key_results": {str(k): v for k, v in key_results.items()},
        **_rolled(changes),
    }
    return Event(K.OBJECTIVE_CARRIED_OVER, S.OBJECTIVE, objective_id, details, scope)


def key_result_created(kr_id: int, title: str, changes: Changes, scope: Scope) -> Event:
    details = {"title": title, **_rolled(changes)}
    return Event(K.KEY_RESULT_CREATED, S.KEY_RESULT, kr_id, details, scope)


def key_result_updated(
    kr_id: int, before: Mapping[str, Any], after: Mapping[str, Any], changes: Changes, scope: Scope
) -> Event:
    details = {"before": before, "after": after, **_rolled(changes)}
    return Event(K.KEY_RESULT_UPDATED, S.KEY_RESULT, kr_id, details, scope)


def key_result_scored(
    kr_id: int, before: float | None, score: float, reason: str | None, scope: Scope
) -> Event:
    details = {"before": before, "score": score, "reason": reason}
    return Event(K.KEY_RESULT_SCORED, S.KEY_RESULT, kr_id, details, scope)


def key_result_bound(kr_id: int, before: int | None, after: int | None, scope: Scope) -> Event:
    details = {"before": {"metric_id": before}, "after": {"metric_id": after}}
    return Event(K.KEY_RESULT_BOUND, S.KEY_RESULT, kr_id, details, scope)


def checked_in(
    kr_id: int,
    check_in_id: int,
    value: float,
    changes: Changes,
    scope: Scope,
    check_ins: int | None = None,
) -> Event:
    """A check-in by hand, or (`check_ins`: how many) from a metric's measurements."""
    details: dict[str, Any] = {"value": value}
    if check_ins is not None:
        details["check_ins"] = check_ins
    details.update(_rolled(changes))
    return Event(K.CHECK_IN, S.KEY_RESULT, kr_id, details, scope, check_in_id=check_in_id)


def check_in_retracted(
    kr_id: int,
    check_in_id: int,
    value: float,
    reason: str,
    changes: Changes,
    scope: Scope,
    check_ins: int | None = None,
) -> Event:
    """A check-in retracted by hand, or (`check_ins`: how many on this key result) with
    the measurement it was made from. `value`: the retracted value."""
    details: dict[str, Any] = {"value": value, "reason": reason}
    if check_ins is not None:
        details["check_ins"] = check_ins
    details.update(_rolled(changes))
    return Event(K.CHECK_IN_RETRACTED, S.KEY_RESULT, kr_id, details, scope, check_in_id=check_in_id)


def check_in_corrected(
    kr_id: int,
    check_in_id: int,
    corrected_id: int,
    value: float,
    reason: str,
    changes: Changes,
    scope: Scope,
) -> Event:
    """A correction: `check_in_id` is the new check-in, `corrected_id` the one it
    retracted (one event; no CHECK_IN_RETRACTED beside it)."""
    details: dict[str, Any] = {"value": value, "corrected": corrected_id, "reason": reason}
    details.update(_rolled(changes))
    return Event(K.CHECK_IN_CORRECTED, S.KEY_RESULT, kr_id, details, scope, check_in_id=check_in_id)


def check_in_due(kr_id: int, due: str, scope: Scope) -> Event:
    return Event(K.CHECK_IN_DUE, S.KEY_RESULT, kr_id, {"due": due}, scope)


def comment_added(comment_id: int, key_result_id: int | None, scope: Scope) -> Event:
    details = {"key_result_id": key_result_id}
    return Event(K.COMMENT_ADDED, S.COMMENT, comment_id, details, scope)


def metric_created(metric_id: int, key: str, name: str, unit: str | None) -> Event:
    details = {"key": key, "name": name, "unit": unit}
    return Event(K.METRIC_CREATED, S.METRIC, metric_id, details)


def measurements_recorded(
    metric_id: int, key: str, count: int, latest_value: float, latest_at: str
) -> Event:
    details = {
        "key": key,
        "count": count,
        "latest": {"value": latest_value, "measured_at": latest_at},
    }
    return Event(K.MEASUREMENTS_RECORDED, S.METRIC, metric_id, details)


# --- administration -------------------------------------------------------------------


def team_updated(team_id: int, before: Mapping[str, Any], after: Mapping[str, Any]) -> Event:
    details = {"before": dict(before), "after": dict(after)}
    return Event(K.TEAM_UPDATED, S.TEAM, team_id, details, Scope(team_ids=(team_id,)))


def team_archived(team_id: int, name: str) -> Event:
    return Event(K.TEAM_ARCHIVED, S.TEAM, team_id, {"name": name}, Scope(team_ids=(team_id,)))


def cycle_updated(cycle_id: int, before: Mapping[str, Any], after: Mapping[str, Any]) -> Event:
    details = {"before": dict(before), "after": dict(after)}
    return Event(K.CYCLE_UPDATED, S.CYCLE, cycle_id, details, Scope(cycle_ids=(cycle_id,)))


def user_updated(user_id: int, before: Mapping[str, Any], after: Mapping[str, Any]) -> Event:
    """`before` and `after` hold the fields that changed (name, email, role)."""
    return Event(K.USER_UPDATED, S.USER, user_id, {"before": dict(before), "after": dict(after)})


def user_reactivated(user_id: int, email: str) -> Event:
    return Event(K.USER_REACTIVATED, S.USER, user_id, {"email": email})


def user_anonymized(user_id: int) -> Event:
    """Names nothing of the person: the point of it is that they are gone."""
    return Event(K.USER_ANONYMIZED, S.USER, user_id, {})


def key_result_archived(kr_id: int, changes: Changes, scope: Scope) -> Event:
    return Event(K.KEY_RESULT_ARCHIVED, S.KEY_RESULT, kr_id, _rolled(changes), scope)


def objective_unarchived(objective_id: int, changes: Changes, scope: Scope) -> Event:
    return Event(K.OBJECTIVE_UNARCHIVED, S.OBJECTIVE, objective_id, _rolled(changes), scope)


def metric_updated(metric_id: int, before: Mapping[str, Any], after: Mapping[str, Any]) -> Event:
    details = {"before": dict(before), "after": dict(after)}
    return Event(K.METRIC_UPDATED, S.METRIC, metric_id, details)


def metric_archived(metric_id: int, key: str, unbound: Sequence[int]) -> Event:
    details = {"key": key, "unbound_key_result_ids": list(unbound)}
    return Event(K.METRIC_ARCHIVED, S.METRIC, metric_id, details)


def measurement_retracted(
    metric_id: int, key: str, measured_at: str, count: int, check_ins: int, reason: str
) -> Event:
    """`count` measurements at `measured_at` retracted, with the `check_ins` they made."""
    details = {
        "key": key,
        "measured_at": measured_at,
        "count": count,
        "check_ins": check_ins,
        "reason": reason,
    }
    return Event(K.MEASUREMENT_RETRACTED, S.METRIC, metric_id, details)


def webhook_endpoint_created(endpoint_id: int, url: str, kinds: Sequence[str]) -> Event:
    details = {"url": url, "kinds": list(kinds)}
    return Event(K.WEBHOOK_ENDPOINT_CREATED, S.WEBHOOK_ENDPOINT, endpoint_id, details)


def webhook_endpoint_updated(
    endpoint_id: int, before: Mapping[str, Any], after: Mapping[str, Any]
) -> Event:
    details = {"before": dict(before), "after": dict(after)}
    return Event(K.WEBHOOK_ENDPOINT_UPDATED, S.WEBHOOK_ENDPOINT, endpoint_id, details)


def webhook_disabled(endpoint_id: int, reason: str) -> Event:
    return Event(K.WEBHOOK_DISABLED, S.WEBHOOK_ENDPOINT, endpoint_id, {"reason": reason})


def metric_source_failed(metric_id: int, key: str, error: str) -> Event:
    return Event(K.METRIC_SOURCE_FAILED, S.METRIC, metric_id, {"key": key, "error": error})


def metric_source_recovered(metric_id: int, key: str, value: float) -> Event:
    return Event(K.METRIC_SOURCE_RECOVERED, S.METRIC, metric_id, {"key": key, "value": value})
