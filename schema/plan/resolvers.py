"""Planned reads: resolvers per type, (plan, selection, rows) -> values (or an awaitable
of them), each run once for all the rows of a level."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from operator import itemgetter
from typing import Any

from schema import ids
from schema.plan.collect import TABLE_TYPES, ByResolver, Page, Plan, Probe, Row, Sel, Stop
from service.domain import facts, rules
from service.domain.enums import CycleStatus
from service.reads.realism import judge, record_points
from service.reads.visibility import can_see_objective

# --- resolvers per type: (plan, selection, rows) -> values (or an awaitable of them) ---


def _attr(name: str, wrap: Callable[[Any], Any] | None = None) -> Callable[..., list[Any]]:
    """A column of table rows (records: read by item)."""
    if wrap is None:
        return lambda plan, sel, rows: [r[name] for r in rows]
    return lambda plan, sel, rows: [None if (v := r[name]) is None else wrap(v) for r in rows]


def _field(name: str) -> Callable[..., list[Any]]:
    """An attribute of computed objects (a forecast)."""
    return lambda plan, sel, rows: [getattr(r, name) for r in rows]


_GIDS: dict[str, dict[int, str]] = {}


def _gid(type_name: str) -> Callable[..., list[Any]]:
    """Global ids, remembered per type (the same rows are asked for again and again)."""
    known = _GIDS.setdefault(type_name, {})

    def encode(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
        if len(known) > 100_000:
            known.clear()
        pks = [r["id"] for r in rows]
        out = list(map(known.get, pks))
        if None in out:
            for i, pk in enumerate(pks):
                if out[i] is None:
                    out[i] = known[pk] = ids.encode(type_name, pk)
        return out

    return encode


def _progress(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    if sel.args.get("asOf") is not None:
        raise ByResolver("progress(asOf)")
    return [r.progress for r in rows]


async def _user(plan: Plan, sel: Sel, rows: list[Row], column: str) -> list[Any]:
    keys = [getattr(r, column) for r in rows]
    found = await plan.reads.by_id("app_user", keys)
    return await plan.related("User", sel, [found.get(k) if k is not None else None for k in keys])


async def _team(plan: Plan, sel: Sel, rows: list[Row], column: str) -> list[Any]:
    keys = [getattr(r, column) for r in rows]
    found = await plan.reads.by_id("team", keys)
    return await plan.related("Team", sel, [found.get(k) if k is not None else None for k in keys])


# Objective


async def _o_cycle(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return await plan.related("Cycle", sel, await plan.cycles_of(rows))


_STATUS_COLUMNS = itemgetter("progress", "cycle_id", "has_check_in")


async def _o_status(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    """The rule per row, the rows of each cycle together (its pace computed once)."""
    columns = list(map(_STATUS_COLUMNS, rows))
    by_cycle: dict[int, list[int]] = {}
    for n, (_p, c, _h) in enumerate(columns):
        by_cycle.setdefault(c, []).append(n)
    known = await plan.reads.by_id("cycle", by_cycle)
    out: list[Any] = [None] * len(rows)
    for c, places in by_cycle.items():
        items = ((columns[n][0], columns[n][2]) for n in places)
        for n, s in zip(
            places, facts.statuses(items, known[c], plan.p.thresholds, plan.now), strict=True
        ):
            out[n] = s
    return out


async def _o_expected(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return [plan.expected(c) for c in await plan.cycles_of(rows)]


async def _key_results_of(plan: Plan, rows: list[Row]) -> list[list[Row]]:
    return await plan.reads.grouped("key_result", "objective_id", [r.id for r in rows])


async def _o_key_results(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return await plan.related_lists("KeyResult", sel, await _key_results_of(plan, rows))


async def _o_stale(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    cycles = await plan.cycles_of(rows)
    active = [c.status == CycleStatus.ACTIVE for c in cycles]
    live = [r for r, a in zip(rows, active, strict=True) if a]
    groups = dict(
        zip([r.id for r in live], await _key_results_of(plan, live) if live else [], strict=True)
    )
    cadences = dict(zip([r.id for r in live], await plan.cadences(live), strict=True))
    out = []
    for r, c, a in zip(rows, cycles, active, strict=True):
        if not a:
            out.append(False)
            continue
        out.append(facts.objective_stale(groups[r.id], c, cadences[r.id], plan.now))
    return out


def _o_linked(column: str) -> Callable[..., Any]:
    """An objective an objective names (its parent, what it was carried over from), or
    null where the caller may not see it."""

    async def step(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
        keys = [r[column] for r in rows]
        found = await plan.reads.by_id("objective", keys)
        sees = plan.reads.sees
        targets = []
        for k in keys:
            row = found.get(k) if k is not None else None
            targets.append(row if row is not None and sees(row) else None)
        return await plan.related("Objective", sel, targets)

    return step


async def _o_descendants(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    max_depth = sel.args.get("maxDepth")
    if max_depth is not None and max_depth < 0:
        raise ByResolver("maxDepth < 0")
    depth = min(max_depth if max_depth is not None else 1000, 1000)
    # Past the object budget the walk stops there.
    at_most = plan.settings.max_response_objects - plan.objects
    got = await plan.reads.descendants([r.id for r in rows], depth, max(at_most, 0))
    if got is None:
        if plan.reads.sees_all:  # every row would be shown: the budget's error
            plan.budget.too_many_objects()
            raise Stop
        # Some rows may be hidden: the field's resolver walks and counts what it shows.
        raise ByResolver("past the object budget, rows hidden")
    groups = got
    sees = plan.reads.sees
    return await plan.related_lists("Objective", sel, [[d for d in g if sees(d)] for g in groups])


# KeyResult


async def _k_status(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    """The rule per row, the rows of each cycle together (its pace computed once)."""
    cycles = await plan.cycles_of(await plan.objectives_of(rows))
    by_cycle: dict[int, list[int]] = {}
    for n, c in enumerate(cycles):
        by_cycle.setdefault(c.id, []).append(n)
    out: list[Any] = [None] * len(rows)
    for places in by_cycle.values():
        items = ((rows[n].progress, rows[n].last_check_in_id is not None) for n in places)
        got = facts.statuses(items, cycles[places[0]], plan.p.thresholds, plan.now)
        for n, s in zip(places, got, strict=True):
            out[n] = s
    return out


async def _k_expected(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return [plan.expected(c) for c in await plan.cycles_of(await plan.objectives_of(rows))]


async def _k_stale(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    objectives = await plan.objectives_of(rows)
    cycles = await plan.cycles_of(objectives)
    cadences = await plan.cadences(objectives)
    return [
        facts.key_result_stale(r, c, cadence, plan.now)
        for r, c, cadence in zip(rows, cycles, cadences, strict=True)
    ]


async def _k_next_due(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    objectives = await plan.objectives_of(rows)
    cycles = await plan.cycles_of(objectives)
    cadences = await plan.cadences(objectives)
    return [
        facts.next_check_in_due(r, c, cadence)
        for r, c, cadence in zip(rows, cycles, cadences, strict=True)
    ]


async def _k_objective(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    objectives = await plan.objectives_of(rows)
    p = plan.p
    for o in objectives:
        if not can_see_objective(p, o.visibility, o.team_id, o.owner_id):
            raise ByResolver("hidden objective")
    return await plan.related("Objective", sel, objectives)


async def _c_key_result(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    """A check-in's key result: shown with the check-in, whose visibility is its own."""
    keys = [r.key_result_id for r in rows]
    found = await plan.reads.by_id("key_result", keys)
    krs = [found.get(k) for k in keys]
    if None in krs:
        raise ByResolver("key result gone")
    p = plan.p
    for o in await plan.objectives_of(krs):  # type: ignore[arg-type]
        if not can_see_objective(p, o.visibility, o.team_id, o.owner_id):
            raise ByResolver("hidden key result")
    return await plan.related("KeyResult", sel, krs)


