"""Metric sources: a metric that pulls its value itself (the contract's "Metric sources").

- PROMETHEUS: an instant query through `/api/v1/query` at the run's scheduled instant;
  the answer must be a scalar or a vector of exactly one sample.
- HTTP_JSON: a GET whose JSON body holds a number at a JSON pointer (RFC 6901).

Runs happen at multiples of `interval_seconds` since the epoch, the same instants on
every replica: each job-runner turn (service/jobs.py) moves the due sources'
`next_run_at` under row locks taken with SKIP LOCKED and queues one job per source in
the same transaction, so each run is made once whatever the number of processes. The
request goes through the safe outbound client (service/outbound.py), outside any
transaction; its value is then recorded exactly as `recordMeasurements` records it
(service/usecases/metrics.py: bounds, one CHECK_IN event per affected key result), as
the organization itself, with the idempotency key `source:<instant>`: a repeated run of
one instant writes nothing. `source` is "prometheus" or "http_json".

A failing run sets `last_error` and writes METRIC_SOURCE_FAILED once per change of
state (the `failing` flag), not once per run; the next success writes
METRIC_SOURCE_RECOVERED. Headers (an Authorization, say) are stored encrypted
(service/secrets.py) and never read back.

`backfill` fills the record first: a range query (`/api/v1/query_range`) from the
earliest start of the bound key results' cycles to the run's instant, at the shortest
check-in cadence among them, recorded in batches, so realism has a record from day one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service import clock, events, jobs
from service.access import require_admin, require_record_measurements
from service.db import Database
from service.domain.enums import MetricSourceKind
from service.domain.errors import ErrorCode, Rejected, invalid, not_found
from service.domain.principal import Principal
from service.jobs import Job
from service.outbound import Outbound, OutboundFailed, UnsafeTarget
from service.secrets import Box
from service.usecases import metrics

RUN = "source.run"
MIN_INTERVAL = 60
MAX_HEADERS = 20


class SourceFailed(Exception):
    """A run that got no usable value: the reason becomes `lastError`."""


@dataclass(frozen=True)
class SetSource:
    metric_id: int
    kind: MetricSourceKind | None  # None: remove the source
    url: str | None = None
    query: str | None = None
    interval_seconds: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    backfill: bool = False


def instant_of(now: datetime, interval: int) -> datetime:
    """The latest scheduled instant at or before `now`: a multiple of the interval."""
    epoch = math.floor(now.timestamp() / interval) * interval
    return datetime.fromtimestamp(epoch, UTC)


# --- setting a source (ADMIN) ---------------------------------------------------------------


def _checked_pointer(pointer: str) -> str:
    if pointer and not pointer.startswith("/"):
        raise invalid("a JSON pointer is empty or starts with '/' (RFC 6901)", "query")
    return pointer


async def set_source(
    session: AsyncSession, p: Principal, cmd: SetSource, *, outbound: Outbound, box: Box
) -> Any:
    """Set, replace or (kind None) remove the metric's source; returns the metric row."""
    require_admin(p)
    metric = (
        await session.execute(
            text("SELECT * FROM metric WHERE id = :id AND organization_id = :org FOR UPDATE"),
            {"id": cmd.metric_id, "org": p.organization_id},
        )
    ).one_or_none()
    if metric is None:
        raise not_found("metric", "metricId")
    if cmd.kind is None:
        await session.execute(
            text("DELETE FROM metric_source WHERE metric_id = :id"), {"id": cmd.metric_id}
        )
        return metric
    if not cmd.url:
        raise invalid("a source needs a url", "url")
    try:
        await outbound.resolve(cmd.url.strip())
    except UnsafeTarget as exc:
        raise invalid(str(exc), "url") from None
    query = (cmd.query or "").strip() if cmd.kind == MetricSourceKind.PROMETHEUS else cmd.query
    if cmd.kind == MetricSourceKind.PROMETHEUS and not query:
        raise invalid("a PROMETHEUS source needs a PromQL query", "query")
    if cmd.kind == MetricSourceKind.HTTP_JSON:
        query = _checked_pointer(cmd.query or "")
        if cmd.backfill:
            raise invalid("only a PROMETHEUS source can backfill", "backfill")
    if query is None or len(query) > 4000:
        raise invalid("the query is at most 4,000 characters", "query")
    interval = cmd.interval_seconds
    if interval is None or interval < MIN_INTERVAL or interval > 86400 * 31:
        raise invalid(f"intervalSeconds is between {MIN_INTERVAL} and 2678400", "intervalSeconds")
    if len(cmd.headers) > MAX_HEADERS:
        raise invalid(f"at most {MAX_HEADERS} headers", "headers")
    for i, (name, value) in enumerate(cmd.headers):
        if not name or not name.isascii() or not all(c.isalnum() or c in "-_" for c in name):
            raise invalid(f"header {i}: not a header name", "headers", str(i), "name")
        if "\r" in value or "\n" in value:
            raise invalid(f"header {i}: a value is one line", "headers", str(i), "value")
    sealed = box.seal(json.dumps([list(h) for h in cmd.headers])) if cmd.headers else None
    now = clock.now()
    next_run = instant_of(now, interval) + timedelta(seconds=interval)
    await session.execute(
        text(
            """
            INSERT INTO metric_source (metric_id, organization_id, kind, url, query,
                                       interval_seconds, headers, next_run_at)
            VALUES (:id, :org, :kind, :url, :query, :interval, :headers, :next)
            ON CONFLICT (metric_id) DO UPDATE SET
                kind = EXCLUDED.kind, url = EXCLUDED.url, query = EXCLUDED.query,
                interval_seconds = EXCLUDED.interval_seconds, headers = EXCLUDED.headers,
                next_run_at = EXCLUDED.next_run_at, last_error = NULL, failing = false
            """
        ),
        {
            "id": cmd.metric_id,
            "org": p.organization_id,
            "kind": str(cmd.kind),
            "url": cmd.url.strip(),
            "query": query,
            "interval": interval,
            "headers": sealed,
            "next": next_run,
        },
    )
    if cmd.backfill:
        payload = {"metric_id": cmd.metric_id, "instant": instant_of(now, interval).isoformat()}
        await jobs.enqueue(
            session, RUN, payload | {"backfill": True}, organization_id=p.organization_id
        )
    return metric


