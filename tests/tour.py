"""The README read as a tour: its sections, the operations and the answers printed under
them, run against a demo server and compared (tests/system/test_readme.py and
tests/system/test_topology.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from service import demo
from tests.factories import ROOT, stop_okr

README = ROOT / "README.md"


# Instants the demo's clock stamps while the tour runs: within its first hour.
INSTANTS = {"createdAt", "measuredAt", "occurredAt"}


# Figures that follow the clock by the second, not by the day.
DRIFTING = {"expectedProgress", "requiredRate", "ratio"}


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


def variables(op: str) -> dict[str, Any] | None:
    """`# $input: {...}` comment lines under an operation are its variables."""
    lines = [line[1:].strip() for line in op.splitlines() if line.startswith("#")]
    text = " ".join(lines)
    if not text:
        return None
    name, _, value = text.partition(":")
    return {name.strip().lstrip("$"): json.loads(value)}


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


def is_tour_instant(value: Any) -> bool:
    try:
        when = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return demo.NOW <= when < demo.NOW + timedelta(hours=1)


def compare(actual: Any, expected: Any, path: str = "") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r}"
        assert set(actual) == set(expected), f"{path}: {sorted(actual)} != {sorted(expected)}"
        for key, value in expected.items():
            where = f"{path}.{key}"
            if key in INSTANTS and is_tour_instant(value):
                assert is_tour_instant(actual[key]), f"{where}: {actual[key]!r}"
            elif key in DRIFTING and isinstance(value, float):
                assert actual[key] == pytest.approx(value, rel=1e-4), f"{where}: {actual[key]}"
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


def note(op: str, actual: Any) -> None:
    """README_ANSWERS=<file>: keep every actual answer, to paste into the README."""
    if os.environ.get("README_ANSWERS"):
        with open(os.environ["README_ANSWERS"], "a") as f:
            f.write(f"# {' '.join(op.split())[:100]}\n{json.dumps(actual)}\n")


class Demo:
    """A running `okr serve --demo` and its admin token, and a way to run its commands."""

    def __init__(self, env: dict[str, str], port: int, proc: Any, out: Any, token: str):
        self.env, self.port, self.proc, self.out, self.token = env, port, proc, out, token
        self.differences: list[str] = []  # all of them are reported, not just the first
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    async def run(self, query: str, variables: dict | None = None) -> dict:
        r = await self.http.post("/graphql", json={"query": query, "variables": variables})
        assert r.status_code == 200, r.text
        body = r.json()
        body.pop("extensions", None)  # the cost; the README leaves it out
        note(query, body)
        return body

    async def counted(self, metric: str) -> list[tuple[dict[str, str], float]]:
        """The samples of one of this server's counters on /metrics: (labels, value)."""
        text = (await self.http.get("/metrics")).text
        assert f"# TYPE {metric} counter" in text, metric  # the counter is there
        out = []
        for labels, n in re.findall(rf"^{metric}\{{(.*)\}} (\S+)$", text, re.M):
            out.append((dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(n)))
        return out

    async def plan_misses(self) -> list[str]:
        """The fields this server read past the plan so far (schema/plan/collect.py)."""
        found = await self.counted("okr_plan_misses_total")
        return [f"{k['type']}.{k['field']} {n:g}" for k, n in found if n > 0]

    async def planned(self) -> dict[str, float]:
        """Operations the plan answered so far, by kind (query, mutation, subscription)."""
        return {k["operation"]: n for k, n in await self.counted("okr_plan_operations_total")}

    def check(self, actual: Any, printed: Any, where: str) -> None:
        try:
            compare(actual, printed, where)
        except AssertionError as exc:
            self.differences.append(f"{where}: {exc}")

    async def close(self) -> None:
        await self.http.aclose()
        await stop_okr(self.proc)
        self.out.close()


async def run_pairs(
    server: Demo, text: str, before: Callable[[str], Any] | None = None
) -> tuple[int, list[tuple[str, str]]]:
    """Run every graphql block followed by a json block; the other blocks come back."""
    fenced = blocks(text)
    ran, rest, i = 0, [], 0
    while i < len(fenced):
        lang, body = fenced[i]
        if lang == "graphql" and i + 1 < len(fenced) and fenced[i + 1][0] == "json":
            ops, answers = operations(body), documents(fenced[i + 1][1])
            assert len(ops) == len(answers), body
            for op, answer in zip(ops, answers, strict=True):
                if before is not None:
                    await before(op)
                if "events(" in op:  # the reminders job writes it: wait for its next run
                    actual = await eventually(server, op)
                else:
                    actual = await server.run(op, variables(op))
                server.check(actual, answer, " ".join(op.split())[:60])
                ran += 1
            i += 2
        else:
            rest.append((lang, body))
            i += 1
    return ran, rest


async def eventually(server: Demo, op: str) -> dict:
    for _ in range(100):
        actual = await server.run(op)
        if actual.get("data", {}).get("events", {}).get("edges"):
            return actual
        await asyncio.sleep(0.2)
    raise AssertionError(f"no event came: {actual}")
