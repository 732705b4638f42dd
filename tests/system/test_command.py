"""The `okr` command and `okr serve`, as separate processes against the test database."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import httpx
import pytest

from tests.factories import ROOT, env_for, free_port, okr

SDL_FILE = ROOT / "schema" / "schema.graphql"


async def test_export_schema_prints_the_sdl(bin_okr, database_url, tmp_path):
    code, out, _ = await okr(bin_okr, env_for(database_url, tmp_path), "export-schema")
    assert code == 0 and out == SDL_FILE.read_text()


async def test_org_token_apikey_and_verify(bin_okr, database_url, tmp_path, client):
    env = env_for(database_url, tmp_path)
    code, token, err = await okr(
        bin_okr, env, "org", "create", "Beta Freight", "--admin-email", "boss@beta.example"
    )
    assert code == 0, err
    token = token.strip()
    assert token.startswith("eyJ")
    code, again, _ = await okr(
        bin_okr, env, "token", "--org", "beta-freight", "--email", "boss@beta.example"
    )
    assert code == 0 and again.strip().startswith("eyJ")
    code, _out, err = await okr(
        bin_okr, env, "org", "create", "Beta Freight", "--admin-email", "x@beta.example"
    )
    assert code == 1 and "exists" in err
    code, _out, err = await okr(bin_okr, env, "token", "--org", "nope", "--email", "a@b.c")
    assert code == 1 and "not found" in err

    code, key, _ = await okr(
        bin_okr, env, "apikey", "create", "--org", "beta-freight", "--name", "logistics-service"
    )
    key = key.strip()
    assert code == 0 and key.startswith("okr_")
    r = await client.post(
        "/graphql",
        json={"query": "{ viewer { role user { id } } }"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.json()["data"]["viewer"] == {"role": "SERVICE", "user": None}
    code, _out, _err = await okr(
        bin_okr, env, "apikey", "revoke", "--org", "beta-freight", "--name", "logistics-service"
    )
    assert code == 0
    r = await client.post(
        "/graphql",
        json={"query": "{ viewer { role } }"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 401

    code, out, _ = await okr(bin_okr, env, "verify")
    assert code == 0 and out.startswith("ok:")


async def test_verify_reports_a_corrupted_roll_up(bin_okr, database_url, tmp_path, db):
    from service import demo

    await demo.seed(db)
    env = env_for(database_url, tmp_path)
    code, out, _ = await okr(bin_okr, env, "verify")
    assert code == 0, out
    async with db.engine.begin() as conn:
        from sqlalchemy import text

        await conn.execute(text("UPDATE objective SET progress = 0.99 WHERE parent_id IS NULL"))
    code, out, _ = await okr(bin_okr, env, "verify")
    assert code == 1 and "progress stored 0.99" in out


@pytest.fixture
async def served(bin_okr, database_url, tmp_path):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        bin_okr,
        "serve",
        "--port",
        str(port),
        "--demo",
        env=env_for(database_url, tmp_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as http:
        for _ in range(300):
            try:
                if (await http.get("/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        else:
            proc.kill()
            raise AssertionError("okr serve did not come up")
        yield proc, http
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def test_serve_demo_answers_the_dashboard_and_stops_cleanly(served):
    proc, http = served
    assert (await http.get("/readyz")).json()["status"] == "ok"
    assert "okr_http_requests_total" in (await http.get("/metrics")).text
    output = b""
    while b"eyJ" not in output:
        output += await asyncio.wait_for(proc.stdout.readline(), 30)
    token = output.decode().strip().splitlines()[-1]
    query = """{ objectives(filter: {rootsOnly: true}) { edges { node {
        title progress status keyResults { title type status }
        children { edges { node { title status stale team { name } } } } } } } }"""
    r = await http.post(
        "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"}
    )
    root = r.json()["data"]["objectives"]["edges"][0]["node"]
    assert root["title"] == "Reduce distribution costs by 15%"
    assert 0 < root["progress"] < 1
    assert [k["type"] for k in root["keyResults"]] == ["DECREASE", "STAY_ABOVE", "MILESTONE"]
    assert len(root["children"]["edges"]) == 3
    assert any(c["node"]["stale"] for c in root["children"]["edges"])
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0