# --- scheduling ------------------------------------------------------------------------------

_DUE = text(
    """
    UPDATE metric_source s
    SET next_run_at = to_timestamp((floor(extract(epoch FROM CAST(:now AS timestamptz))
                                          / s.interval_seconds) + 1) * s.interval_seconds)
    FROM (
        SELECT metric_id FROM metric_source WHERE next_run_at <= :now
        ORDER BY next_run_at LIMIT 100
        FOR UPDATE SKIP LOCKED
    ) due
    WHERE s.metric_id = due.metric_id
    RETURNING s.metric_id, s.organization_id, s.interval_seconds
    """
)


async def schedule(db: Database) -> int:
    """Queue a run for every source whose instant came (once across processes)."""

    async def work(session: AsyncSession) -> int:
        now = clock.now()
        rows = (await session.execute(_DUE, {"now": now})).all()
        for r in rows:
            payload = {"metric_id": r.metric_id, "instant": instant_of(now, r.interval_seconds)}
            payload["instant"] = payload["instant"].isoformat()
            await jobs.enqueue(session, RUN, payload, organization_id=r.organization_id)
        return len(rows)

    return await db.transaction(work)


# --- one run --------------------------------------------------------------------------------

_SOURCE = text(
    """
    SELECT s.*, m.key, o.on_track_gap, o.at_risk_gap, o.check_in_cadence_days
    FROM metric_source s
    JOIN metric m ON m.id = s.metric_id
    JOIN organization o ON o.id = s.organization_id
    WHERE s.metric_id = :id
    """
)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise SourceFailed(f"{what} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SourceFailed(f"{what} is not a number: {str(value)[:60]!r}") from None
    if not math.isfinite(number):
        raise SourceFailed(f"{what} is not a finite number: {value!r}")
    return number


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise SourceFailed("the answer is not JSON") from None


def _api(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))


async def _get(
    outbound: Outbound, url: str, headers: dict[str, str], params: dict[str, str] | None = None
) -> Any:
    try:
        answer = await outbound.request("GET", url, headers=headers, params=params)
    except (OutboundFailed, UnsafeTarget) as exc:
        raise SourceFailed(str(exc)) from None
    if not 200 <= answer.status < 300:
        raise SourceFailed(f"HTTP {answer.status}: {answer.body[:200].decode('utf-8', 'replace')}")
    return _json(answer.body)


