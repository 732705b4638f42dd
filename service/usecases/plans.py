"""Plans as files (README, "Plans as files"): a cycle's objectives and key results as a
YAML or JSON document a team keeps in git, applied by `okr apply` and `applyPlan`.

`apply_plan` reads the plan (service/plan_format.py), checks every name it holds against
the organization, and computes the changes: the cycle matched by name, objectives by
their key within it, key results by their key within their objective; CREATE, UPDATE
(with the changed fields only, before and after, in the plan's own terms: team names,
emails, keys), ARCHIVE (with `prune`, for keyed items the file no longer names; items
without a key are never touched) and UNCHANGED. Any problem refuses the whole plan, each
with its path, and nothing is written. Then it applies the changes in the caller's one
transaction by calling the use cases each change stands for (createObjective,
updateObjective, alignObjective, bindKeyResult, archiveKeyResult ...): the same rules,
access checks, roll-ups and events as the mutations, and one refused change refuses
all. A dry run does all of that in a savepoint and rolls it back. A plan with nothing to
change calls nothing, so it writes nothing, not even an event."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import plan_format
from service.access import require_admin
from service.domain.enums import CycleStatus, KeyResultType, Measure, Visibility
from service.domain.errors import ErrorCode, Rejected, not_found
from service.domain.principal import Principal
from service.models import Cycle, KeyResult, Metric, Objective, Team, User
from service.plan_format import Plan, PlanKeyResult, PlanObjective, Problem
from service.reads.visibility import can_see_objective
from service.usecases import (
    commands,
    common,
    cycles,
    key_result_archive,
    key_results,
    metric_definitions,
    objectives,
)
from service.usecases.commands import KEEP
from service.usecases.metric_definitions import BatchRejected


class PlanAction(StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    ARCHIVE = "ARCHIVE"
    UNCHANGED = "UNCHANGED"


@dataclass
class PlanChange:
    action: PlanAction
    path: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    run: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class PlanResult:
    changes: list[PlanChange]
    applied: bool  # False for a dry run


Progress = Callable[[int, int], None]  # (changes applied, changes to apply)

# A use case's field, as the plan names it (a refusal's path ends with it).
_FIELDS = {
    "title": "title",
    "description": "description",
    "teamId": "team",
    "ownerId": "owner",
    "parentId": "parent",
    "weight": "weight",
    "visibility": "visibility",
    "measure": "measure",
    "unit": "unit",
    "startValue": "startValue",
    "targetValue": "targetValue",
    "metricId": "metric",
    "name": "name",
    "startsOn": "startsOn",
    "endsOn": "endsOn",
}


def _refusal(problems: list[Problem]) -> BatchRejected:
    return BatchRejected(
        [Rejected(ErrorCode(p.code), p.message, [p.path] if p.path else None) for p in problems]
    )


def _at(path: str, exc: Rejected) -> Rejected:
    """A use case's refusal of one change, with the change's path (and the field)."""
    fields = [f"{path}/{_FIELDS[f]}" for f in exc.field or [] if f in _FIELDS] or [path]
    return Rejected(exc.code, f"{path}: {exc.message}", fields[:1])


def _text(value: Any) -> Any:
    """A title, description or unit as the use cases store it (trimmed; empty is none)."""
    if isinstance(value, str):
        return value.strip() or None
    return value


class _Org:
    """The organization's names a plan refers to, and the rows it matches."""

    def __init__(self) -> None:
        self.teams: dict[str, list[Team]] = {}
        self.team_names: dict[int, str] = {}
        self.users: dict[str, User] = {}
        self.emails: dict[int, str] = {}
        self.metrics: dict[str, Metric] = {}
        self.metric_keys: dict[int, str] = {}

    @classmethod
    async def load(cls, session: AsyncSession, org_id: int) -> _Org:
        self = cls()
        for team in (
            await session.scalars(select(Team).where(col(Team.organization_id) == org_id))
        ).all():
            self.teams.setdefault(team.name, []).append(team)
            self.team_names[common.id_of(team)] = team.name
        for user in (
            await session.scalars(select(User).where(col(User.organization_id) == org_id))
        ).all():
            self.users[user.email.lower()] = user
            self.emails[common.id_of(user)] = user.email
        for metric in (
            await session.scalars(select(Metric).where(col(Metric.organization_id) == org_id))
        ).all():
            self.metrics[metric.key] = metric
            self.metric_keys[common.id_of(metric)] = metric.key
        return self

    def team(self, name: str) -> Team | None:
        named = self.teams.get(name, [])
        live = [t for t in named if t.archived_at is None]
        chosen = live or named
        return chosen[0] if chosen else None


