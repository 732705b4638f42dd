"""The `okr` subcommands for work that happens later: `okr jobs`, `okr webhook ...`,
`okr source run` (kept apart from service/cli.py, which holds the rest)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import text

from service import migrate
from service.cli_support import acting_for
from service.db import Database, resolve_url
from service.domain.errors import ErrorCode, Rejected
from service.domain.principal import Principal
from service.settings import Settings

T = TypeVar("T")


def _prepare(settings: Settings) -> str:
    url = resolve_url(settings)
    migrate.upgrade(url)
    return url


def _run(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        db = Database(url, pool_size=2)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


def table(rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; the last column as it is."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]) - 1)]
    for row in cells:
        print("  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]))


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    from service import jobs

    url = _prepare(settings)

    async def listed(db: Database) -> list[Any]:
        return await jobs.list_jobs(db, args.status, args.limit)

    rows: list[Sequence[Any]] = [("ID", "KIND", "STATUS", "RUN AT", "ATTEMPTS", "BY", "ERROR")]
    rows += [
        (
            j.id,
            j.kind,
            j.status,
            _when(j.run_at),
            j.attempts,
            j.locked_by or "-",
            (j.last_error or "-").replace("\n", " ")[:120],
        )
        for j in _run(url, listed)
    ]
    table(rows)
    return 0


async def _operator(db: Database, slug: str) -> Principal:
    """The organization `slug`'s admin, as the command acts (cli_support.acting_for)."""
    from service.usecases import organizations

    async with db.sessions() as s:
        org = await organizations.organization_by_slug(s, slug)
    return acting_for(org)


def _pk(value: str, type_name: str) -> int:
    """A global id (as the API shows it) or a plain number."""
    from schema import ids

    if value.isdigit():
        return int(value)
    try:
        return ids.decode_as(value, type_name)
    except ids.BadId as exc:
        raise Rejected(ErrorCode.INVALID, f"{value!r}: {exc}") from None


def cmd_webhook_list(args: argparse.Namespace, settings: Settings) -> int:
    from schema import ids

    url = _prepare(settings)

    async def listed(db: Database) -> list[Any]:
        p = await _operator(db, args.org)
        async with db.sessions() as s:
            stmt = text(
                "SELECT e.*, t.name AS team, "
                "(SELECT count(*) FROM webhook_delivery d WHERE d.endpoint_id = e.id "
                " AND d.status IN ('PENDING', 'RETRYING')) AS waiting "
                "FROM webhook_endpoint e LEFT JOIN team t ON t.id = e.team_id "
                "WHERE e.organization_id = :org ORDER BY e.id"
            )
            return list((await s.execute(stmt, {"org": p.organization_id})).all())

    rows: list[Sequence[Any]] = [("ID", "ACTIVE", "KINDS", "TEAM", "WAITING", "URL")]
    for e in _run(url, listed):
        active = "yes" if e.active else f"no ({e.disabled_reason or 'turned off'})"
        kinds = ",".join(e.kinds) or "all"
        rows.append(
            (ids.encode("WebhookEndpoint", e.id), active, kinds, e.team or "-", e.waiting, e.url)
        )
    table(rows)
    return 0


def cmd_webhook_deliveries(args: argparse.Namespace, settings: Settings) -> int:
    from schema import ids

    url = _prepare(settings)
    endpoint_id = _pk(args.endpoint, "WebhookEndpoint")

    async def listed(db: Database) -> list[Any]:
        p = await _operator(db, args.org)
        async with db.sessions() as s:
            stmt = text(
                "SELECT d.*, v.kind, v.seq FROM webhook_delivery d "
                "LEFT JOIN event v ON v.id = d.event_id "
                "WHERE d.organization_id = :org AND d.endpoint_id = :endpoint "
                "AND (CAST(:status AS text) IS NULL OR d.status = :status) "
                "ORDER BY d.id DESC LIMIT :n"
            )
            params = {
                "org": p.organization_id,
                "endpoint": endpoint_id,
                "status": args.status,
                "n": args.limit,
            }
            return list((await s.execute(stmt, params)).all())

    rows: list[Sequence[Any]] = [
        ("ID", "STATUS", "ATTEMPTS", "LAST ATTEMPT", "NEXT", "HTTP", "MS", "EVENT")
    ]
    for d in _run(url, listed):
        rows.append(
            (
                ids.encode("WebhookDelivery", d.id),
                d.status,
                d.attempts,
                _when(d.last_attempt_at),
                _when(d.next_attempt_at),
                d.response_status if d.response_status is not None else "-",
                f"{d.duration_ms:.0f}" if d.duration_ms is not None else "-",
                f"{d.kind} #{d.seq}" if d.kind else "ping",
            )
        )
    table(rows)
    return 0


