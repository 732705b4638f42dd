"""Issue 13, item 12 and issue 19, item 0: the README's answers are a test. Every section
that shows an answer runs here, in order, against a fresh `okr serve --demo`, and each
answer is compared with what the README prints under it:
- the tour (its own demo: it closes the quarter);
- Metrics, Realism and reviews, Live progress and the command lines they show, then
  Corrections (a second demo: "on a fresh demo", then each step after the one before).

The demo keeps its own date (service/demo.py), so the answers are the same on any day:
status, staleness, ids and sequences exactly; an instant the demo's clock stamped while
the tour ran lies within the demo's first hour; the figures that follow the clock by the
second (expected progress, the rate still needed) within a hair. And the servers and the
commands run once more under a faked date past a year's end (Debian's `faketime`, which
.ci/run installs), and once at the end of the next quarter, with the same answers.

To refresh the README after a change, run this with README_ANSWERS=<file>: every actual
answer is written there too."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from glob import glob
from pathlib import Path

import jwt
import pytest
import websockets

from tests.factories import env_for, free_port, okr, start_okr
from tests.tour import README, Demo, note, run_pairs, section

# Real days for the servers and commands: today, past a year's end, a quarter's last day.
FAKED = [None, "2027-01-02 09:00:00", "2027-03-31 23:30:00"]


def faketime_library() -> str | None:
    found = glob("/usr/lib/*/faketime/libfaketime.so.1") + glob("/usr/lib/faketime/*.so.1")
    return found[0] if found else None


@asynccontextmanager
async def fresh_database(pg, template: str) -> AsyncIterator[str]:
    name = f"okr_readme_{os.getpid()}_{free_port()}"
    conn = await pg.admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    try:
        yield pg.url(name)
    finally:
        conn = await pg.admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@asynccontextmanager
async def serve_demo(bin_okr, database_url, tmp_path: Path, env: dict[str, str], name: str):
    port = free_port()
    out_path = tmp_path / f"{name}.out"
    out = open(out_path, "wb")  # noqa: ASYNC230  (the server writes to it)
    proc = await start_okr(bin_okr, port, env, out, "--demo")
    lines = out_path.read_text().splitlines()
    token = lines[lines.index("Admin token (Dana Okafor, ADMIN):") + 1].strip()
    running = Demo(env, port, proc, out, token)
    try:
        yield running
    finally:
        await running.close()


async def run_console(server: Demo, bin_okr: str, body: str) -> int:
    """Each `$ okr ...` line runs; what follows it is its output (`echo $?`: its code)."""
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    code = 0
    for command, printed in steps:
        if command == "echo $?":
            assert [str(code)] == printed, command
            continue
        args = shlex.split(command)
        assert args[0] == "okr", command
        code, out, err = await okr(bin_okr, server.env, *args[1:])
        note(command, out + err)
        server.check((out + err).splitlines(), printed, command)
    return len(steps)


async def run_subscription(server: Demo, text: str, python: str, printed: str) -> None:
    """The Python client's subscription, by a raw graphql-transport-ws client, and the
    check-in the prose names: the event is the one printed."""
    subscription = re.search(r'gql\("""(.*?)"""\)', python, re.S)
    check_in = re.search(r"`(checkIn\(input: \{.*?\}\))`", text, re.S)
    assert subscription and check_in
    ws = await websockets.connect(
        f"ws://127.0.0.1:{server.port}/graphql", subprotocols=["graphql-transport-ws"]
    )
    try:
        init = {"Authorization": f"Bearer {server.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        start = {"query": subscription[1]}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": start}))
        await asyncio.sleep(0.5)  # subscribed before the check-in
        done = await server.run(
            "mutation { " + " ".join(check_in[1].split()) + " { userErrors { message } } }"
        )
        assert done["data"]["checkIn"]["userErrors"] == [], done
        frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
    finally:
        await ws.close()
    assert frame["type"] == "next", frame
    note("progressChanged", frame["payload"]["data"]["progressChanged"])
    server.check(
        frame["payload"]["data"]["progressChanged"],
        ast.literal_eval(printed.strip()),
        "progressChanged",
    )


# The fields the README's operations still read by their own resolver, inside the plan
# (okr_plan_misses_total). Issue 20 empties this list: each field leaves it when its
# set-based step lands, and a field not listed fails the test.
STILL_BY_RESOLVER = {
    "Cycle.teams",
    "Metric.measurements",
    "MeasurementConnection.totalCount",
}


# Today in the default suite; past the year's end and at the quarter's end (another
# year's end for the clock, another quarter for the cycles) with the system tests, which
# .ci/run runs on every change.
@pytest.fixture(
    params=[
        pytest.param(FAKED[0], id="today"),
        pytest.param(FAKED[1], id="new-year", marks=pytest.mark.system),
        pytest.param(FAKED[2], id="quarter-end", marks=pytest.mark.system),
    ]
)
def real_day(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment that makes the servers and commands live on another real day."""
    if request.param is None:
        return {}
    library = faketime_library()
    if library is None:
        pytest.skip("faketime is not installed (apt-get install faketime; .ci/run does)")
    return {"LD_PRELOAD": library, "FAKETIME": f"@{request.param}", "TZ": "UTC"}