@dataclass
class _Matched:
    """What the plan names, resolved: ids for names, stored rows for keys."""

    cycle: Cycle | None
    objectives: dict[str, Objective]  # by key, of the cycle (archived too)
    key_results: dict[tuple[str, str], KeyResult]  # by (objective key, key)


async def _cycle_named(session: AsyncSession, p: Principal, name: str) -> list[Cycle]:
    return list(
        (
            await session.scalars(
                select(Cycle)
                .where(col(Cycle.organization_id) == p.organization_id, col(Cycle.name) == name)
                .order_by(col(Cycle.id))
            )
        ).all()
    )


async def _match(
    session: AsyncSession, p: Principal, plan: Plan, org: _Org, problems: list[Problem]
) -> _Matched:
    named = await _cycle_named(session, p, plan.cycle.name)
    if len(named) > 1:
        problems.append(Problem("cycle/name", f"{len(named)} cycles are named {plan.cycle.name!r}"))
    cycle = named[0] if named else None
    if cycle is not None and cycle.status == CycleStatus.CLOSED:
        problems.append(
            Problem("cycle", f"cycle {cycle.name!r} is closed and read-only", "CYCLE_CLOSED")
        )
    found: dict[str, Objective] = {}
    krs: dict[tuple[str, str], KeyResult] = {}
    if cycle is not None:
        rows = (
            await session.scalars(
                select(Objective)
                .where(
                    col(Objective.organization_id) == p.organization_id,
                    col(Objective.cycle_id) == cycle.id,
                    col(Objective.external_key).is_not(None),
                )
                .order_by(col(Objective.id))
            )
        ).all()
        by_id: dict[int, Objective] = {}
        for row in rows:
            if can_see_objective(p, row.visibility, row.team_id, row.owner_id):
                assert row.external_key is not None
                found[row.external_key] = row
                by_id[common.id_of(row)] = row
            elif row.external_key in {o.key for o in plan.objectives}:
                problems.append(
                    Problem(f"objectives/{row.external_key}", "objective not found", "NOT_FOUND")
                )
        if by_id:
            for kr in (
                await session.scalars(
                    select(KeyResult)
                    .where(
                        col(KeyResult.organization_id) == p.organization_id,
                        col(KeyResult.objective_id).in_(list(by_id)),
                        col(KeyResult.external_key).is_not(None),
                    )
                    .order_by(col(KeyResult.id))
                )
            ).all():
                owner_key = by_id[kr.objective_id].external_key
                assert owner_key is not None and kr.external_key is not None
                krs[(owner_key, kr.external_key)] = kr
    named_ids: dict[int, str] = {}
    for o in plan.objectives:
        parent = o.fields.get("parent")
        if isinstance(parent, str) and parent not in {x.key for x in plan.objectives}:
            pk = plan_format.objective_pk(parent)
            if pk is not None:
                named_ids[pk] = o.path
    named_parents = await _objectives(session, p, set(named_ids))
    for pk, path in named_ids.items():
        parent_row = named_parents.get(pk)
        if parent_row is None or not can_see_objective(
            p, parent_row.visibility, parent_row.team_id, parent_row.owner_id
        ):
            problems.append(Problem(f"{path}/parent", "objective not found", "NOT_FOUND"))
    return _Matched(cycle, found, krs)


