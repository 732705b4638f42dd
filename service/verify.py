"""`okr verify`: recompute every stored number from the raw values and report what differs.

Key results from their definition and latest check-in not retracted (a retracted one
is kept, marked, and counts for nothing); objectives bottom-up over the whole alignment
tree. A clean run proves the roll-ups lost no update.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.domain import rules
from service.domain.enums import KeyResultType
from service.domain.rules import Part

TOLERANCE = 1e-9

_KEY_RESULTS = text(
    """
    SELECT k.id, k.organization_id, k.objective_id, k.type, k.start_value, k.target_value,
           k.current_value, k.progress, k.weight, k.score, k.last_check_in_id,
           k.archived_at IS NOT NULL AS archived,
           (SELECT c.id FROM check_in c WHERE c.key_result_id = k.id
              AND c.retracted_at IS NULL
            ORDER BY c.measured_at DESC, c.id DESC LIMIT 1) AS latest_id,
           (SELECT c.value FROM check_in c WHERE c.key_result_id = k.id
              AND c.retracted_at IS NULL
            ORDER BY c.measured_at DESC, c.id DESC LIMIT 1) AS latest_value
    FROM key_result k
    WHERE CAST(:org AS bigint) IS NULL OR k.organization_id = :org
    """
)
_OBJECTIVES = text(
    "SELECT id, organization_id, parent_id, weight, progress, has_check_in, score, "
    "archived_at IS NOT NULL AS archived FROM objective "
    "WHERE CAST(:org AS bigint) IS NULL OR organization_id = :org"
)


@dataclass(frozen=True)
class Mismatch:
    subject: str
    id: int
    what: str
    stored: object
    computed: object

    def __str__(self) -> str:
        return (
            f"{self.subject} {self.id}: {self.what} stored {self.stored!r}, "
            f"computed {self.computed!r}"
        )


def _differs(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    return abs(a - b) > TOLERANCE


async def verify(
    conn: AsyncConnection, organization_id: int | None = None
) -> tuple[int, list[Mismatch]]:
    """Returns (rows checked, mismatches): of every organization, or of one."""
    only = {"org": organization_id}
    found: list[Mismatch] = []
    parts_of: dict[int, list[tuple[str, int, Part]]] = defaultdict(list)
    checked = 0
    for k in (await conn.execute(_KEY_RESULTS, only)).all():
        checked += 1
        kind = KeyResultType(k.type)
        if k.last_check_in_id != k.latest_id:
            found.append(
                Mismatch("KeyResult", k.id, "last check-in", k.last_check_in_id, k.latest_id)
            )
        current = k.latest_value if k.latest_id is not None else k.start_value
        if _differs(k.current_value, current):
            found.append(Mismatch("KeyResult", k.id, "current value", k.current_value, current))
        progress = rules.key_result_progress(kind, k.start_value, k.target_value, current)
        if _differs(k.progress, progress):
            found.append(Mismatch("KeyResult", k.id, "progress", k.progress, progress))
        parts_of[k.objective_id].append(
            (
                "KeyResult",
                k.id,
                Part(k.weight, progress, k.archived, k.latest_id is not None, k.score),
            )
        )

    objectives = {o.id: o for o in (await conn.execute(_OBJECTIVES, only)).all()}
    children: dict[int, list[int]] = defaultdict(list)
    for o in objectives.values():
        if o.parent_id is not None:
            children[o.parent_id].append(o.id)

    computed: dict[int, tuple[float, bool, float | None]] = {}

    def compute(i: int, path: frozenset[int]) -> tuple[float, bool, float | None]:
        if i in computed:
            return computed[i]
        if i in path:
            found.append(Mismatch("Objective", i, "alignment", "loop", "tree"))
            return (0.0, False, None)
        parts = [p for _, _, p in parts_of[i]]
        for c in children[i]:
            child = objectives[c]
            progress, checked_in, score = compute(c, path | {i})
            parts.append(Part(child.weight, progress, child.archived, checked_in, score))
        value = (rules.roll_up(parts), rules.rolled_checked_in(parts), rules.rolled_score(parts))
        computed[i] = value
        return value

    for i, o in objectives.items():
        checked += 1
        progress, checked_in, score = compute(i, frozenset())
        if _differs(o.progress, progress):
            found.append(Mismatch("Objective", i, "progress", o.progress, progress))
        if o.has_check_in != checked_in:
            found.append(Mismatch("Objective", i, "checked in", o.has_check_in, checked_in))
        if _differs(o.score, score):
            found.append(Mismatch("Objective", i, "score", o.score, score))
    return checked, found


async def verify_event_sequences(
    conn: AsyncConnection, organization_id: int | None = None
) -> list[str]:
    """Each organization's events (or one's) run 1..event_seq with no gap."""
    rows = await conn.execute(
        text(
            "SELECT o.id, o.event_seq, count(e.id) AS n, coalesce(max(e.seq), 0) AS top "
            "FROM organization o LEFT JOIN event e ON e.organization_id = o.id "
            "WHERE CAST(:org AS bigint) IS NULL OR o.id = :org "
            "GROUP BY o.id, o.event_seq"
        ),
        {"org": organization_id},
    )
    return [
        f"organization {r.id}: sequence at {r.event_seq}, {r.n} events, highest {r.top}"
        for r in rows
        if not (r.event_seq == r.n == r.top)
    ]
