"""Per-request data loaders: every relation field reads through one of these, so a
query's SQL statement count does not grow with the number of rows it returns.
Each batch runs on its own pooled connection; loaders never share a session."""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Table, and_, func, select, text
from strawberry.dataloader import DataLoader as _DataLoader

from service import models, sql
from service.db import Database
from service.domain.principal import Principal
from service.reads import keyset, team_progress
from service.reads.keyset import Slice
from service.reads.realism import Fit, record_points
from service.reads.visibility import can_see_objective, visible_events, visible_objectives

OBJECTIVE = models.table(models.Objective)
KEY_RESULT = models.table(models.KeyResult)
CHECK_IN = models.table(models.CheckIn)
COMMENT = models.table(models.Comment)
TEAM = models.table(models.Team)
USER = models.table(models.User)
CYCLE = models.table(models.Cycle)
ORGANIZATION = models.table(models.Organization)
MEMBERSHIP = models.table(models.TeamMembership)
EVENT = models.table(models.Event)
# Key results per batch of histories: about 25 check-ins each at the bench's scale, a
# batch is a few thousand rows (tens of milliseconds to decode).
HISTORY_BATCH = 200
METRIC = models.table(models.Metric)
MEASUREMENT = models.table(models.Measurement)


_LIVE_KEY_RESULT = KEY_RESULT.c.archived_at.is_(None)
_LIVE_TEAM = TEAM.c.archived_at.is_(None)


K = TypeVar("K")
V = TypeVar("V")


class DataLoader(_DataLoader[K, V]):
    """Strawberry's DataLoader, but a field cancelled while it waits (GraphQL aborts the
    siblings of a field that failed) no longer cancels the batch that other fields await
    with it: each waiter gets its own shielded future."""

    def load(self, key: K) -> Awaitable[V]:
        return asyncio.shield(super().load(key))


# Page keys: (parent id, the window asked for).
PageKey = tuple[int, Slice]
# Record keys: (key result id, start of its trailing window, now).
RecordKey = tuple[int, datetime, datetime]

_ANCESTORS = sql.walk(
    sql.ANCESTORS_BY_START,
    """
    SELECT up.start AS start_id, o.* FROM up JOIN objective o ON o.id = up.id
    WHERE up.depth > 0 ORDER BY up.start, up.depth
    """,
)
_DESCENDANTS = sql.walk(
    sql.DESCENDANTS_BY_START,
    """
    SELECT down.start AS start_id, down.depth AS depth, o.* FROM down
    JOIN objective o ON o.id = down.id
    WHERE down.depth > 0 ORDER BY down.start, down.depth, o.id
    """,
)

_LATEST_MEASUREMENTS = text(
    "SELECT DISTINCT ON (metric_id) * FROM measurement "
    "WHERE metric_id = ANY(:ids) AND organization_id = :org AND retracted_at IS NULL "
    "ORDER BY metric_id, measured_at DESC, id DESC"
)


@functools.lru_cache(maxsize=1024)
def _visibility_predicates(principal: Principal) -> tuple[Any, Any]:
    """The one rule's SQL predicates (service/reads/visibility.py) over the objective and
    event tables, for one principal. Built once per principal (a frozen value) and reused:
    a subscription's loaders are made again for every event, and building the aliased
    expressions cost more than running the statement."""
    return visible_objectives(principal, OBJECTIVE), visible_events(principal, EVENT)


