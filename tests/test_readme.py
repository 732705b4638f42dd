"""Issue 13, item 12: the README's tour is a test. Its GraphQL blocks run in order
against a fresh `okr serve --demo`, and each answer is compared with the JSON printed
under it: exactly, except the fields that move with the clock (timestamps, expected
progress, status and staleness, which follow the date within the quarter), which are
checked for shape and, for expected progress, against the day of the quarter."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.demo import quarter_of
from tests.helpers import free_port, start_okr, stop_okr
from tests.test_command import env_for

README = Path(__file__).parent.parent / "README.md"

# Fields whose value depends on today's date (the demo is seeded around today).
CLOCK = {"createdAt", "measuredAt", "occurredAt", "status", "stale", "expectedProgress"}
STATUSES = {"ON_TRACK", "AT_RISK", "OFF_TRACK", "ACHIEVED", "MISSED", "NOT_STARTED"}


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced blocks of `text`, as (language, body), in order."""
    return [(m[1], m[2]) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def operations(graphql: str) -> list[str]:
    """A block may hold several operations, each starting at the line's first column."""
    ops: list[list[str]] = []
    for line in graphql.splitlines():
        if re.match(r"(mutation|query|subscription|\{)", line) or not ops:
            ops.append([])
        ops[-1].append(line)
    return ["\n".join(op) for op in ops if "".join(op).strip()]


def documents(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    out, i = [], 0
    text = text.strip()
    while i < len(text):
        value, i = decoder.raw_decode(text, i)
        out.append(value)
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def expected_progress_today() -> float:
    _name, start, end = quarter_of(datetime.now(UTC).date())
    days = (end - start).days + 1
    return (
        datetime.now(UTC) - datetime.combine(start, datetime.min.time(), UTC)
    ).total_seconds() / (days * 86400)


def compare(actual: Any, expected: Any, path: str = "") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r}"
        assert set(actual) == set(expected), f"{path}: {sorted(actual)} != {sorted(expected)}"
        for key, value in expected.items():
            where = f"{path}.{key}"
            if key in CLOCK:
                clock_field(key, actual[key], value, where)
            else:
                compare(actual[key], value, where)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            compare(a, e, f"{path}[{i}]")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert isinstance(actual, int | float), f"{path}: {actual!r}"
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-12), f"{path}: {actual}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def clock_field(key: str, actual: Any, expected: Any, where: str) -> None:
    if key in ("createdAt", "occurredAt", "measuredAt"):
        when = datetime.fromisoformat(actual)
        assert when.tzinfo is not None and when <= datetime.now(UTC), where
    elif key == "status":
        if expected in STATUSES:  # a key result's or objective's: follows the pace
            assert actual in STATUSES, f"{where}: {actual!r}"
        else:  # a cycle's: set by hand
            assert actual == expected, f"{where}: {actual!r} != {expected!r}"
    elif key == "stale":
        assert isinstance(actual, bool), where
    elif key == "expectedProgress":
        assert actual == pytest.approx(expected_progress_today(), abs=0.02), where


async def demo(bin_okr: str, database_url: str, tmp_path: Path):
    port = free_port()
    out_path = tmp_path / "demo.out"
    out = open(out_path, "wb")  # noqa: ASYNC230  (the server writes to it)
    proc = await start_okr(bin_okr, port, env_for(database_url, tmp_path), out, "--demo")
    lines = out_path.read_text().splitlines()
    token = lines[lines.index("Admin token (Dana Okafor, ADMIN):") + 1].strip()
    return proc, out, port, token


async def test_the_readme_tour_runs_as_printed(bin_okr, database_url, tmp_path):
    tour = section(README.read_text(), "A five-minute tour")
    fenced = blocks(tour)
    pairs = [
        (body, fenced[i + 1][1])
        for i, (lang, body) in enumerate(fenced)
        if lang == "graphql" and i + 1 < len(fenced) and fenced[i + 1][0] == "json"
    ]
    assert len(pairs) == 5, [lang for lang, _ in fenced]
    # The prose between the score and the carry-over creates the next cycle.
    create_cycle = re.search(r"`(createCycle\(input: \{.*?\}\))`", tour, re.S)
    assert create_cycle is not None
    proc, out, port, token = await demo(bin_okr, database_url, tmp_path)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as http:

            async def run(query: str) -> dict:
                r = await http.post("/graphql", json={"query": query})
                assert r.status_code == 200, r.text
                body = r.json()
                body.pop("extensions", None)  # the cost; the README leaves it out
                return body

            ran = 0
            for graphql, printed in pairs:
                if "carryOverObjective" in graphql:
                    made = await run(
                        "mutation { "
                        + " ".join(create_cycle[1].split())
                        + " { cycle { id } userErrors { message } } }"
                    )
                    assert made["data"]["createCycle"]["cycle"]["id"] == "Q3ljbGU6Mg", made
                ops = operations(graphql)
                answers = documents(printed)
                assert len(ops) == len(answers), graphql
                for op, answer in zip(ops, answers, strict=True):
                    compare(await run(op), answer, path=op.split("(")[0][:40])
                    ran += 1
            assert ran == 6
    finally:
        await stop_okr(proc)
        out.close()


def test_expected_progress_helper_is_within_the_quarter():
    _name, start, end = quarter_of(date(2026, 11, 25))
    assert (start, end) == (date(2026, 10, 1), date(2026, 12, 31))
    assert 0.0 <= expected_progress_today() <= 1.0