def _prometheus_data(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        raise SourceFailed(f"Prometheus answered an error: {error or body!r}"[:300])
    data = body.get("data")
    if not isinstance(data, dict):
        raise SourceFailed("Prometheus answered no data")
    return data


async def prometheus_value(
    outbound: Outbound, url: str, query: str, at: datetime, headers: dict[str, str]
) -> float:
    body = await _get(
        outbound,
        _api(url, "/api/v1/query"),
        headers,
        {"query": query, "time": f"{at.timestamp():.3f}"},
    )
    data = _prometheus_data(body)
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return _number(result[1], "the scalar")
    if kind == "vector" and isinstance(result, list):
        if len(result) != 1:
            raise SourceFailed(
                f"the query returned {len(result)} samples; exactly one is needed"
                + (" (aggregate it, e.g. sum(...))" if len(result) > 1 else "")
            )
        return _number(result[0].get("value", [None, None])[1], "the sample")
    raise SourceFailed(f"the query returned a {kind}; a scalar or one sample is needed")


async def prometheus_range(
    outbound: Outbound,
    url: str,
    query: str,
    start: datetime,
    end: datetime,
    step: timedelta,
    headers: dict[str, str],
) -> list[tuple[datetime, float]]:
    body = await _get(
        outbound,
        _api(url, "/api/v1/query_range"),
        headers,
        {
            "query": query,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": f"{int(step.total_seconds())}s",
        },
    )
    data = _prometheus_data(body)
    result = data.get("result")
    if data.get("resultType") != "matrix" or not isinstance(result, list):
        raise SourceFailed("the range query returned no matrix")
    if len(result) > 1:
        raise SourceFailed(f"the query returned {len(result)} series; exactly one is needed")
    values = result[0].get("values", []) if result else []
    return [(datetime.fromtimestamp(float(ts), UTC), _number(v, "a sample")) for ts, v in values]


def json_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901: the value at `pointer` ("" is the whole document)."""
    if pointer == "":
        return document
    node = document
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise SourceFailed(f"nothing at {pointer!r} in the answer")
    return node


async def fetch(outbound: Outbound, source: Any, at: datetime, headers: dict[str, str]) -> float:
    if source.kind == MetricSourceKind.PROMETHEUS:
        return await prometheus_value(outbound, source.url, source.query, at, headers)
    body = await _get(outbound, source.url, headers)
    return _number(json_pointer(body, source.query), f"the value at {source.query!r}")


def organization_principal(source: Any) -> Principal:
    """Runs record as the organization itself, as `okr metric record` does."""
    return Principal(
        organization_id=source.organization_id,
        role="SERVICE",
        on_track_gap=source.on_track_gap,
        at_risk_gap=source.at_risk_gap,
        check_in_cadence_days=source.check_in_cadence_days,
    )


_SPAN = text(
    """
    SELECT min(c.starts_on) AS starts_on,
           min(coalesce(t.check_in_cadence_days, g.check_in_cadence_days)) AS cadence
    FROM key_result k
    JOIN objective o ON o.id = k.objective_id
    JOIN cycle c ON c.id = o.cycle_id AND c.status IN ('ACTIVE', 'REVIEW')
    JOIN organization g ON g.id = k.organization_id
    LEFT JOIN team t ON t.id = o.team_id
    WHERE k.metric_id = :id AND k.organization_id = :org AND o.archived_at IS NULL
    """
)


async def _record(
    db: Database, source: Any, points: Sequence[tuple[datetime, float]], max_check_ins: int
) -> None:
    """Record points as recordMeasurements does; an instant already recorded (by an
    earlier run, whatever its value) is left as it is."""
    p = organization_principal(source)
    source_name = str(source.kind).lower()
    for start in range(0, len(points), metrics.MAX_BATCH):
        chunk = points[start : start + metrics.MAX_BATCH]
        batch = [
            metrics.MeasurementInput(
                metric_key=source.key,
                value=value,
                measured_at=at,
                source=source_name,
                idempotency_key=f"source:{int(at.timestamp())}",
            )
            for at, value in chunk
        ]

        async def work(s: AsyncSession, batch: list[metrics.MeasurementInput] = batch) -> None:
            taken = await s.execute(
                text(
                    "SELECT idempotency_key FROM measurement WHERE metric_id = :id "
                    "AND caller = :caller AND idempotency_key = ANY(:keys)"
                ),
                {
                    "id": source.metric_id,
                    "caller": f"organization:{source.organization_id}",
                    "keys": [m.idempotency_key for m in batch],
                },
            )
            done = set(taken.scalars())
            fresh = [m for m in batch if m.idempotency_key not in done]
            if fresh:
                await metrics.record_measurements(s, p, fresh, max_check_ins=max_check_ins)

        await db.transaction(work)


async def run_source(
    db: Database,
    outbound: Outbound,
    box: Box,
    metric_id: int,
    at: datetime,
    *,
    backfill: bool = False,
    max_check_ins: int = metrics.MAX_BATCH_CHECK_INS,
) -> None:
    """One run at instant `at` (with the backfill first when asked)."""
    async with db.sessions() as s:
        source = (await s.execute(_SOURCE, {"id": metric_id})).one_or_none()
        span = (
            (await s.execute(_SPAN, {"id": metric_id, "org": source.organization_id})).one()
            if source is not None and backfill
            else None
        )
    if source is None:
        return  # removed since it was queued
    headers = dict(json.loads(box.open(source.headers))) if source.headers else {}
    try:
        if span is not None and span.starts_on is not None:
            start = datetime.combine(span.starts_on, datetime.min.time(), UTC)
            step = timedelta(days=span.cadence)
            points = await prometheus_range(
                outbound, source.url, source.query, start, at, step, headers
            )
            await _record(db, source, points, max_check_ins)
        value = await fetch(outbound, source, at, headers)
        await _record(db, source, [(at, value)], max_check_ins)
    except (SourceFailed, Rejected) as exc:
        reason = exc.message if isinstance(exc, Rejected) else str(exc)
        await _note(db, source, at, None, reason[:1000])
        return
    await _note(db, source, at, value, None)


async def _note(
    db: Database, source: Any, at: datetime, value: float | None, error: str | None
) -> None:
    """The run's outcome on the source; an event only when the state changes."""

    async def work(s: AsyncSession) -> None:
        was = await s.scalar(
            text(
                "UPDATE metric_source m SET last_run_at = :at, last_error = :error, "
                "last_value = coalesce(:value, last_value), failing = :failing "
                "FROM (SELECT failing FROM metric_source WHERE metric_id = :id FOR UPDATE) old "
                "WHERE m.metric_id = :id RETURNING old.failing"
            ),
            {
                "id": source.metric_id,
                "at": at,
                "error": error,
                "value": value,
                "failing": error is not None,
            },
        )
        if was is None:
            return
        if error is not None and not was:
            event = events.metric_source_failed(source.metric_id, source.key, error)
            await events.record(s, None, source.organization_id, event)
        elif error is None and was and value is not None:
            event = events.metric_source_recovered(source.metric_id, source.key, value)
            await events.record(s, None, source.organization_id, event)

    await db.transaction(work)


def runner(
    db: Database, outbound: Outbound, box: Box, max_check_ins: int = metrics.MAX_BATCH_CHECK_INS
) -> Callable[[Job], Awaitable[None]]:
    async def run(job: Job) -> None:
        at = datetime.fromisoformat(job.payload["instant"])
        await run_source(
            db,
            outbound,
            box,
            int(job.payload["metric_id"]),
            at,
            backfill=bool(job.payload.get("backfill")),
            max_check_ins=max_check_ins,
        )

    return run


async def run_now(
    db: Database, p: Principal, metric_id: int, *, outbound: Outbound, box: Box, max_check_ins: int
) -> Any:
    """`runMetricSource`: a run now (cut to the second), once; ADMIN or SERVICE. Returns
    the metric row."""
    require_record_measurements(p)
    async with db.sessions() as s:
        metric = (
            await s.execute(
                text("SELECT * FROM metric WHERE id = :id AND organization_id = :org"),
                {"id": metric_id, "org": p.organization_id},
            )
        ).one_or_none()
        has_source = metric is not None and await s.scalar(
            text("SELECT 1 FROM metric_source WHERE metric_id = :id"), {"id": metric_id}
        )
    if metric is None:
        raise not_found("metric", "metricId")
    if not has_source:
        raise Rejected(ErrorCode.CONFLICT, "the metric has no source", ["metricId"])
    at = clock.now().replace(microsecond=0)
    await run_source(db, outbound, box, metric_id, at, max_check_ins=max_check_ins)
    return metric


async def source_of(db: Database, organization_id: int, metric_id: int) -> Any:
    async with db.sessions() as s:
        return (
            await s.execute(
                text(
                    "SELECT kind, url, query, interval_seconds, last_run_at, last_value, "
                    "last_error, next_run_at FROM metric_source "
                    "WHERE metric_id = :id AND organization_id = :org"
                ),
                {"id": metric_id, "org": organization_id},
            )
        ).one_or_none()
