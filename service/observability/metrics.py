"""The service's own figures for Prometheus, with prometheus_client ("telemetry" in
code, so that "metric" stays the domain's word: service/usecases/metrics.py).

Single process: the default registry, with process and platform metrics. With
PROMETHEUS_MULTIPROC_DIR set (`okr serve --workers N`), every worker writes its values
to files there and /metrics merges them (prometheus_client's multiprocess mode); its
documented limits apply: no process, platform or GC metrics, gauges are summed over
live workers, and the directory must be emptied before the server starts.

Label values are bounded, and nobody can use them up for others: an operation name
becomes a label only from an operation that an authenticated caller ran (it parsed and
validated against the schema), each organization brings in at most
MAX_NAMES_PER_ORGANIZATION names, and a process keeps at most MAX_OPERATION_NAMES in
all; any other name (unauthenticated, refused, malformed, past a bound) is "other".
A name already a label is one for every caller. Error codes must look like codes (A-Z
and _), else "other"; routes are a fixed set.
"""

from __future__ import annotations

import hmac
import os
import re
import threading
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MAX_OPERATION_NAMES = 500
MAX_NAMES_PER_ORGANIZATION = 50
OTHER = "other"
ANONYMOUS = "anonymous"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,47}")
ROUTES = ("/graphql", "/metrics", "/healthz", "/readyz")


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STATEMENT_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144)

HTTP_REQUESTS = Counter(
    "okr_http_requests",
    "HTTP requests answered, by route, method and status code.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "okr_http_request_duration_seconds",
    "Time from receiving an HTTP request to the end of its response, by route and status.",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS,
)
GRAPHQL_LATENCY = Histogram(
    "okr_graphql_request_duration_seconds",
    "Time to answer a GraphQL request over HTTP, by operation name (names that "
    f"authenticated callers ran, at most {MAX_NAMES_PER_ORGANIZATION} per organization and "
    f"{MAX_OPERATION_NAMES} in all, else 'other'), operation type and HTTP status.",
    ["operation_name", "operation_type", "status"],
    buckets=_LATENCY_BUCKETS,
)
GRAPHQL_ERRORS = Counter(
    "okr_graphql_errors",
    "Errors returned to clients, by extensions.code (HTTP-level refusals included).",
    ["code"],
)
SQL_STATEMENTS = Histogram(
    "okr_http_request_sql_statements",
    "SQL statements run to answer one HTTP request, by route.",
    ["route"],
    buckets=_STATEMENT_BUCKETS,
)
CACHE_LOOKUPS = Counter(
    "okr_result_cache_lookups",
    "Result-cache lookups for queries, by result (hit or miss).",
    ["result"],
)
SUBSCRIBERS = Gauge(
    "okr_subscribers",
    "Open GraphQL subscriptions reading the event stream.",
    multiprocess_mode="livesum",
)
DELIVERIES = Counter(
    "okr_subscription_deliveries",
    "Events handed to subscribers' queues.",
)
RECONNECTS = Counter(
    "okr_event_listener_reconnects",
    "Times the event listener (LISTEN connection) was reconnected.",
)
POOL = Gauge(
    "okr_db_pool_connections",
    "Database connections of a pool, by pool (requests or events) and state "
    "(checked_out, idle, size).",
    ["pool", "state"],
    multiprocess_mode="livesum",
)
# Jobs (service/jobs.py): every process samples the one table, so the gauges agree and
# workers report the largest.
JOBS_BACKLOG = Gauge(
    "okr_jobs_backlog",
    "Jobs due now, by kind and state (pending, running).",
    ["kind", "state"],
    multiprocess_mode="max",
)
JOBS_AGE = Gauge(
    "okr_jobs_oldest_age_seconds",
    "How long the oldest due pending job of a kind has waited.",
    ["kind"],
    multiprocess_mode="max",
)
JOBS_FAILED = Gauge(
    "okr_jobs_failed",
    "Jobs that failed for good (kept for `okr jobs`), by kind.",
    ["kind"],
    multiprocess_mode="max",
)
JOBS_RUN = Counter(
    "okr_jobs_run",
    "Job runs, by kind and outcome (succeeded, retried, failed).",
    ["kind", "outcome"],
)
for _result in ("hit", "miss"):
    CACHE_LOOKUPS.labels(_result)  # both series exist from the start