async def _objectives(
    session: AsyncSession, p: Principal, wanted: set[int]
) -> dict[int, Objective]:
    if not wanted:
        return {}
    rows = await session.scalars(
        select(Objective).where(
            col(Objective.organization_id) == p.organization_id, col(Objective.id).in_(list(wanted))
        )
    )
    return {common.id_of(r): r for r in rows.all()}


def _names(plan: Plan, org: _Org, problems: list[Problem]) -> None:
    """Every team, person and metric the plan names exists."""
    for o in plan.objectives:
        team = o.fields.get("team")
        if team is not None and org.team(team) is None:
            problems.append(Problem(f"{o.path}/team", f"no team is named {team!r}", "NOT_FOUND"))
        owner = o.fields.get("owner")
        if owner is not None and owner.strip().lower() not in org.users:
            problems.append(
                Problem(f"{o.path}/owner", f"no one has the email {owner!r}", "NOT_FOUND")
            )
        for kr in o.key_results:
            owner = kr.fields.get("owner")
            if owner is not None and owner.strip().lower() not in org.users:
                problems.append(
                    Problem(f"{kr.path}/owner", f"no one has the email {owner!r}", "NOT_FOUND")
                )
            metric = kr.fields.get("metric")
            if metric is not None:
                row = org.metrics.get(metric)
                if row is None:
                    problems.append(
                        Problem(
                            f"{kr.path}/metric", f"no metric has the key {metric!r}", "NOT_FOUND"
                        )
                    )
                elif row.archived_at is not None:
                    problems.append(
                        Problem(f"{kr.path}/metric", f"the metric {metric!r} is archived")
                    )


