"""`okr export` and `okr import` of bench/seed.py's organization: wall time and the okr
process's peak memory (its own maximum resident set, from wait4), at each scale asked.

Each scale is seeded into one fresh database (`okr bench seed`'s loader), exported to a
file, imported as a new organization, and exported again; `okr verify` must be clean
after the import. Results go to bench/results/transfer.json.

    python -m bench.transfer --scales 1 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import JWT_SECRET, BenchDatabase, write_report
from bench.seed import seed


def run_okr(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run `okr ARGS` to the end under GNU time: its wall time, peak RSS and output.

    Not wait4 from here: Linux carries a parent's peak RSS into a child across fork and
    exec, so this process's own size (it seeds in-process) would be reported. GNU time
    forks okr from a small process."""
    okr = str(Path(sys.executable).parent / "okr")
    with tempfile.NamedTemporaryFile() as usage:
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%M %e", "-o", usage.name, okr, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        peak_kib, seconds = Path(usage.name).read_text().split()[-2:]
    if done.returncode != 0:
        raise RuntimeError(f"okr {' '.join(args)} failed: {done.stderr.decode()}")
    return {
        "seconds": float(seconds),
        "peak_rss_mb": round(int(peak_kib) / 1024, 1),
        "stdout": done.stdout.decode().strip(),
        "stderr": done.stderr.decode().strip(),
    }


def measure(database: BenchDatabase, scale: int, folder: Path) -> dict[str, Any]:
    slug = f"bench-{scale}"
    counts = asyncio.run(seed(database.dsn(database.name), scale, slug))
    env = {
        **os.environ,
        "OKR_DATABASE_URL": database.url,
        "OKR_JWT_SECRET": JWT_SECRET,
        "OKR_DATA_DIR": str(folder),
    }
    document = folder / f"{slug}.json"
    exported = run_okr(env, "export", "--org", slug, "-o", str(document))
    size = document.stat().st_size
    imported = run_okr(env, "import", str(document), "--slug", f"{slug}-copy")
    verified = run_okr(env, "verify")
    again = run_okr(env, "export", "--org", f"{slug}-copy", "-o", str(folder / "again.json"))
    document.unlink()
    (folder / "again.json").unlink()
    return {
        "scale": scale,
        "rows": {
            k: v for k, v in counts.items() if k in ("objectives", "key_results", "check_ins")
        },
        "document_mb": round(size / 1e6, 1),
        "export": {k: exported[k] for k in ("seconds", "peak_rss_mb")},
        "import": {k: imported[k] for k in ("seconds", "peak_rss_mb")},
        "export_of_the_import": {k: again[k] for k in ("seconds", "peak_rss_mb")},
        "verify_clean": verified["stdout"].startswith("ok:"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[1])
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="okr-bench-transfer-") as tmp:
        for scale in args.scales:
            database = BenchDatabase()
            asyncio.run(database.create())
            try:
                results.append(measure(database, scale, Path(tmp)))
            finally:
                asyncio.run(database.drop())
                database.close()
            print(json.dumps(results[-1]), flush=True)
    report = {
        "benchmark": "okr export and okr import (issue 25)",
        "date": datetime.now().isoformat(timespec="seconds"),
        "results": results,
    }
    write_report("transfer.json", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
