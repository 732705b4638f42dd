"""The `okr` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import os
import signal
import sys
from datetime import UTC
from typing import TypeVar

from pydantic import ValidationError

from service import cli_credentials, cli_support, cli_transfer, cli_users, clock, migrate
from service.auth import issue_token
from service.db import Database, direct_url, resolve_url
from service.domain.errors import Rejected
from service.models import pk_of
from service.observability import logs
from service.settings import Settings, describe_refusal, get_settings

T = TypeVar("T")


_run = cli_support.run
_prepare = cli_support.prepare


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from service import demo, workers

    url = _prepare(settings)
    if args.demo:  # a front end in development may call it from localhost (service/cors.py)
        settings = settings.model_copy(update={"cors_localhost": True})
        os.environ["OKR_CORS_LOCALHOST"] = "true"  # and so may every worker's settings
        if settings.clock_start is None:  # the demo's own date, unless the operator set one
            clock.start_for_children(demo.NOW)

        async def seed(db: Database) -> tuple[int, int] | None:
            if not await demo.is_empty(db):
                return None
            return await demo.seed(db)

        created = _run(url, seed)
        secret = settings.resolved_jwt_secret()

        async def admin(db: Database):
            from service.usecases import organizations

            async with db.sessions() as s:
                org = await organizations.organization_by_slug(s, demo.SLUG)
                user = await organizations.user_by_email(s, pk_of(org), demo.ADMIN_EMAIL)
                return org.id, user.id

        try:
            org_id, user_id = _run(url, admin)
        except Rejected:
            print(
                "the database holds data but no demo organization; no demo token printed",
                file=sys.stderr,
            )
        else:
            token = issue_token(secret, user_id, org_id, settings.jwt_ttl_days)
            shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
            print(("Seeded" if created else "Found") + " the demo organization 'northwind'.")
            print(f"GraphiQL: http://{shown}:{args.port}/graphql")
            print(f"Admin token (Dana Okafor, ADMIN):\n{token}", flush=True)
    options = dict(
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=args.log_config,
        ws="websockets-sansio" if _has_sansio() else "auto",
        ws_max_size=settings.max_body_bytes,  # as HTTP bodies; the app checks it too
        timeout_graceful_shutdown=args.drain_seconds,
        backlog=args.backlog,
    )
    if args.workers > 1:
        # N processes on one port (service/workers.py): each builds its app from the
        # URL resolved here, so an embedded database is started once, by this process.
        os.environ[workers.URL_ENV] = url
        config = uvicorn.Config(
            "service.workers:app_factory", factory=True, workers=args.workers, **options
        )
        workers.run(config)
        return 0
    app = workers.build(url, settings)
    # uvicorn re-raises SIGTERM after its graceful shutdown; exit normally instead, so
    # that the embedded database is stopped by its exit handler.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app, **options)
    return 0


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _has_sansio() -> bool:
    try:
        import websockets.sync  # noqa: F401  (websockets >= 13 ships the sans-I/O core)
    except ImportError:
        return False
    return True


def cmd_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    # under a session-level advisory lock: PostgreSQL itself, never the pooler
    newer = migrate.upgrade(direct_url(settings, resolve_url(settings)))
    if newer:
        print(f"the database is at {newer}, newer than this build's {migrate.head_revision()}:")
        print("nothing done")
    else:
        print(f"migrated to {migrate.head_revision()}")
    return 0


def cmd_org_create(args: argparse.Namespace, settings: Settings) -> int:
    from service.usecases import organizations

    url = _prepare(settings)
    org, admin = _run(
        url,
        lambda db: db.transaction(
            lambda s: organizations.create_organization(
                s, args.name, args.admin_email, args.admin_name, args.slug
            )
        ),
    )
    print(f"organization {org.slug!r} (admin {admin.email})", file=sys.stderr)
    print(
        issue_token(settings.resolved_jwt_secret(), pk_of(admin), pk_of(org), settings.jwt_ttl_days)
    )
    return 0


def cmd_metric_record(args: argparse.Namespace, settings: Settings) -> int:
    """One measurement from a script or cron job. It runs the same use case as
    `recordMeasurements`, as the organization itself: a SERVICE principal with no user
    and no API key (whoever can run `okr` against the database is trusted as the
    service is). Its events have no actor, its check-ins no author, and its idempotency
    keys a scope of their own ('organization:<id>'). Exit 2 on anything refused."""
    from datetime import datetime

    from service.usecases import metrics, organizations

    def refuse(message: str) -> int:
        print(f"okr: {message}", file=sys.stderr)
        return 2

    try:
        value = float(args.value)
    except ValueError:
        return refuse(f"VALUE must be a number, got {args.value!r}")
    at = None
    if args.at is not None:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            return refuse(f"--at must be an ISO instant (2026-11-25T09:00:00Z), got {args.at!r}")
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
    item = metrics.MeasurementInput(
        metric_key=args.key,
        value=value,
        measured_at=at,
        source=args.source,
        idempotency_key=args.idempotency_key,
    )
    url = _prepare(settings)

    async def work(s):
        org = await organizations.organization_by_slug(s, args.org)
        return await metrics.record_measurements(
            s,
            cli_support.acting_for(org, role="SERVICE"),
            [item],
            max_check_ins=settings.max_batch_check_ins,
        )

    try:
        recorded = _run(url, lambda db: db.transaction(work))
    except Rejected as exc:
        return refuse(exc.message.removeprefix("measurement 0: "))
    row = recorded.measurements[0]
    when = row.measured_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    n = len(recorded.check_ins)
    print(f"recorded {args.key} = {row.value:g} at {when}: {n} check-in(s) on bound key results")
    return 0


def cmd_export_schema(args: argparse.Namespace, settings: Settings) -> int:
    from schema.api import build_schema, federated
    from schema.federation import client_sdl, subgraph_sdl

    schema = build_schema(federated(settings))
    if not args.output:
        sys.stdout.write(subgraph_sdl(schema) if args.subgraph else client_sdl(schema))
        return 0
    # The client SDL at --output, the subgraph SDL beside it (schema/subgraph.graphql).
    with open(args.output, "w") as f:
        f.write(client_sdl(schema))
    with open(os.path.join(os.path.dirname(args.output), "subgraph.graphql"), "w") as f:
        f.write(subgraph_sdl(schema))
    return 0


def cmd_verify(_args: argparse.Namespace, settings: Settings) -> int:
    from service.verify import verify, verify_event_sequences

    url = _prepare(settings)

    async def check(db: Database):
        async with db.connect() as conn:
            checked, mismatches = await verify(conn)
            gaps = await verify_event_sequences(conn)
            return checked, mismatches, gaps

    checked, mismatches, gaps = _run(url, check)
    for m in mismatches:
        print(m)
    for g in gaps:
        print(g)
    if mismatches or gaps:
        print(
            f"{len(mismatches)} stored numbers and {len(gaps)} event sequences differ "
            f"({checked} rows checked)"
        )
        return 1
    print(
        f"ok: {checked} key results and objectives match a fresh recomputation; "
        "event sequences have no gaps"
    )
    return 0


def cmd_bench_seed(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from bench.seed import seed

    url = _prepare(settings)
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    counts = asyncio.run(seed(dsn, args.scale, args.slug))
    print(json.dumps(counts))
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="okr", description="A headless GraphQL service for OKRs")
    sub = ap.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve GraphQL (applies migrations first)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--demo", action="store_true", help="seed the demo organization when the database is empty"
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="server processes on the one port (default 1; each has its own event listener)",
    )
    serve.add_argument(
        "--backlog",
        type=_positive,
        default=4096,
        help="connections the kernel holds for each listening socket until it accepts "
        "them (default 4096; capped by net.core.somaxconn)",
    )
    serve.add_argument(
        "--drain-seconds",
        type=float,
        default=10.0,
        help="on SIGTERM, how long open requests and sockets get to finish",
    )
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="apply migrations to head").set_defaults(func=cmd_migrate)

    org = sub.add_parser("org", help="organizations").add_subparsers(
        dest="org_command", required=True
    )
    create = org.add_parser("create", help="a new organization with one admin; prints a token")
    create.add_argument("name")
    create.add_argument("--admin-email", required=True)
    create.add_argument("--admin-name")
    create.add_argument("--slug")
    create.set_defaults(func=cmd_org_create)

    cli_credentials.register(sub)
    from service import cli_plans

    cli_plans.register(sub)

    metric = sub.add_parser("metric", help="metrics").add_subparsers(
        dest="metric_command", required=True
    )
    record = metric.add_parser(
        "record",
        help="record one measurement (as the organization itself; a check-in on every bound "
        "key result whose cycle takes it)",
    )
    record.add_argument("--org", required=True, help="organization slug")
    record.add_argument("key", help="the metric's key, e.g. cost_per_order")
    record.add_argument("value", help="a finite number")
    record.add_argument("--at", help="when the value was true (ISO, UTC when no offset; now)")
    record.add_argument("--source", help="where the value comes from (the check-ins' note)")
    record.add_argument("--idempotency-key", help="the same key again records nothing new")
    record.set_defaults(func=cmd_metric_record)

    export = sub.add_parser(
        "export-schema",
        help="print the client SDL; with -o FILE, write it there and the federation "
        "subgraph SDL beside it (subgraph.graphql)",
    )
    export.add_argument("--output", "-o")
    export.add_argument(
        "--subgraph", action="store_true", help="print the subgraph SDL (_service.sdl) instead"
    )
    export.set_defaults(func=cmd_export_schema)

    bench = sub.add_parser("bench", help="benchmark data").add_subparsers(
        dest="bench_command", required=True
    )
    bench_seed = bench.add_parser(
        "seed",
        help="an organization at scale, loaded with COPY",
        description="Load one new organization, sized by --scale, with COPY; `okr verify` "
        "is clean afterwards.",
    )
    bench_seed.add_argument(
        "--scale",
        type=int,
        default=1,
        metavar="N",
        help="how many times the base organization: at 1, 200 teams three levels deep, "
        "2,000 objectives aligned four deep, 8,000 key results and 200,000 check-ins "
        "in one active cycle; every count grows N-fold (default: 1)",
    )
    bench_seed.add_argument(
        "--slug", help="the new organization's slug (default: bench-N-<unix time>)"
    )
    bench_seed.set_defaults(func=cmd_bench_seed)

    cli_users.add_parsers(sub)
    sub.add_parser("verify", help="recompute every roll-up; exit 1 on any difference").set_defaults(
        func=cmd_verify
    )
    from service import cli_integrations

    cli_integrations.register(sub)
    cli_transfer.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        log_config = logs.logging_config(getattr(args, "log_level", "info"))
    except ValueError as exc:  # OKR_LOG_FORMAT or --log-level not understood
        print(f"okr: {exc}", file=sys.stderr)
        return 2
    logging.config.dictConfig(log_config)
    args.log_config = log_config  # uvicorn applies it in every worker
    try:
        settings = get_settings()
    except ValidationError as exc:  # a setting refused: its name and what it accepts
        print(f"okr: {describe_refusal(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # settings refused otherwise
        print(f"okr: {exc}", file=sys.stderr)
        return 2
    clock.start_for_children(settings.clock_start)
    try:
        return args.func(args, settings)
    except Rejected as exc:
        print(f"okr: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
