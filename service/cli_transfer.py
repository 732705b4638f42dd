"""`okr export` and `okr import`: an organization as one JSON document, and back
(service/transfer.py has the format).

Both run against the database as its operator. A long run shows a progress bar on a
terminal (stderr) and nothing when stderr is not one. Exit 0 when done, 1 when refused
(nothing written: an export leaves no file, an import no row), 2 on usage errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

from service.cli_support import prepare, run
from service.db import Database
from service.settings import Settings


def _bar(total: int | None, unit: str, what: str) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit=unit,
        unit_scale=unit == "B",
        desc=what,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=False,
    )


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from service import transfer

    url = prepare(settings)
    target = args.output
    partial = f"{target}.partial" if target else None

    async def work(db: Database, out: IO[bytes]) -> transfer.ExportCounts:
        async with db.engine.connect() as conn:
            pg = (await conn.get_raw_connection()).driver_connection
            with _bar(None, "rows", "export") as bar:

                def start(total: int) -> None:
                    bar.total = total
                    bar.refresh()

                return await transfer.export(pg, args.org, out, on_start=start, on_rows=bar.update)

    if partial is None:
        counts = run(url, lambda db: work(db, sys.stdout.buffer))
        sys.stdout.buffer.flush()
    else:
        try:
            with open(partial, "wb") as f:
                counts = run(url, lambda db: work(db, f))
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, target)
        except BaseException:
            if os.path.exists(partial):
                os.remove(partial)
            raise
    shown = ", ".join(f"{n} {name}" for name, n in counts.rows.items())
    print(f"exported {args.org!r}: {shown}" + (f" to {target}" if target else ""), file=sys.stderr)
    return 0


class _Counted:
    """A binary file that moves a progress bar by the bytes read."""

    def __init__(self, f: IO[bytes], bar: Any) -> None:
        self.f = f
        self.bar = bar

    def readline(self) -> bytes:
        line = self.f.readline()
        self.bar.update(len(line))
        return line

    def read(self) -> bytes:
        data = self.f.read()
        self.bar.update(len(data))
        return data

    def __iter__(self) -> Iterator[bytes]:
        for line in self.f:
            self.bar.update(len(line))
            yield line


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from service import transfer

    try:
        f = open(args.file, "rb")  # closed below, after the transaction
    except OSError as exc:
        print(f"okr: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    url = prepare(settings)
    try:
        size = os.fstat(f.fileno()).st_size
        with _bar(size, "B", "import") as bar:
            stream: Any = _Counted(f, bar)
            header, items = transfer.read_document(stream)

            async def work(db: Database) -> transfer.Imported:
                # One transaction, never run again (the document is read as it goes).
                async with db.sessions() as s, s.begin():
                    return await transfer.import_document(s, header, items, args.slug)

            imported = run(url, work)
    finally:
        f.close()
    shown = ", ".join(f"{n} {name}" for name, n in imported.counts.items())
    print(f"imported organization {imported.slug!r} (id {imported.organization_id}): {shown}")
    return 0


def register(sub: Any) -> None:
    """`okr export` and `okr import`, under the command's subparsers."""
    export = sub.add_parser(
        "export",
        help="an organization as one versioned JSON document (no secrets, no API keys)",
        description="Write the whole organization, from one consistent snapshot, as JSON "
        "with one row per line. Nothing secret is written.",
    )
    export.add_argument("--org", required=True, help="the organization's slug")
    export.add_argument(
        "-o", "--output", help="the file to write (written beside it, then renamed); stdout"
    )
    export.set_defaults(func=cmd_export)
    load = sub.add_parser(
        "import",
        help="load an `okr export` document as a new organization, in one transaction",
        description="Every id is new; webhook endpoints come in inactive and without a "
        "secret. Refused, with nothing written, when the slug is taken, the document is "
        "of a newer format, malformed, or its numbers do not verify.",
    )
    load.add_argument("file", help="the document (as `okr export` wrote it)")
    load.add_argument("--slug", help="the new organization's slug (default: the document's)")
    load.set_defaults(func=cmd_import)
