"""Cycle reports: per team, objectives by status, mean progress and score, stale key
results, objectives aligned to nothing, the check-in rhythm, the realism mix (so a
planning review sees unrealistic targets before the cycle starts) and, from REVIEW on,
the key results whose score nobody set or confirmed by hand. The same rows feed the
GraphQL `cycleReport` and the CSV export.

A score set or confirmed by hand is one `scoreKeyResult` wrote: every call writes a
KEY_RESULT_SCORED event for the key result in its own transaction (the outbox), while
the default score at REVIEW (the progress) writes none. The event log is therefore the
marker, with no column to add; `score_reason` is not, since a reason is optional."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from service import models
from service.db import Database
from service.domain import enums, facts, rules
from service.domain.enums import EventKind
from service.domain.errors import not_found
from service.domain.principal import Principal
from service.pacing import give_way
from service.reads.realism import judge, record_points
from service.reads.sizes import cycle_rows
from service.reads.visibility import visible_objectives

OBJ = models.table(models.Objective)
K = models.table(models.KeyResult)
C = models.table(models.Cycle)
T = models.table(models.Team)
U = models.table(models.User)
E = models.table(models.Event)

SCORED_FROM = (enums.CycleStatus.REVIEW, enums.CycleStatus.CLOSED)


@dataclass
class TeamReport:
    team_id: int | None
    team_name: str | None
    objectives: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    progress: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    stale_key_results: int = 0
    unaligned_objectives: int = 0
    key_results: int = 0
    in_rhythm: int = 0
    realism: dict[str, int] = field(default_factory=dict)  # verdict -> key results
    unconfirmed_scores: int | None = None  # from REVIEW on

    @property
    def mean_progress(self) -> float | None:
        return sum(self.progress) / len(self.progress) if self.progress else None

    @property
    def mean_score(self) -> float | None:
        return sum(self.scores) / len(self.scores) if self.scores else None

    @property
    def check_in_rhythm(self) -> float | None:
        """The share of key results checked in within their cadence."""
        return self.in_rhythm / self.key_results if self.key_results else None


@dataclass
class CycleReport:
    cycle: Any
    teams: list[TeamReport]
    rows: list[dict[str, Any]]  # one per key result (or objective without any), for CSV

    @property
    def realism(self) -> dict[str, int]:
        """The whole cycle's realism mix: the teams' added up."""
        total: dict[str, int] = defaultdict(int)
        for t in self.teams:
            for verdict, n in t.realism.items():
                total[verdict] += n
        return dict(total)

    @property
    def unconfirmed_scores(self) -> int | None:
        if enums.CycleStatus(self.cycle.status) not in SCORED_FROM:
            return None
        return sum(t.unconfirmed_scores or 0 for t in self.teams)


async def cycle_report(
    conn: AsyncConnection, p: Principal, cycle_id: int, now: datetime
) -> CycleReport:
    cycle = (
        await conn.execute(
            select(C).where(C.c.id == cycle_id, C.c.organization_id == p.organization_id)
        )
    ).one_or_none()
    if cycle is None:
        raise not_found("cycle", "cycleId")
    objectives = (
        await conn.execute(
            select(
                OBJ,
                T.c.name.label("team_name"),
                T.c.check_in_cadence_days.label("cadence"),
                U.c.name.label("owner_name"),
            )
            .outerjoin(T, T.c.id == OBJ.c.team_id)
            .outerjoin(U, U.c.id == OBJ.c.owner_id)
            .where(
                OBJ.c.cycle_id == cycle_id,
                OBJ.c.organization_id == p.organization_id,
                OBJ.c.archived_at.is_(None),
                visible_objectives(p, OBJ),
            )
            .order_by(OBJ.c.id)
        )
    ).all()
    ids = [o.id for o in objectives]
    krs: dict[int, list[Any]] = defaultdict(list)
    if ids:
        for k in (
            await conn.execute(
                select(K)
                .where(K.c.objective_id.in_(ids), K.c.archived_at.is_(None))
                .order_by(K.c.id)
            )
        ).all():
            krs[k.objective_id].append(k)
    status_of_cycle = enums.CycleStatus(cycle.status)
    kr_ids = [k.id for group in krs.values() for k in group]
    start, end = rules.cycle_bounds(cycle.starts_on, cycle.ends_on)
    record = await record_points(
        conn, p.organization_id, kr_ids, rules.record_window(start, end, now), now
    )
    by_hand: set[int] | None = None
    if status_of_cycle in SCORED_FROM:
        by_hand = await _scored_by_hand(conn, p.organization_id, kr_ids)
    teams: dict[int | None, TeamReport] = {}
    rows: list[dict[str, Any]] = []
    for n, o in enumerate(objectives):
        if n % 32 == 0:
            await give_way()  # a cycle of thousands: other requests are served meanwhile
        team = teams.setdefault(o.team_id, TeamReport(o.team_id, o.team_name))
        if by_hand is not None:
            team.unconfirmed_scores = team.unconfirmed_scores or 0
        status = facts.status(o.progress, o.has_check_in, cycle, p.thresholds, now)
        team.objectives += 1
        team.by_status[str(status)] = team.by_status.get(str(status), 0) + 1
        team.progress.append(o.progress)
        if o.score is not None:
            team.scores.append(o.score)
        if o.parent_id is None:
            team.unaligned_objectives += 1
        cadence = facts.cadence(o.cadence, p.check_in_cadence_days)
        for k in krs[o.id]:
            stale = facts.key_result_stale(k, cycle, cadence, now)
            team.key_results += 1
            team.stale_key_results += stale
            team.in_rhythm += facts.in_rhythm(k, cadence, now)
            k_status = facts.status(
                k.progress, k.last_check_in_id is not None, cycle, p.thresholds, now
            )
            verdict = str(judge(k, record[k.id], start, end, now).verdict)
            team.realism[verdict] = team.realism.get(verdict, 0) + 1
            confirmed = None if by_hand is None else k.id in by_hand
            if confirmed is False:
                team.unconfirmed_scores = (team.unconfirmed_scores or 0) + 1
            rows.append(_row(o, status, k, k_status, stale, verdict, confirmed))
        if not krs[o.id]:
            rows.append(_row(o, status, None, None, False))
    ordered = sorted(teams.values(), key=lambda t: (t.team_name is None, t.team_name or ""))
    return CycleReport(cycle, ordered, rows)


class ReportRefused(Exception):
    """A report not built: too costly to start, or stopped at the deadline."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