class _Planner:
    """The changes, in the order they apply: the cycle, then each objective (parents
    before children) followed by its key results, then what `prune` archives."""

    def __init__(
        self, session: AsyncSession, p: Principal, plan: Plan, org: _Org, matched: _Matched
    ) -> None:
        self.session, self.p, self.plan, self.org, self.matched = session, p, plan, org, matched
        self.keys = {o.key for o in plan.objectives}
        self.ids: dict[str, int] = {
            k: common.id_of(row) for k, row in matched.objectives.items()
        }  # grows as objectives are created
        self.cycle_id: int | None = common.id_of(matched.cycle) if matched.cycle else None
        self.key_of = {common.id_of(r): k for k, r in matched.objectives.items() if k in self.keys}
        self.changes: list[PlanChange] = []
        self.problems: list[Problem] = []

    # --- what the stored rows are, in the plan's terms ------------------------------------

    def _parent_name(self, parent_id: int | None) -> str | None:
        if parent_id is None:
            return None
        return self.key_of.get(parent_id) or plan_format.objective_gid(parent_id)

    def _objective_now(self, row: Objective) -> dict[str, Any]:
        return {
            "title": row.title,
            "description": row.description,
            "team": self.org.team_names.get(row.team_id) if row.team_id else None,
            "owner": self.org.emails.get(row.owner_id) if row.owner_id else None,
            "visibility": row.visibility,
            "parent": self._parent_name(row.parent_id),
            "weight": row.weight,
        }

    def _key_result_now(self, kr: KeyResult) -> dict[str, Any]:
        return {
            "title": kr.title,
            "type": kr.type,
            "measure": kr.measure,
            "unit": kr.unit,
            "startValue": kr.start_value,
            "targetValue": kr.target_value,
            "weight": kr.weight,
            "owner": self.org.emails.get(kr.owner_id) if kr.owner_id else None,
            "metric": self.org.metric_keys.get(kr.metric_id) if kr.metric_id else None,
        }

    def _wanted(self, fields: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in fields.items():
            if name in ("key", "keyResults"):
                continue
            if name in ("title", "description", "unit"):
                value = _text(value)
            elif name == "owner" and value is not None:
                value = self.org.users[value.strip().lower()].email
            elif name in ("weight", "startValue", "targetValue"):
                value = float(value)
            out[name] = value
        return out

    def _same_parent(self, wanted: str | None, stored: int | None) -> bool:
        if wanted is None or stored is None:
            return wanted is None and stored is None
        if wanted in self.keys:
            return self.ids.get(wanted) == stored
        return plan_format.objective_pk(wanted) == stored

    # --- the changes -----------------------------------------------------------------------

    def plan_all(self, prune: bool) -> None:
        self._cycle()
        for o in plan_format.ordered(self.plan.objectives):
            self._objective(o)
        if prune:
            self._prune()

    def _cycle(self) -> None:
        c, row = self.plan.cycle, self.matched.cycle
        wanted = {
            "name": c.name,
            "startsOn": c.starts_on.isoformat(),
            "endsOn": c.ends_on.isoformat(),
        }
        if row is None:

            async def create() -> None:
                made = await cycles.create_cycle(
                    self.session, self.p, commands.CreateCycle(c.name, c.starts_on, c.ends_on)
                )
                self.cycle_id = common.id_of(made)

            self.changes.append(PlanChange(PlanAction.CREATE, "cycle", None, wanted, create))
            return
        now = {"startsOn": row.starts_on.isoformat(), "endsOn": row.ends_on.isoformat()}
        diff = {k for k in now if now[k] != wanted[k]}
        if not diff:
            self.changes.append(PlanChange(PlanAction.UNCHANGED, "cycle"))
            return

        async def update() -> None:
            await cycles.update_cycle(
                self.session,
                self.p,
                commands.UpdateCycle(
                    common.id_of(row),
                    starts_on=c.starts_on if "startsOn" in diff else KEEP,
                    ends_on=c.ends_on if "endsOn" in diff else KEEP,
                ),
            )

        self.changes.append(
            PlanChange(
                PlanAction.UPDATE,
                "cycle",
                {k: now[k] for k in sorted(diff)},
                {k: wanted[k] for k in sorted(diff)},
                update,
            )
        )

    def _parent_id(self, parent: str | None) -> int | None:
        if parent is None:
            return None
        if parent in self.keys:
            return self.ids[parent]
        return plan_format.objective_pk(parent)

    def _objective(self, o: PlanObjective) -> None:
        wanted = self._wanted(o.fields)
        row = self.matched.objectives.get(o.key)
        if row is None:
            self._create_objective(o, wanted)
        else:
            self._update_objective(o, row, wanted)
        for kr in o.key_results:
            self._key_result(o, kr)

    def _create_objective(self, o: PlanObjective, wanted: dict[str, Any]) -> None:
        async def create() -> None:
            assert self.cycle_id is not None
            team = wanted.get("team")
            owner = wanted.get("owner")
            made = await objectives.create_objective(
                self.session,
                self.p,
                commands.CreateObjective(
                    cycle_id=self.cycle_id,
                    title=wanted["title"],
                    description=wanted.get("description"),
                    team_id=self._team_id(team),
                    owner_id=common.id_of(self.org.users[owner.lower()]) if owner else None,
                    parent_id=self._parent_id(wanted.get("parent")),
                    weight=wanted.get("weight", 1.0),
                    visibility=Visibility(wanted.get("visibility", "PUBLIC")),
                    external_key=o.key,
                ),
            )
            self.ids[o.key] = common.id_of(made)

        self.changes.append(PlanChange(PlanAction.CREATE, o.path, None, wanted, create))

    def _team_id(self, name: str | None) -> int | None:
        if name is None:
            return None
        team = self.org.team(name)
        assert team is not None
        return common.id_of(team)

    def _update_objective(self, o: PlanObjective, row: Objective, wanted: dict[str, Any]) -> None:
        now = self._objective_now(row)
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        for name, value in wanted.items():
            if name == "parent":
                if not self._same_parent(value, row.parent_id):
                    before[name], after[name] = now[name], value
            elif now[name] != value:
                before[name], after[name] = now[name], value
        if "team" in after:
            self.problems.append(
                Problem(
                    f"{o.path}/team",
                    f"an objective's team does not change (it is {now['team']!r}); archive it "
                    "and give the new one another key",
                )
            )
        if "owner" in after and after["owner"] is None:
            self.problems.append(Problem(f"{o.path}/owner", "every objective has an owner"))
        if row.archived_at is not None:
            before["archived"], after["archived"] = True, False
        if not after:
            self.changes.append(PlanChange(PlanAction.UNCHANGED, o.path))
            return
        pk = common.id_of(row)

        async def update() -> None:
            if after.get("archived") is False:
                await objectives.unarchive_objective(
                    self.session, self.p, commands.UnarchiveObjective(pk)
                )
            edited = {k for k in after if k not in ("parent", "archived", "team")}
            if edited:
                owner = after.get("owner")
                await objectives.update_objective(
                    self.session,
                    self.p,
                    commands.UpdateObjective(
                        pk,
                        title=after["title"] if "title" in after else KEEP,
                        description=after["description"] if "description" in after else KEEP,
                        owner_id=common.id_of(self.org.users[owner.lower()]) if owner else KEEP,
                        weight=after["weight"] if "weight" in after else KEEP,
                        visibility=Visibility(after["visibility"])
                        if "visibility" in after
                        else KEEP,
                    ),
                )
            if "parent" in after:
                await objectives.align_objective(
                    self.session,
                    self.p,
                    commands.AlignObjective(pk, self._parent_id(after["parent"])),
                )

        self.changes.append(PlanChange(PlanAction.UPDATE, o.path, before, after, update))

    def _key_result(self, o: PlanObjective, k: PlanKeyResult) -> None:
        wanted = self._wanted(k.fields)
        row = self.matched.key_results.get((o.key, k.key))
        if row is None:

            async def create() -> None:
                owner = wanted.get("owner")
                made = await key_results.create_key_result(
                    self.session,
                    self.p,
                    commands.CreateKeyResult(
                        objective_id=self.ids[o.key],
                        title=wanted["title"],
                        type=KeyResultType(wanted["type"]),
                        measure=Measure(wanted.get("measure", "NUMBER")),
                        unit=wanted.get("unit"),
                        start_value=wanted.get("startValue"),
                        target_value=wanted.get("targetValue"),
                        weight=wanted.get("weight", 1.0),
                        owner_id=common.id_of(self.org.users[owner.lower()]) if owner else None,
                        external_key=k.key,
                    ),
                )
                metric = wanted.get("metric")
                if metric is not None:
                    await metric_definitions.bind_key_result(
                        self.session,
                        self.p,
                        commands.BindKeyResult(
                            common.id_of(made), common.id_of(self.org.metrics[metric])
                        ),
                    )

            self.changes.append(PlanChange(PlanAction.CREATE, k.path, None, wanted, create))
            return
        now = self._key_result_now(row)
        changed = {n for n, v in wanted.items() if now[n] != v}
        if "type" in changed:
            self.problems.append(
                Problem(
                    f"{k.path}/type",
                    f"a key result's type does not change (it is {now['type']}); archive it "
                    "and give the new one another key",
                )
            )
        if row.archived_at is not None:
            self.problems.append(
                Problem(k.path, "this key result is archived; give a new one another key")
            )
        if not changed:
            self.changes.append(PlanChange(PlanAction.UNCHANGED, k.path))
            return
        before = {n: now[n] for n in wanted if n in changed}
        after = {n: wanted[n] for n in wanted if n in changed}
        pk = common.id_of(row)

        async def update() -> None:
            edited = changed - {"metric", "type"}
            if edited:
                owner = after.get("owner")

                def given(name: str) -> Any:
                    return after[name] if name in after else KEEP

                await key_results.update_key_result(
                    self.session,
                    self.p,
                    commands.UpdateKeyResult(
                        pk,
                        title=given("title"),
                        owner_id=(common.id_of(self.org.users[owner.lower()]) if owner else None)
                        if "owner" in after
                        else KEEP,
                        measure=Measure(after["measure"]) if "measure" in after else KEEP,
                        unit=given("unit"),
                        start_value=given("startValue"),
                        target_value=given("targetValue"),
                        weight=given("weight"),
                    ),
                )
            if "metric" in after:
                metric = after["metric"]
                await metric_definitions.bind_key_result(
                    self.session,
                    self.p,
                    commands.BindKeyResult(
                        pk, common.id_of(self.org.metrics[metric]) if metric else None
                    ),
                )

        self.changes.append(PlanChange(PlanAction.UPDATE, k.path, before, after, update))

    def _prune(self) -> None:
        named = {(o.key, k.key) for o in self.plan.objectives for k in o.key_results}
        for (okey, kkey), kr in self.matched.key_results.items():
            if okey not in self.keys or (okey, kkey) in named or kr.archived_at is not None:
                continue
            pk = common.id_of(kr)

            async def archive_kr(pk: int = pk) -> None:
                await key_result_archive.archive_key_result(
                    self.session, self.p, commands.ArchiveKeyResult(pk)
                )

            self._archive(f"objectives/{okey}/keyResults/{kkey}", archive_kr)
        for okey, row in self.matched.objectives.items():
            if okey in self.keys or row.archived_at is not None:
                continue
            pk = common.id_of(row)

            async def archive_objective(pk: int = pk) -> None:
                await objectives.archive_objective(
                    self.session, self.p, commands.ArchiveObjective(pk)
                )

            self._archive(f"objectives/{okey}", archive_objective)

    def _archive(self, path: str, run: Callable[[], Awaitable[None]]) -> None:
        self.changes.append(
            PlanChange(PlanAction.ARCHIVE, path, {"archived": False}, {"archived": True}, run)
        )


class _DryRun(Exception):
    """Leaves the dry run's savepoint, rolling back what it wrote."""


async def apply_plan(
    session: AsyncSession, p: Principal, cmd: commands.ApplyPlan, progress: Progress | None = None
) -> PlanResult:
    """The plan's changes, applied (or, for a dry run, tried and rolled back); a
    `Rejected` (one per problem, `errors`) refuses the whole plan."""
    plan, problems = plan_format.parse(cmd.document)
    if plan is None:
        raise _refusal(problems)
    # Taken first, as alignObjective takes it before any row lock: applies in one
    # organization run one at a time with re-parentings, and each computes its changes
    # from what the one before committed (two applies of one new plan cannot both
    # create its items).
    await common.lock_alignment(session, p.organization_id)
    org = await _Org.load(session, p.organization_id)
    _names(plan, org, problems)
    matched = await _match(session, p, plan, org, problems)
    if problems:
        raise _refusal(problems)
    planner = _Planner(session, p, plan, org, matched)
    planner.plan_all(cmd.prune)
    if planner.problems:
        raise _refusal(planner.problems)
    todo = [c for c in planner.changes if c.run is not None]
    if not todo:
        return PlanResult(planner.changes, applied=not cmd.dry_run)

    async def run_all() -> None:
        for done, change in enumerate(todo, 1):
            assert change.run is not None
            try:
                await change.run()
            except BatchRejected:
                raise
            except Rejected as exc:
                raise BatchRejected([_at(change.path, exc)]) from None
            if progress is not None:
                progress(done, len(todo))

    if not cmd.dry_run:
        await run_all()
        return PlanResult(planner.changes, applied=True)
    try:
        async with session.begin_nested():
            await run_all()
            raise _DryRun
    except _DryRun:
        pass
    return PlanResult(planner.changes, applied=False)


# --- export ---------------------------------------------------------------------------------

_SLUG = re.compile(r"[^a-z0-9]+")


def _key_from(title: str, taken: set[str], fallback: str) -> str:
    base = _SLUG.sub("-", title.lower()).strip("-")[:60].strip("-") or fallback
    if not base[0].isalnum():
        base = fallback
    key, n = base, 2
    while key in taken:
        key, n = f"{base}-{n}", n + 1
    taken.add(key)
    return key


async def export_plan(session: AsyncSession, p: Principal, cycle_name: str) -> dict[str, Any]:
    """The cycle as a plan (ADMIN only), to start from: its objectives and key results
    not archived. An item without a key gets one from its title, stored, so that the file
    names it and applying the export changes nothing."""
    require_admin(p)
    await common.lock_alignment(session, p.organization_id)  # as apply_plan: keys change
    named = await _cycle_named(session, p, cycle_name)
    if not named:
        raise not_found(f"cycle {cycle_name!r}", "cycle")
    cycle = named[0]
    org = await _Org.load(session, p.organization_id)
    rows = (
        await session.scalars(
            select(Objective)
            .where(
                col(Objective.organization_id) == p.organization_id,
                col(Objective.cycle_id) == cycle.id,
            )
            .order_by(col(Objective.id))
            .with_for_update()
        )
    ).all()
    taken = {r.external_key for r in rows if r.external_key}
    kept = [r for r in rows if r.archived_at is None]
    for row in kept:
        if row.external_key is None:
            row.external_key = _key_from(row.title, taken, "objective")
    ids = [common.id_of(r) for r in kept]
    krs: dict[int, list[KeyResult]] = {}
    if ids:
        for kr in (
            await session.scalars(
                select(KeyResult)
                .where(
                    col(KeyResult.organization_id) == p.organization_id,
                    col(KeyResult.objective_id).in_(ids),
                )
                .order_by(col(KeyResult.id))
                .with_for_update()
            )
        ).all():
            krs.setdefault(kr.objective_id, []).append(kr)
    for row in kept:
        mine = krs.get(common.id_of(row), [])
        kr_taken = {k.external_key for k in mine if k.external_key}
        for kr in mine:
            if kr.external_key is None and kr.archived_at is None:
                kr.external_key = _key_from(kr.title, kr_taken, "key-result")
    await session.flush()
    key_of = {common.id_of(r): r.external_key for r in kept}
    out: list[dict[str, Any]] = []
    for row in kept:
        item: dict[str, Any] = {"key": row.external_key, "title": row.title}
        if row.description is not None:
            item["description"] = row.description
        item["team"] = org.team_names.get(row.team_id) if row.team_id else None
        if row.owner_id is not None:
            item["owner"] = org.emails[row.owner_id]
        item["visibility"] = row.visibility
        parent = row.parent_id
        item["parent"] = (
            None if parent is None else key_of.get(parent) or plan_format.objective_gid(parent)
        )
        item["weight"] = row.weight
        results = []
        for kr in krs.get(common.id_of(row), []):
            if kr.archived_at is not None:
                continue
            shown: dict[str, Any] = {
                "key": kr.external_key,
                "title": kr.title,
                "type": kr.type,
                "measure": kr.measure,
            }
            if kr.unit is not None:
                shown["unit"] = kr.unit
            shown |= {
                "startValue": kr.start_value,
                "targetValue": kr.target_value,
                "weight": kr.weight,
            }
            if kr.owner_id is not None:
                shown["owner"] = org.emails[kr.owner_id]
            if kr.metric_id is not None:
                shown["metric"] = org.metric_keys[kr.metric_id]
            results.append(shown)
        item["keyResults"] = results
        out.append(item)
    return {
        "version": plan_format.VERSION,
        "cycle": {
            "name": cycle.name,
            "startsOn": _iso(cycle.starts_on),
            "endsOn": _iso(cycle.ends_on),
        },
        "objectives": out,
    }


def _iso(day: date) -> str:
    return day.isoformat()