class Loaders:
    def __init__(self, db: Database, principal: Principal) -> None:
        self.db = db
        self.p = principal
        org = principal.organization_id
        self._org = org
        # Rows already loaded in this request, by table and id: fields that need only
        # these (status, expected progress) then resolve without awaiting.
        self.known: dict[str, dict[int, Any]] = {}
        self.organization = self._by_id(ORGANIZATION, org_column=ORGANIZATION.c.id)
        self.user = self._by_id(USER)
        self.team = self._by_id(TEAM)
        self.cycle = self._by_id(CYCLE)
        # Raw: no visibility check. Roll-ups, statuses and cycles read these; a row that
        # is shown to the caller goes through the checked reads below (`objective`,
        # `key_result`, `check_in`, `comment`, `event`), never through these.
        self.objective_raw = self._by_id(OBJECTIVE)
        self.key_result_raw = self._by_id(KEY_RESULT)
        self.check_in_raw = self._by_id(CHECK_IN)
        self.comment_raw = self._by_id(COMMENT)
        # Archived key results, teams and metrics leave lists (and key results roll-ups).
        self.key_results_of = self._grouped(
            KEY_RESULT, KEY_RESULT.c.objective_id, KEY_RESULT.c.id, where=_LIVE_KEY_RESULT
        )
        self.children_raw = self._grouped(OBJECTIVE, OBJECTIVE.c.parent_id, OBJECTIVE.c.id)
        self.team_children = self._grouped(TEAM, TEAM.c.parent_id, TEAM.c.id, where=_LIVE_TEAM)
        # A key result's whole history (forecasts): batches of a bounded number of key
        # results, so no one batch of rows is decoded in a single turn of the loop.
        self.check_ins_of = self._grouped(
            CHECK_IN, CHECK_IN.c.key_result_id, CHECK_IN.c.id, max_batch_size=HISTORY_BATCH
        )
        self.members_of = self._through_membership(USER, MEMBERSHIP.c.user_id, MEMBERSHIP.c.team_id)
        self.ancestors_of = DataLoader(self._load_ancestors)
        self.descendants_of = DataLoader(self._load_descendants)
        # The record realism is judged by (service/reads/realism.py); raw, like roll-ups.
        self.record_of = DataLoader(self._load_record)
        vis, shown_events = _visibility_predicates(principal)
        self.children_page = self._pages(
            OBJECTIVE, OBJECTIVE.c.parent_id, OBJECTIVE.c.id, descending=False, where=vis
        )
        self.children_count = self._counts(OBJECTIVE, OBJECTIVE.c.parent_id, where=vis)
        self.check_ins_page = self._pages(
            CHECK_IN, CHECK_IN.c.key_result_id, CHECK_IN.c.id, descending=True
        )
        self.check_ins_count = self._counts(CHECK_IN, CHECK_IN.c.key_result_id)
        self.objective_comments_page = self._pages(
            COMMENT, COMMENT.c.objective_id, COMMENT.c.id, descending=False
        )
        self.objective_comments_count = self._counts(COMMENT, COMMENT.c.objective_id)
        self.teams_of_user = self._through_membership(
            TEAM, MEMBERSHIP.c.team_id, MEMBERSHIP.c.user_id, where=_LIVE_TEAM
        )
        self.history_page = {
            kind: self._pages(
                EVENT,
                EVENT.c.subject_id,
                EVENT.c.seq,
                descending=True,
                where=and_(EVENT.c.subject_type == kind, shown_events),
            )
            for kind in ("Objective", "KeyResult")
        }
        self.history_count = {
            kind: self._counts(
                EVENT, EVENT.c.subject_id, where=and_(EVENT.c.subject_type == kind, shown_events)
            )
            for kind in ("Objective", "KeyResult")
        }
        # Events the caller may see (service/reads/visibility.py), by id.
        self.event_shown = self._by_id(EVENT, where=shown_events)
        # Metrics are org-wide; the key results bound to one are shown by their objective.
        self.metric = self._by_id(METRIC)
        self.key_results_of_metric = self._grouped(
            KEY_RESULT, KEY_RESULT.c.metric_id, KEY_RESULT.c.id, where=_LIVE_KEY_RESULT
        )
        self.latest_measurement = DataLoader(self._load_latest_measurements)
        # Each team's top objectives in a cycle that the caller may see, by (cycle, team):
        # one statement per cycle for any number of teams (service/reads/team_progress.py).
        self.top_objectives = DataLoader(self._load_top_objectives)
        # Webhooks: admins only, checked where they are read (schema/types/webhook.py).
        self.webhook_endpoint = self._by_id(models.table(models.WebhookEndpoint))
        self.webhook_delivery = self._by_id(models.table(models.WebhookDelivery))
        self._visible = vis
        self._team_pages: dict[int | None, DataLoader[PageKey, list[Any]]] = {}
        self._team_counts: dict[int | None, DataLoader[int, int]] = {}

    def team_objectives_page(self, cycle_id: int | None) -> DataLoader[PageKey, list[Any]]:
        if cycle_id not in self._team_pages:
            self._team_pages[cycle_id] = self._pages(
                OBJECTIVE,
                OBJECTIVE.c.team_id,
                OBJECTIVE.c.id,
                descending=False,
                where=self._team_filter(cycle_id),
            )
        return self._team_pages[cycle_id]

    def team_objectives_count(self, cycle_id: int | None) -> DataLoader[int, int]:
        if cycle_id not in self._team_counts:
            self._team_counts[cycle_id] = self._counts(
                OBJECTIVE, OBJECTIVE.c.team_id, where=self._team_filter(cycle_id)
            )
        return self._team_counts[cycle_id]

    def _team_filter(self, cycle_id: int | None) -> Any:
        live = and_(self._visible, OBJECTIVE.c.archived_at.is_(None))  # like `objectives`
        if cycle_id is None:
            return live
        return and_(live, OBJECTIVE.c.cycle_id == cycle_id)

    def _through_membership(
        self, table: Table, own: Any, other: Any, where: Any = None
    ) -> DataLoader[int, list[Any]]:
        """Rows of `table` (users or teams) joined to the membership on `own`, grouped
        by the membership's `other` column (a team's members, a user's teams)."""

        async def load(keys: list[int]) -> list[list[Any]]:
            stmt = (
                select(table, other)
                .join(MEMBERSHIP, own == table.c.id)
                .where(other.in_(keys), table.c.organization_id == self._org)
                .order_by(table.c.name, table.c.id)
            )
            if where is not None:
                stmt = stmt.where(where)
            groups: dict[int, list[Any]] = defaultdict(list)
            for r in await self._rows(stmt):
                groups[getattr(r, other.name)].append(r)
            return [groups.get(k, []) for k in keys]

        return DataLoader(load)

    def known_cycle(self, pk: int) -> Any | None:
        return self.known["cycle"].get(pk)

    async def prime_cycles(self, rows: list[Any]) -> None:
        """Load the cycles of these objectives at once, before their fields resolve."""
        wanted = {r.cycle_id for r in rows} - set(self.known["cycle"])
        if wanted:
            await self.cycle.load_many(list(wanted))

    # --- visibility-aware reads -------------------------------------------------

    def sees(self, row: Any) -> bool:
        return can_see_objective(self.p, row.visibility, row.team_id, row.owner_id)

    async def objective(self, pk: int) -> Any | None:
        row = await self.objective_raw.load(pk)
        return row if row is not None and self.sees(row) else None

    async def key_result(self, pk: int) -> Any | None:
        row = await self.key_result_raw.load(pk)
        if row is None or await self.objective(row.objective_id) is None:
            return None
        return row

    async def check_in(self, pk: int) -> Any | None:
        row = await self.check_in_raw.load(pk)
        if row is None or await self.key_result(row.key_result_id) is None:
            return None
        return row

    async def comment(self, pk: int) -> Any | None:
        row = await self.comment_raw.load(pk)
        if row is None:
            return None
        if row.objective_id is not None and await self.objective(row.objective_id) is None:
            return None
        if row.key_result_id is not None and await self.key_result(row.key_result_id) is None:
            return None
        return row

    async def event(self, pk: int) -> Any | None:
        """An event whose subject the caller may see (the same rule as the feed)."""
        return await self.event_shown.load(pk)

    # --- loader factories ------------------------------------------------------

    async def _rows(self, stmt: Any) -> Sequence[Any]:
        async with self.db.connect() as conn:
            return (await conn.execute(stmt)).all()

    def _by_id(
        self, table: Table, org_column: Any = None, where: Any = None
    ) -> DataLoader[int, Any]:
        org_col = org_column if org_column is not None else table.c.organization_id
        seen = self.known.setdefault(table.name, {}) if where is None else {}

        async def load(keys: list[int]) -> list[Any]:
            stmt = select(table).where(table.c.id.in_(keys), org_col == self._org)
            if where is not None:
                stmt = stmt.where(where)
            found = {r.id: r for r in await self._rows(stmt)}
            seen.update(found)
            return [found.get(k) for k in keys]

        return DataLoader(load)

    def _grouped(
        self,
        table: Table,
        key_col: Any,
        order: Any,
        where: Any = None,
        max_batch_size: int | None = None,
    ) -> DataLoader[int, list[Any]]:
        async def load(keys: list[int]) -> list[list[Any]]:
            stmt = (
                select(table)
                .where(key_col.in_(keys), table.c.organization_id == self._org)
                .order_by(order)
            )
            if where is not None:
                stmt = stmt.where(where)
            groups: dict[int, list[Any]] = defaultdict(list)
            for r in await self._rows(stmt):
                groups[getattr(r, key_col.name)].append(r)
            return [groups.get(k, []) for k in keys]

        return DataLoader(load, max_batch_size=max_batch_size)

    def _pages(
        self, table: Table, key_col: Any, order_col: Any, *, descending: bool, where: Any = None
    ) -> DataLoader[PageKey, list[Any]]:
        """One statement per distinct window for any number of parents (keyset both ways,
        with the probe of the cursor's other side: service/reads/keyset.py)."""

        async def load(keys: list[PageKey]) -> list[list[Any]]:
            by_window: dict[Slice, list[int]] = defaultdict(list)
            for parent, window in keys:
                by_window[window].append(parent)
            pages: dict[PageKey, list[Any]] = defaultdict(list)
            for window, parents in by_window.items():
                base = select(table).where(
                    key_col.in_(parents), table.c.organization_id == self._org
                )
                if where is not None:
                    base = base.where(where)
                stmt = keyset.pages(base, key_col, [order_col], descending, window)
                for r in await self._rows(stmt):
                    pages[(getattr(r, key_col.name), window)].append(r)
            return [pages.get(k, []) for k in keys]

        return DataLoader(load)

    def _counts(self, table: Table, key_col: Any, where: Any = None) -> DataLoader[int, int]:
        async def load(keys: list[int]) -> list[int]:
            stmt = (
                select(key_col, func.count())
                .where(key_col.in_(keys), table.c.organization_id == self._org)
                .group_by(key_col)
            )
            if where is not None:
                stmt = stmt.where(where)
            found = dict((r[0], r[1]) for r in await self._rows(stmt))
            return [found.get(k, 0) for k in keys]

        return DataLoader(load)

    async def _load_latest_measurements(self, keys: list[int]) -> list[Any]:
        async with self.db.connect() as conn:
            rows = (await conn.execute(_LATEST_MEASUREMENTS, {"ids": keys, "org": self._org})).all()
        found = {r.metric_id: r for r in rows}
        return [found.get(k) for k in keys]

    async def _load_top_objectives(self, keys: list[tuple[int, int]]) -> list[list[Any]]:
        by_cycle: dict[int, list[int]] = defaultdict(list)
        for cycle, team in keys:
            by_cycle[cycle].append(team)
        found: dict[int, dict[int, list[Any]]] = {}
        async with self.db.connect() as conn:
            for cycle, teams in by_cycle.items():
                found[cycle] = await team_progress.top_objectives(conn, self.p, cycle, teams)
        return [found[cycle].get(team, []) for cycle, team in keys]

    async def _load_ancestors(self, keys: list[int]) -> list[list[Any]]:
        async with self.db.connect() as conn:
            rows = (await conn.execute(_ANCESTORS, {"ids": keys, "org": self._org})).all()
        groups: dict[int, list[Any]] = defaultdict(list)
        for r in rows:
            groups[r.start_id].append(r)
        return [groups.get(k, []) for k in keys]

    async def _load_record(self, keys: list[RecordKey]) -> list[Fit]:
        """One statement per distinct `now` (one per request) for any number of key results."""
        windows: dict[datetime, dict[int, datetime]] = defaultdict(dict)
        for pk, since, now in keys:
            windows[now][pk] = since
        found: dict[datetime, dict[int, Fit]] = {}
        async with self.db.connect() as conn:
            for now, starts in windows.items():
                found[now] = await record_points(conn, self._org, list(starts), starts, now)
        return [found[now][pk] for pk, _, now in keys]

    async def _load_descendants(self, keys: list[tuple[int, int]]) -> list[list[Any]]:
        by_depth: dict[int, list[int]] = defaultdict(list)
        for pk, depth in keys:
            by_depth[depth].append(pk)
        groups: dict[tuple[int, int], list[Any]] = defaultdict(list)
        async with self.db.connect() as conn:
            for depth, ids in by_depth.items():
                rows = await conn.execute(
                    _DESCENDANTS, {"ids": ids, "org": self._org, "max_depth": depth}
                )
                for r in rows:
                    groups[(r.start_id, depth)].append(r)
        return [groups.get(k, []) for k in keys]