async def bounded_report(
    db: Database, p: Principal, cycle_id: int, now: datetime, max_cost: int, seconds: float
) -> CycleReport:
    """A report outside GraphQL (the CSV export), under the limits a GraphQL read has:
    priced as `cycleReport` is (a row per objective and key result the caller may see,
    service/reads/sizes.py) and refused past `max_cost` before it runs, then stopped at
    the deadline (its statements cancelled; its loops give way to other requests)."""
    async with db.connect() as conn:
        cost = 1 + (await cycle_rows(conn, p, [cycle_id]))[cycle_id]
        if cost > max_cost:
            raise ReportRefused(
                f"the report of this cycle costs {cost}, over the maximum of {max_cost}; "
                "ask for the report of a smaller cycle or ask an administrator",
                422,
            )
        try:
            async with asyncio.timeout(seconds):
                return await cycle_report(conn, p, cycle_id, now)
        except TimeoutError:
            raise ReportRefused(
                f"the report ran longer than {seconds:g} seconds and was stopped; try again later",
                503,
            ) from None


async def _scored_by_hand(conn: AsyncConnection, org: int, kr_ids: list[int]) -> set[int]:
    """The key results among these that `scoreKeyResult` scored (see the module doc)."""
    if not kr_ids:
        return set()
    found = await conn.execute(
        select(E.c.subject_id)
        .where(
            E.c.organization_id == org,
            E.c.subject_type == "KeyResult",
            E.c.subject_id.in_(kr_ids),
            E.c.kind == str(EventKind.KEY_RESULT_SCORED),
        )
        .distinct()
    )
    return set(found.scalars().all())


def _row(
    o: Any,
    status: Any,
    k: Any,
    k_status: Any,
    stale: bool,
    verdict: str = "",
    confirmed: bool | None = None,
) -> dict[str, Any]:
    return {
        "team": o.team_name or "",
        "objective": o.title,
        "objective_owner": o.owner_name or "",
        "objective_progress": round(o.progress, 4),
        "objective_status": str(status),
        "objective_score": "" if o.score is None else round(o.score, 4),
        "key_result": k.title if k else "",
        "type": k.type if k else "",
        "start": k.start_value if k else "",
        "target": k.target_value if k else "",
        "current": k.current_value if k else "",
        "unit": (k.unit or "") if k else "",
        "progress": round(k.progress, 4) if k else "",
        "status": str(k_status) if k_status else "",
        "stale": ("yes" if stale else "no") if k else "",
        "score": "" if k is None or k.score is None else round(k.score, 4),
        "score_by_hand": "" if confirmed is None else ("yes" if confirmed else "no"),
        "realism": verdict,
        "last_check_in": k.last_check_in_at.isoformat() if k and k.last_check_in_at else "",
    }


CSV_COLUMNS = [
    "team",
    "objective",
    "objective_owner",
    "objective_progress",
    "objective_status",
    "objective_score",
    "key_result",
    "type",
    "start",
    "target",
    "current",
    "unit",
    "progress",
    "status",
    "stale",
    "score",
    "score_by_hand",
    "realism",
    "last_check_in",
]

# A spreadsheet runs a cell that begins with one of these as a formula (OWASP, "CSV
# injection"); a quote before it makes it text. Numbers are written as numbers.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def spreadsheet_safe(value: Any) -> Any:
    """A cell's value as a spreadsheet should show it: text that a spreadsheet would
    read as a formula is prefixed with a quote; everything else is unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_rows(report: CycleReport) -> list[dict[str, Any]]:
    """The report's rows, each cell safe to open in a spreadsheet."""
    return [{k: spreadsheet_safe(v) for k, v in row.items()} for row in report.rows]