async def _k_last_check_in(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    # The key result is shown, so its check-ins may be: the raw read is the checked one.
    keys = [r.last_check_in_id for r in rows]
    found = await plan.reads.by_id("check_in", keys)
    return await plan.related("CheckIn", sel, [found.get(k) if k else None for k in keys])


def _c_check_in(column: str) -> Callable[..., Any]:
    """A check-in's linked check-in (correctionOf, correctedBy): of the same key result,
    which is shown, so the raw read is the checked one."""

    async def resolve(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
        keys = [r[column] for r in rows]
        found = await plan.reads.by_id("check_in", [k for k in keys if k is not None])
        return await plan.related("CheckIn", sel, [found.get(k) if k else None for k in keys])

    return resolve


def _k_check_ins(plan: Plan, sel: Sel, rows: list[Row]) -> Any:
    first, position, backward = plan.window(sel)
    reads = plan.reads

    async def run() -> list[Any]:
        keys = [r.id for r in rows]
        pages = await reads.check_in_pages(keys, first, position, backward)
        probe = Probe(partial(reads.check_ins_beyond, keys, position, backward))
        sources = [
            Page(
                page,
                first,
                position,
                "CheckIn",
                partial(reads.check_in_count, r.id),
                partial(probe.has, r.id),
                backward,
            )
            for r, page in zip(rows, pages, strict=True)
        ]
        return await plan.related(_connection_type(sel), sel, sources)

    return run()


async def _k_forecast(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    cycles = await plan.cycles_of(await plan.objectives_of(rows))
    histories = await plan.reads.grouped("check_in", "key_result_id", [r.id for r in rows])
    p = plan.p
    out: list[Any] = []
    for n, (r, c, history) in enumerate(zip(rows, cycles, histories, strict=True)):
        if n % 64 == 0:
            await plan.on_time()  # thousands of key results, each a fit over its history
        out.append(facts.forecast(r, history, c, p.thresholds))
    return await plan.related("Forecast", sel, out)


async def _k_realism(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    """Each key result's realism, judged by its record (service/reads/realism.py): the
    records of the whole level fitted in one statement."""
    cycles = await plan.cycles_of(await plan.objectives_of(rows))
    now = plan.now
    bounds = [rules.cycle_bounds(c.starts_on, c.ends_on) for c in cycles]
    since = {r.id: rules.record_window(b[0], b[1], now) for r, b in zip(rows, bounds, strict=True)}
    reads = plan.reads
    fits = await record_points(reads.sa, reads.org, [r.id for r in rows], since, now)
    judged = [
        judge(r, fits[r.id], start, end, now) for r, (start, end) in zip(rows, bounds, strict=True)
    ]
    return await plan.related("Realism", sel, judged)


# Metric


async def _m_latest(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    from schema.metrics import Measurement

    found = await plan.reads.latest_measurements([r.id for r in rows])
    shown = [None if (m := found.get(r.id)) is None else Measurement.of(m) for r in rows]
    return await plan.related("Measurement", sel, shown)


async def _m_key_results(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    """The live key results bound to each metric that the caller may see."""
    groups = await plan.reads.grouped("key_result", "metric_id", [r.id for r in rows])
    flat = [k for g in groups for k in g]
    objectives = dict(zip((k.id for k in flat), await plan.objectives_of(flat), strict=True))
    sees = plan.reads.sees
    shown = [[k for k in g if sees(objectives[k.id])] for g in groups]
    return await plan.related_lists("KeyResult", sel, shown)


# What an event names, as the caller may see it


_EVERYONES = {"User": "app_user", "Team": "team", "Cycle": "cycle"}


async def shown(plan: Plan, type_name: str, keys: list[int]) -> dict[int, Row]:
    """The rows of `type_name` with these ids that the caller may see (the one rule:
    an objective's visibility, a key result's and a check-in's by their objective's),
    in a statement per table. Other types: `ByResolver`."""
    reads = plan.reads
    if type_name == "CheckIn":
        found = await reads.by_id("check_in", keys)
        rows = [found[k] for k in keys if k in found]
        krs = await shown(plan, "KeyResult", [r.key_result_id for r in rows])
        return {r.id: r for r in rows if r.key_result_id in krs}
    if type_name == "KeyResult":
        found = await reads.by_id("key_result", keys)
        rows = [found[k] for k in keys if k in found]
        objectives = await shown(plan, "Objective", [r.objective_id for r in rows])
        return {r.id: r for r in rows if r.objective_id in objectives}
    if type_name == "Objective":
        found = await reads.by_id("objective", keys)
        return {k: found[k] for k in keys if k in found and reads.sees(found[k])}
    if type_name in _EVERYONES:  # the organization's, shown to all of it
        found = await reads.by_id(_EVERYONES[type_name], keys)
        return {k: found[k] for k in keys if k in found}
    raise ByResolver(f"a {type_name} named by an event")


async def _pe_check_in(plan: Plan, sel: Sel, events: list[Any]) -> list[Any]:
    keys = [None if e.cause_hidden else e.row.check_in_id for e in events]
    found = await shown(plan, "CheckIn", [k for k in keys if k is not None])
    return await plan.related("CheckIn", sel, [found.get(k) if k else None for k in keys])


async def _ev_actor(plan: Plan, sel: Sel, events: list[Any]) -> list[Any]:
    """Who made the change (a progress event whose cause is hidden: nobody)."""
    keys = [None if getattr(e, "cause_hidden", False) else e.row.actor_user_id for e in events]
    found = await plan.reads.by_id("app_user", keys)
    return await plan.related("User", sel, [found.get(k) if k else None for k in keys])


async def _pe_changes(plan: Plan, sel: Sel, events: list[Any]) -> list[Any]:
    """The key result and the objectives up the chain, as the caller may see them: what
    they may not see is left out."""
    from schema.types.common import ProgressChange
    from service.domain.enums import ProgressStatus

    changes = [e.row.payload.get("changes", []) for e in events]
    wanted: dict[str, list[int]] = {}
    for group in changes:
        for c in group:
            wanted.setdefault(c["type"], []).append(c["id"])
    found = {t: await shown(plan, t, keys) for t, keys in wanted.items()}
    groups = []
    for group in changes:
        out = []
        for c in group:
            row = found[c["type"]].get(c["id"])
            if row is None:
                continue  # hidden from this caller, or gone
            out.append(
                ProgressChange(
                    node=TABLE_TYPES[c["type"]](row),
                    previous_progress=c["previous"],
                    progress=c["progress"],
                    status=ProgressStatus(c["status"]),
                )
            )
        groups.append(out)
    return await plan.related_lists("ProgressChange", sel, groups)


async def _ev_subject(plan: Plan, sel: Sel, events: list[Any]) -> list[Any]:
    """What each event is about, as a node the caller may see (null when hidden or
    deleted)."""
    wanted: dict[str, list[int]] = {}
    for e in events:
        wanted.setdefault(e.row.subject_type, []).append(e.row.subject_id)
    found = {t: await shown(plan, t, keys) for t, keys in wanted.items()}
    out = []
    for e in events:
        row = found[e.row.subject_type].get(e.row.subject_id)
        out.append(None if row is None else TABLE_TYPES[e.row.subject_type](row))
    return await plan.completed(sel, out)


# Team


def _owned_objectives(column: str, cycle_argument: bool) -> Callable[..., Any]:
    """A connection of objectives by a column of theirs (a team's, a parent's children),
    one page per row of the level in one statement."""

    def step(plan: Plan, sel: Sel, rows: list[Row]) -> Any:
        cycle_pk = (
            ids.decode_filter_id(sel.args.get("cycleId"), "Cycle", "cycleId")
            if cycle_argument
            else None
        )
        first, position, backward = plan.window(sel)
        reads = plan.reads

        async def run() -> list[Any]:
            keys = [r.id for r in rows]
            pages = await reads.objective_pages(column, keys, cycle_pk, first, position, backward)
            beyond = partial(reads.objectives_beyond, column, keys, cycle_pk, position, backward)
            probe = Probe(beyond)
            sources = [
                Page(
                    page,
                    first,
                    position,
                    "Objective",
                    partial(reads.objective_count, column, r.id, cycle_pk),
                    partial(probe.has, r.id),
                    backward,
                )
                for r, page in zip(rows, pages, strict=True)
            ]
            return await plan.related(_connection_type(sel), sel, sources)

        return run()

    return step


# Connections


def _connection_type(sel: Sel) -> str:
    return str(sel.rtype.name)


def _c_edges(plan: Plan, sel: Sel, pages: list[Page]) -> Any:
    return plan.related_lists(str(sel.rtype.name), sel, [p.shown() for p in pages])


def _c_page_info(plan: Plan, sel: Sel, pages: list[Page]) -> Any:
    return plan.related("PageInfo", sel, pages)


async def _c_total(plan: Plan, sel: Sel, pages: list[Page]) -> list[Any]:
    out = []
    for p in pages:
        out.append(await p.counter())
    return out


async def _pi_next(plan: Plan, sel: Sel, pages: list[Page]) -> list[Any]:
    return [await p.across() if p.backward else p.more for p in pages]


async def _pi_previous(plan: Plan, sel: Sel, pages: list[Page]) -> list[Any]:
    return [p.more if p.backward else await p.across() for p in pages]


def _pi_start(plan: Plan, sel: Sel, pages: list[Page]) -> list[Any]:
    return [ids.cursor(rows[0].id) if (rows := p.shown()) else None for p in pages]


def _pi_end(plan: Plan, sel: Sel, pages: list[Page]) -> list[Any]:
    return [ids.cursor(rows[-1].id) if (rows := p.shown()) else None for p in pages]


def _e_cursor(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return [ids.cursor(r.id) for r in rows]


def _e_node(node_type: str) -> Callable[..., Any]:
    return lambda plan, sel, rows: plan.related(node_type, sel, rows)


# Cycle


def _cy_expected(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return [plan.expected(c) for c in rows]


def _cy_review_due(plan: Plan, sel: Sel, rows: list[Row]) -> list[Any]:
    return [rules.review_due(CycleStatus(c.status), c.starts_on, c.ends_on, plan.now) for c in rows]