class OperationNames:
    """The operation-name label. A well-formed name is kept when it is one already, or
    when `organization` (the authenticated caller's, given only for an operation that
    validated) has brought in fewer than `per_organization` names and the process holds
    fewer than `limit`; anything else is 'other'."""

    def __init__(
        self, limit: int = MAX_OPERATION_NAMES, per_organization: int = MAX_NAMES_PER_ORGANIZATION
    ) -> None:
        self.limit = limit
        self.per_organization = per_organization
        self.seen: set[str] = set()
        self.brought: dict[int, int] = {}  # organization -> names it brought in
        self._lock = threading.Lock()

    def label(self, name: str | None, organization: int | None = None) -> str:
        if not name:
            return ANONYMOUS
        if not _NAME.fullmatch(name):
            return OTHER
        with self._lock:
            if name in self.seen:
                return name
            if organization is None or len(self.seen) >= self.limit:
                return OTHER
            brought = self.brought.get(organization, 0)
            if brought >= self.per_organization:
                return OTHER
            self.brought[organization] = brought + 1
            self.seen.add(name)
            return name


operation_names = OperationNames()


def code_label(code: object) -> str:
    return code if isinstance(code, str) and _CODE.fullmatch(code) else OTHER


def route_label(path: str) -> str:
    if path in ROUTES or path.rstrip("/") in ROUTES:
        return path.rstrip("/") or path
    if path.startswith("/export/"):
        return "/export"
    return OTHER


def count_cache(hit: bool) -> None:
    CACHE_LOOKUPS.labels("hit" if hit else "miss").inc()


def observe_request(
    *,
    path: str,
    method: str,
    status: int,
    seconds: float,
    statements: int | None,
    operation: tuple[str | None, str | None] | None,
    codes: list[str],
    organization: int | None = None,
) -> None:
    """`organization`: the authenticated caller's, when its operation validated."""
    route = route_label(path)
    status_text = str(status)
    HTTP_REQUESTS.labels(route, method, status_text).inc()
    HTTP_LATENCY.labels(route, method, status_text).observe(seconds)
    if statements is not None:
        SQL_STATEMENTS.labels(route).observe(statements)
    if operation is not None:
        name, kind = operation
        label = operation_names.label(name, organization)
        GRAPHQL_LATENCY.labels(label, kind or "unknown", status_text).observe(seconds)
    for code in codes:
        GRAPHQL_ERRORS.labels(code_label(code)).inc()


class Sampler:
    """Reads the live figures of one process (pools, subscribers) and the event hub's
    running counts; counters advance by what changed since the last reading, so that
    the same code works in one process and in multiprocess mode."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def _advance(self, counter: Counter, key: str, total: int) -> None:
        delta = total - self._seen.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        self._seen[key] = max(total, self._seen.get(key, 0))

    def sample(self, state: Any) -> None:
        for pool_name, attr in (("requests", "db"), ("events", "hub_db")):
            db = getattr(state, attr, None)
            if db is None:
                continue
            pool = db.engine.pool
            checked_out = _call(pool, "checkedout")
            idle = _call(pool, "checkedin")
            POOL.labels(pool_name, "checked_out").set(checked_out)
            POOL.labels(pool_name, "idle").set(idle)
            POOL.labels(pool_name, "size").set(_call(pool, "size"))
        hub = getattr(state, "hub", None)
        SUBSCRIBERS.set(hub.subscriber_count if hub is not None else 0)
        if hub is not None:
            self._advance(RECONNECTS, "reconnects", getattr(hub, "reconnects", 0))
            self._advance(DELIVERIES, "deliveries", getattr(hub, "deliveries", 0))


def _call(pool: Any, name: str) -> int:
    method = getattr(pool, name, None)
    try:
        return int(method()) if callable(method) else 0
    except Exception:
        return 0


def render() -> tuple[bytes, str]:
    """The exposition text of this process, or of all workers in multiprocess mode."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def token_accepted(expected: Any, authorization: str | None) -> bool:
    """OKR_METRICS_TOKEN: scrapers send it as a bearer token (compared in constant time).
    `expected` may be a plain string or a pydantic SecretStr."""
    reveal = getattr(expected, "get_secret_value", None)
    expected_token = reveal() if callable(reveal) else expected
    if not expected_token:
        return True
    given = (authorization or "").encode()
    return hmac.compare_digest(given, f"Bearer {expected_token}".encode())


def mark_worker_dead(pid: int) -> None:
    """For a supervisor in multiprocess mode: drop a dead worker's live gauges."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)