def cmd_webhook_redeliver(args: argparse.Namespace, settings: Settings) -> int:
    from schema import ids
    from service import webhooks

    url = _prepare(settings)
    delivery_id = _pk(args.delivery, "WebhookDelivery")

    async def again(db: Database) -> Any:
        p = await _operator(db, args.org)
        return await db.transaction(lambda s: webhooks.redeliver(s, p, delivery_id))

    row = _run(url, again)
    print(f"queued {ids.encode('WebhookDelivery', row.id)} (a new delivery of the same event)")
    return 0


def cmd_source_run(args: argparse.Namespace, settings: Settings) -> int:
    """Run a metric's source now, once, as `runMetricSource` does. Exit 1 when it fails."""
    from service import sources
    from service.outbound import Outbound
    from service.secrets import Box

    url = _prepare(settings)

    async def run(db: Database) -> Any:
        p = await _operator(db, args.org)
        async with db.sessions() as s:
            metric_id = await s.scalar(
                text("SELECT id FROM metric WHERE organization_id = :org AND key = :key"),
                {"org": p.organization_id, "key": args.key},
            )
        if metric_id is None:
            raise Rejected(ErrorCode.NOT_FOUND, f"metric {args.key!r} not found")
        outbound = Outbound.from_settings(settings)
        try:
            await sources.run_now(
                db,
                p,
                metric_id,
                outbound=outbound,
                box=Box.from_settings(settings),
                max_check_ins=settings.max_batch_check_ins,
            )
        finally:
            await outbound.close()
        return await sources.source_of(db, p.organization_id, metric_id)

    source = _run(url, run)
    if source.last_error:
        print(f"okr: {args.key}: {source.last_error}", file=sys.stderr)
        return 1
    print(f"{args.key} = {source.last_value:g} at {_when(source.last_run_at)}")
    return 0


def register(sub: Any) -> None:
    """Add the subcommands to `okr`'s parser."""
    jobs = sub.add_parser("jobs", help="jobs not done yet: pending, running, failed")
    jobs.add_argument("--status", choices=["PENDING", "RUNNING", "FAILED"])
    jobs.add_argument("--limit", type=int, default=100)
    jobs.set_defaults(func=cmd_jobs)

    webhook = sub.add_parser("webhook", help="webhook endpoints and deliveries").add_subparsers(
        dest="webhook_command", required=True
    )
    wl = webhook.add_parser("list", help="the organization's endpoints")
    wl.add_argument("--org", required=True, help="organization slug")
    wl.set_defaults(func=cmd_webhook_list)
    wd = webhook.add_parser("deliveries", help="an endpoint's delivery log, newest first")
    wd.add_argument("--org", required=True)
    wd.add_argument("endpoint", help="the endpoint's id (as `okr webhook list` shows it)")
    wd.add_argument("--status", choices=["PENDING", "SUCCEEDED", "RETRYING", "FAILED"])
    wd.add_argument("--limit", type=int, default=50)
    wd.set_defaults(func=cmd_webhook_deliveries)
    wr = webhook.add_parser("redeliver", help="deliver a delivery's event again (same id)")
    wr.add_argument("--org", required=True)
    wr.add_argument("delivery", help="the delivery's id")
    wr.set_defaults(func=cmd_webhook_redeliver)

    source = sub.add_parser("source", help="metric sources").add_subparsers(
        dest="source_command", required=True
    )
    sr = source.add_parser("run", help="run a metric's source now, once (exit 1 on failure)")
    sr.add_argument("--org", required=True)
    sr.add_argument("key", metavar="METRIC_KEY")
    sr.set_defaults(func=cmd_source_run)
