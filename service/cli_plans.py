"""`okr apply` and `okr plan`: plans as files (README, "Plans as files").

`okr apply PLAN --org SLUG [--dry-run] [--prune]` runs the use case applyPlan runs
(service/usecases/plans.py) as the organization's operator: an ADMIN principal with no
user (whoever can run `okr` against the database is trusted as an admin is); its events
have no actor. It prints one line per change, `ACTION path`, an UPDATE or ARCHIVE with
`before -> after` (the changed fields, as JSON). Exit 0 when applied or on a dry run, 1
when the plan is refused (each problem on stderr, with its path), 2 on usage errors. On
a terminal, a long apply shows a progress bar on stderr.

`okr plan export --org SLUG --cycle NAME` prints a cycle as a plan to start from (an
item without a key gets one from its title); `okr plan schema` prints the plan's JSON
Schema, for editors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from service import plan_format
from service.cli_support import acting_for, prepare, run
from service.db import Database
from service.domain.errors import Rejected
from service.settings import Settings

# A bar only when there is this much to apply (a short apply is over before one draws).
PROGRESS_FROM = 20


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=False)


def line(change: Any) -> str:
    """One change as `okr apply` prints it."""
    text = f"{change.action} {change.path}"
    if change.before is not None and change.after is not None:
        text += f" {_shown(change.before)} -> {_shown(change.after)}"
    return text


class _Bar:
    """A tqdm bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if total < PROGRESS_FROM or not sys.stderr.isatty():
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="change", file=sys.stderr, leave=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    from service.usecases import commands, organizations, plans

    try:
        document = (
            sys.stdin.read() if args.plan == "-" else Path(args.plan).read_text(encoding="utf-8")
        )
    except (OSError, UnicodeDecodeError) as exc:
        print(f"okr: cannot read {args.plan}: {exc}", file=sys.stderr)
        return 2
    url = prepare(settings)
    bar = _Bar()

    async def work(db: Database) -> Any:
        async def tx(s: Any) -> Any:
            org = await organizations.organization_by_slug(s, args.org)
            cmd = commands.ApplyPlan(document, dry_run=args.dry_run, prune=args.prune)
            return await plans.apply_plan(s, acting_for(org), cmd, progress=bar)

        return await db.transaction(tx)

    try:
        result = run(url, work)
    except Rejected as exc:
        bar.close()
        for problem in getattr(exc, "errors", [exc]):
            where = f"{problem.field[0]}: " if problem.field else ""
            print(f"okr: {where}{problem.message} ({problem.code})", file=sys.stderr)
        print("okr: the plan is refused; nothing was written", file=sys.stderr)
        return 1
    bar.close()
    for change in result.changes:
        print(line(change))
    if args.dry_run:
        print("dry run: nothing was written", file=sys.stderr)
    return 0


def cmd_plan_export(args: argparse.Namespace, settings: Settings) -> int:
    from service.usecases import organizations, plans

    url = prepare(settings)

    async def work(db: Database) -> Any:
        async def tx(s: Any) -> Any:
            org = await organizations.organization_by_slug(s, args.org)
            return await plans.export_plan(s, acting_for(org), args.cycle)

        return await db.transaction(tx)

    document = run(url, work)
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_plan_schema(args: argparse.Namespace, settings: Settings) -> int:
    sys.stdout.write(plan_format.schema_text())
    return 0


def register(sub: Any) -> None:
    apply = sub.add_parser(
        "apply",
        help="apply a plan file (YAML or JSON): a cycle's objectives and key results",
        description="Print the plan's changes (ACTION path, with before -> after for "
        "updates) and apply them in one transaction; exit 0 when applied or on --dry-run, "
        "1 when refused, 2 on usage errors.",
    )
    apply.add_argument("plan", help="the plan file ('-': standard input)")
    apply.add_argument("--org", required=True, help="organization slug")
    apply.add_argument("--dry-run", action="store_true", help="show the changes; write nothing")
    apply.add_argument(
        "--prune",
        action="store_true",
        help="archive the objectives and key results with a key the file no longer names",
    )
    apply.set_defaults(func=cmd_apply)

    plan = sub.add_parser("plan", help="plans as files: export, schema").add_subparsers(
        dest="plan_command", required=True
    )
    export = plan.add_parser(
        "export",
        help="print a cycle as a plan to start from",
        description="Print the cycle's objectives and key results (not archived) as a plan; "
        "an item without a key gets one from its title. Applying it changes nothing.",
    )
    export.add_argument("--org", required=True, help="organization slug")
    export.add_argument("--cycle", required=True, help="the cycle's name, e.g. 'Q4 2026'")
    export.add_argument("--output", "-o", help="write it to this file")
    export.set_defaults(func=cmd_plan_export)
    plan.add_parser("schema", help="print the plan's JSON Schema").set_defaults(
        func=cmd_plan_schema
    )
