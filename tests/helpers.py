"""Building an organization's tree through the public API, as a client would."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Org


async def start_okr(
    bin_okr: str, port: int, env: dict[str, str], out: Any, *args: str, err: Any = None
) -> asyncio.subprocess.Process:
    """A real `okr serve` process on `port` (with any further `args`, e.g. "--demo"; a
    later "--log-level" wins), returned once its /readyz answers 200 (it is stopped, and
    AssertionError raised, if it never does). Its stderr goes to `err`, else with stdout
    to `out`."""
    proc = await asyncio.create_subprocess_exec(
        bin_okr,
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT if err is None else err,
    )
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            try:
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    await stop_okr(proc)
    raise AssertionError("okr serve did not come up")


async def stop_okr(proc: asyncio.subprocess.Process) -> None:
    """Terminate a server started by `start_okr`; kill it if it does not stop in 10 s."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PAYLOAD_ERRORS = "userErrors { code field message }"


async def mutate(
    org: Org, name: str, input: dict[str, Any], selection: str, token: str | None = None
) -> dict[str, Any]:
    type_name = {"checkIn": "CheckInInput", "reflectOnObjective": "ReflectInput"}.get(
        name, name[0].upper() + name[1:] + "Input"
    )
    query = (
        f"mutation($input: {type_name}!) {{ {name}(input: $input) {{ {selection} "
        f"{PAYLOAD_ERRORS} }} }}"
    )
    return (await org.call(query, {"input": input}, token=token))[name]


async def ok(
    org: Org, name: str, input: dict[str, Any], selection: str, token: str | None = None
) -> dict[str, Any]:
    payload = await mutate(org, name, input, selection, token)
    assert payload["userErrors"] == [], payload["userErrors"]
    return payload


async def user(org: Org, name: str, role: str = "MEMBER") -> str:
    email = name.lower().replace(" ", ".") + "@acme.example"
    p = await ok(org, "createUser", {"name": name, "email": email, "role": role}, "user { id }")
    return p["user"]["id"]


async def team(org: Org, name: str, parent: str | None = None) -> str:
    p = await ok(org, "createTeam", {"name": name, "parentId": parent}, "team { id }")
    return p["team"]["id"]


async def active_cycle(
    org: Org, starts_on: str = "2026-10-01", ends_on: str = "2026-12-31", status: str = "ACTIVE"
) -> str:
    p = await ok(
        org, "createCycle", {"name": "Q4", "startsOn": starts_on, "endsOn": ends_on}, "cycle { id }"
    )
    cycle = p["cycle"]["id"]
    for step in ("ACTIVE", "REVIEW", "CLOSED"):
        if status == "PLANNING":
            break
        await ok(org, "setCycleStatus", {"cycleId": cycle, "status": step}, "cycle { id }")
        if step == status:
            break
    return cycle


async def objective(org: Org, cycle: str, title: str, **extra: Any) -> str:
    token = extra.pop("token", None)
    p = await ok(
        org,
        "createObjective",
        {"cycleId": cycle, "title": title, **extra},
        "objective { id }",
        token=token,
    )
    return p["objective"]["id"]


async def key_result(
    org: Org,
    objective_id: str,
    title: str = "KR",
    type: str = "INCREASE",
    start: float | None = 0,
    target: float | None = 100,
    **extra: Any,
) -> str:
    p = await ok(
        org,
        "createKeyResult",
        {
            "objectiveId": objective_id,
            "title": title,
            "type": type,
            "startValue": start,
            "targetValue": target,
            **extra,
        },
        "keyResult { id }",
    )
    return p["keyResult"]["id"]


async def check_in(org: Org, kr: str, value: float, **extra: Any) -> dict[str, Any]:
    token = extra.pop("token", None)
    return await ok(
        org,
        "checkIn",
        {"keyResultId": kr, "value": value, **extra},
        "checkIn { id value progress } keyResult { progress }",
        token=token,
    )


async def progress(org: Org, node_id: str) -> float:
    q = (
        "query($id: ID!) { node(id: $id) { ... on Objective { progress } "
        "... on KeyResult { progress } } }"
    )
    return (await org.call(q, {"id": node_id}))["node"]["progress"]


def npm_installed(folder: Path, needed_for: str) -> str:
    """`npm ci` in `folder` unless its node_modules came from the same lock file (a
    stamp of the lock's SHA-256); returns node's path. Skips the calling test, with the
    reason, when node or npm is missing or the registry cannot be reached."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"node and npm are needed {needed_for} (not found)")
    stamp = folder / "node_modules" / ".okr-lock-sha256"
    lock = hashlib.sha256((folder / "package-lock.json").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == lock:
        return node
    try:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=folder,
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        output = getattr(exc, "stderr", b"") or b""
        pytest.skip(
            f"npm ci failed in tests/{folder.name} (is the npm registry reachable?): "
            + output.decode(errors="replace")[-300:]
        )
    stamp.write_text(lock)
    return node