async def test_the_readme_answers_as_printed_on_any_day(
    bin_okr, database_url, pg, template, tmp_path, real_day
):
    readme = README.read_text()
    tour = section(readme, "A five-minute tour")
    later = [section(readme, t) for t in ("Metrics", "Realism and reviews")]
    live = section(readme, "Live progress: subscriptions")
    create_cycle = re.search(r"`(createCycle\(input: \{.*?\}\))`", tour, re.S)
    assert create_cycle is not None
    env = env_for(database_url, tmp_path) | real_day
    env.pop("OKR_CLOCK_START", None)
    async with (
        fresh_database(pg, template) as second_url,
        serve_demo(bin_okr, database_url, tmp_path, env, "tour") as first,
        serve_demo(
            bin_okr,
            second_url,
            tmp_path,
            env | {"OKR_DATABASE_URL": second_url, "OKR_CHECK_IN_REMINDER_SECONDS": "0.2"},
            "later",
        ) as second,
    ):

        async def next_cycle_first(op: str) -> None:
            # The prose between the score and the carry-over creates the next cycle.
            if "carryOverObjective" in op:
                made = await first.run(
                    "mutation { "
                    + " ".join(create_cycle[1].split())
                    + " { cycle { id } userErrors { message } } }"
                )
                assert made["data"]["createCycle"]["cycle"]["id"] == "Q3ljbGU6Mg", made

        if real_day:  # the servers do live on the faked day: their tokens say so
            for server in (first, second):
                issued = jwt.decode(server.token, options={"verify_signature": False})["iat"]
                day = datetime.fromtimestamp(issued, UTC).date().isoformat()
                assert day == real_day["FAKETIME"][1:11], day
        ran, rest = await run_pairs(first, tour, next_cycle_first)
        assert (ran, rest) == (7, [])

        consoles = []
        for text, expected in zip(later, (3, 9), strict=True):
            ran, rest = await run_pairs(second, text)
            assert ran == expected and all(lang == "console" for lang, _ in rest), rest
            consoles += [body for _, body in rest]
        ran, rest = await run_pairs(second, live)
        assert ran == 0 and [lang for lang, _ in rest] == ["python", ""], rest
        await run_subscription(second, live, rest[0][1], rest[1][1])
        # The command lines last: they record outside the server, on its database.
        assert [await run_console(second, bin_okr, body) for body in consoles] == [4]
        # Corrections, after all of that on the same demo (issue 21).
        ran, rest = await run_pairs(second, section(readme, "Corrections"))
        assert ran == 6 and [lang for lang, _ in rest] == ["console"], rest
        assert await run_console(second, bin_okr, rest[0][1]) == 1
        # Administration, after the corrections: it renames, archives and erases.
        ran, rest = await run_pairs(second, section(readme, "Administration"))
        assert ran == 11 and [lang for lang, _ in rest] == ["console"], rest
        assert await run_console(second, bin_okr, rest[0][1]) == 3
        differences = first.differences + second.differences
        assert not differences, "\n".join(differences)
        # The plan answered queries, mutations' payloads and the subscription's event,
        # every field of every operation of the README by its set-based steps.
        assert (await second.planned()).keys() == {"query", "mutation", "subscription"}
        missed = {m.split()[0] for m in await first.plan_misses() + await second.plan_misses()}
        assert missed <= STILL_BY_RESOLVER, "\n".join(sorted(missed - STILL_BY_RESOLVER))
