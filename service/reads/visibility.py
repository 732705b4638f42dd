"""Who may see what (docs/design.md, "Access"): one rule for objectives and one for events,
each as a SQL predicate, with the objective rule's Python twin for rows already loaded.

Objectives. ADMIN: all of them. Otherwise PUBLIC ones, the ones the caller owns, and
TEAM ones of the caller's teams. PRIVATE: the owner and admins. The predicate is
written positively ("visible"), every term NULL-safe (IS NOT DISTINCT FROM, coalesce):
an objective without an owner or team is not "not hidden", it is simply not matched.
Never negate it: NOT of a predicate is where a NULL fails open.

Events. An event is shown when its subject may be seen:
- Objective, KeyResult, CheckIn, Comment: by the visibility of the objective they
  belong to (a key result's, a check-in's key result's, a comment's objective or key
  result's);
- Organization, Cycle, Team, User, Metric: org-wide things, every caller of the organization;
- ApiKey, WebhookEndpoint, and any subject type not named here: admins only (a new
  kind of event stays hidden until someone decides who may read it);
- and, whatever the subject, the kinds in ADMIN_ONLY_KINDS: admins only
  (ORGANIZATION_IMPORTED is about the Organization, but says how it was loaded).
Progress changes inside a shown event that touch hidden objectives are dropped when the
event is shaped (schema/types/common.py progress_changes). The feed, its totalCount,
node(Event), history and both subscriptions use this one predicate.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, or_, select, true

from service import models
from service.domain.principal import Principal

_TABLES = models.metadata.tables
OBJECTIVE = _TABLES["objective"]
KEY_RESULT = _TABLES["key_result"]
CHECK_IN = _TABLES["check_in"]
COMMENT = _TABLES["comment"]
EVENT = _TABLES["event"]

ORG_WIDE_SUBJECTS = ("Organization", "Cycle", "Team", "User", "Metric")
OBJECTIVE_SUBJECTS = ("Objective", "KeyResult", "CheckIn", "Comment")
ADMIN_ONLY_SUBJECTS = ("ApiKey", "WebhookEndpoint")
ADMIN_ONLY_KINDS = ("ORGANIZATION_IMPORTED",)


def can_see_objective(
    p: Principal, visibility: str | None, team_id: int | None, owner_id: int | None
) -> bool:
    """The objective rule over a loaded row's columns (the twin of `visible_objectives`)."""
    if p.is_admin or visibility == "PUBLIC":
        return True
    if p.user_id is not None and owner_id is not None and owner_id == p.user_id:
        return True
    return visibility == "TEAM" and team_id is not None and team_id in p.team_ids


def visible_objectives(p: Principal, table: Any = OBJECTIVE) -> ColumnElement[bool]:
    """The objective rule as a SQL predicate over `table` (objective or an alias of it):
    never NULL, whatever the row holds."""
    if p.is_admin:
        return true()
    clauses: list[ColumnElement[bool]] = [table.c.visibility.is_not_distinct_from("PUBLIC")]
    if p.user_id is not None:
        clauses.append(table.c.owner_id.is_not_distinct_from(p.user_id))
    if p.team_ids:
        clauses.append(
            func.coalesce(
                and_(
                    table.c.visibility.is_not_distinct_from("TEAM"),
                    table.c.team_id.in_(sorted(p.team_ids)),
                ),
                false(),
            )
        )
    return or_(*clauses)


def visible_events(p: Principal, event: Any = EVENT) -> ColumnElement[bool]:
    """The event rule as a SQL predicate over `event` (see the module doc). The tables it
    looks into are aliased, so it correlates with the outer query's event table only,
    whatever else that query joins."""
    if p.is_admin:
        return true()
    o = OBJECTIVE.alias("seen_objective")
    k = KEY_RESULT.alias("seen_key_result")
    c = CHECK_IN.alias("seen_check_in")
    m = COMMENT.alias("seen_comment")
    seen = visible_objectives(p, o)
    org = event.c.organization_id
    subject = event.c.subject_id
    objective = exists(
        select(1).select_from(o).where(o.c.id == subject, o.c.organization_id == org, seen)
    )
    key_result = exists(
        select(1)
        .select_from(k.join(o, o.c.id == k.c.objective_id))
        .where(k.c.id == subject, k.c.organization_id == org, seen)
    )
    check_in = exists(
        select(1)
        .select_from(c.join(k, k.c.id == c.c.key_result_id).join(o, o.c.id == k.c.objective_id))
        .where(c.c.id == subject, c.c.organization_id == org, seen)
    )
    comment = exists(
        select(1)
        .select_from(
            m.outerjoin(k, k.c.id == m.c.key_result_id).join(
                o, o.c.id == func.coalesce(m.c.objective_id, k.c.objective_id)
            )
        )
        .where(m.c.id == subject, m.c.organization_id == org, seen)
    )
    kind = event.c.subject_type
    return or_(
        and_(kind.in_(ORG_WIDE_SUBJECTS), event.c.kind.not_in(ADMIN_ONLY_KINDS)),
        and_(kind == "Objective", objective),
        and_(kind == "KeyResult", key_result),
        and_(kind == "CheckIn", check_in),
        and_(kind == "Comment", comment),
    )


async def hidden_owners(conn: Any, organization_id: int) -> frozenset[int]:
    """Who owns an objective that is not PUBLIC (a NULL visibility counts as hidden): the
    members whose view of a shared subscription stream may differ from their class's
    (schema/broadcast.py). One statement."""
    statement = (
        select(OBJECTIVE.c.owner_id)
        .where(
            OBJECTIVE.c.organization_id == organization_id,
            OBJECTIVE.c.owner_id.is_not(None),
            OBJECTIVE.c.visibility.is_distinct_from("PUBLIC"),
        )
        .distinct()
    )
    return frozenset(r[0] for r in (await conn.execute(statement)).all())
