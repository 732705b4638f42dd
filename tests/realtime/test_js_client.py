"""Issue 13, item 10: a JavaScript client in CI where Node is present. tests/js holds a
package.json and its lock (Apollo Client 4, graphql-ws, graphql-codegen, TypeScript):
`npm ci` (node_modules kept between runs while the lock is unchanged), graphql-codegen
and `tsc --strict` over schema/schema.graphql and the README's operations, then a script
that reads the dashboard, checks in and receives the check-in on a subscription,
against a real `okr serve --demo`. Skipped, saying why, when node or npm is missing or
the npm registry cannot be reached."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from tests.factories import ROOT, env_for, free_port, npm_installed, start_okr, stop_okr

JS = ROOT / "tests" / "js"


async def sh(*args: str, env: dict[str, str] | None = None, limit: float = 300) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=JS,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), limit)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, args, text)
    return text


@pytest.fixture(scope="module")
def node_modules() -> None:
    npm_installed(JS, "for the JavaScript client test")


async def test_codegen_and_strict_typescript_over_schema_and_readme(node_modules):
    extracted = await sh("node", "extract-readme.mjs")
    assert "extracted" in extracted
    await sh("npx", "graphql-codegen", "--config", "codegen.yml")
    types = (JS / "generated" / "types.ts").read_text()
    assert "export type DashboardQuery" in types and "export type Readme1Query" in types
    await sh("npx", "tsc", "--strict", "--noEmit", "-p", "tsconfig.json")


async def test_apollo_client_reads_checks_in_and_subscribes(
    node_modules, bin_okr, database_url, tmp_path
):
    port = free_port()
    env = env_for(database_url, tmp_path)
    with open(tmp_path / "serve.out", "wb") as out:  # noqa: ASYNC230
        proc = await start_okr(bin_okr, port, env, out, "--demo")
        try:
            lines = (tmp_path / "serve.out").read_text().splitlines()
            token = lines[lines.index("Admin token (Dana Okafor, ADMIN):") + 1].strip()
            printed = await sh(
                "node",
                "client.mjs",
                env={**env, "OKR_URL": f"http://127.0.0.1:{port}", "OKR_TOKEN": token},
                limit=60,
            )
        finally:
            await stop_okr(proc)
    result = json.loads(printed.strip().splitlines()[-1])
    assert result["roots"] >= 1
    assert result["rootTitle"] == "Reduce distribution costs by 15%"
    assert result["checkIn"]["value"] == 3.84
    event = result["event"]
    assert event["checkIn"]["value"] == 3.84
    assert event["checkIn"]["note"] == "from Apollo Client"
    assert event["changes"][0]["progress"] == result["checkIn"]["progress"]
    assert len(event["changes"]) >= 2  # the key result and the objectives above it
