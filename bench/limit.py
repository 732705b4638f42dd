"""The limit: the same rows each benchmark operation reads (or writes), with one bare
asyncpg query per request, JSON-encoded by a minimal ASGI endpoint. What is left
between this and the service is the service's own cost.

    uvicorn bench.limit:app   (OKR_BENCH_LIMIT_DSN=postgresql://...)
"""

from __future__ import annotations

import os
from collections import defaultdict
from urllib.parse import parse_qs

import asyncpg
import orjson

_pool: asyncpg.Pool | None = None

Q1 = """
SELECT o.id, o.title, o.progress, o.has_check_in, u.name AS owner,
       k.id AS kr_id, k.title AS kr_title, k.progress AS kr_progress,
       k.current_value, c.value AS last_value, c.created_at AS last_at
FROM objective o
LEFT JOIN app_user u ON u.id = o.owner_id
LEFT JOIN key_result k ON k.objective_id = o.id
LEFT JOIN check_in c ON c.id = k.last_check_in_id
WHERE o.organization_id = $1 AND o.team_id = $2 AND o.cycle_id = $3
ORDER BY o.id, k.id
LIMIT 1000
"""
Q2 = """
SELECT id, parent_id, title, progress, has_check_in FROM objective
WHERE organization_id = $1 AND cycle_id = $2 ORDER BY id
"""
Q3 = """
SELECT id, value, note, created_at FROM check_in
WHERE organization_id = $1 AND key_result_id = $2 ORDER BY id DESC LIMIT 100
"""
Q4 = """
SELECT k.id, k.title, k.type, k.progress, k.current_value, k.start_value, k.target_value,
       k.last_check_in_id, k.last_check_in_at, k.created_at, o.team_id,
       cy.starts_on, cy.ends_on, cy.status,
       c.value, c.note, c.measured_at, c.created_at AS checked_at
FROM key_result k
JOIN objective o ON o.id = k.objective_id
JOIN cycle cy ON cy.id = o.cycle_id
LEFT JOIN check_in c ON c.key_result_id = k.id
WHERE k.organization_id = $1 AND k.id = $2
ORDER BY c.id DESC
"""
M1 = """
WITH c AS (
    INSERT INTO check_in (organization_id, key_result_id, value, progress, caller)
    VALUES ($1, $2, $3, 0.5, 'bench') RETURNING id
), k AS (
    UPDATE key_result SET current_value = $3, last_check_in_id = (SELECT id FROM c),
           last_check_in_at = now()
    WHERE id = $2 RETURNING objective_id
), chain AS (
    WITH RECURSIVE up(id, parent_id) AS (
        SELECT id, parent_id FROM objective WHERE id = (SELECT objective_id FROM k)
        UNION ALL SELECT o.id, o.parent_id FROM objective o JOIN up ON o.id = up.parent_id
    ) SELECT id FROM up
), o AS (
    UPDATE objective SET progress = progress WHERE id IN (SELECT id FROM chain) RETURNING id
), s AS (
    UPDATE organization SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq
)
INSERT INTO event (organization_id, seq, kind, subject_type, subject_id, payload)
SELECT $1, s.event_seq, 'CHECK_IN', 'KeyResult', $2, '{}'::jsonb FROM s
RETURNING (SELECT count(*) FROM o)
"""


async def _json(send, body: object, status: int = 200) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def app(scope, receive, send) -> None:
    global _pool
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _pool = await asyncpg.create_pool(
                    os.environ["OKR_BENCH_LIMIT_DSN"], min_size=4, max_size=16
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _pool is not None:
                    await _pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    args = {k: int(v[0]) for k, v in parse_qs(scope["query_string"].decode()).items()}
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    path = scope["path"]
    if _pool is None:
        raise RuntimeError("the lifespan startup creates the pool before any request")
    async with _pool.acquire() as conn:
        if path == "/q1":
            rows = await conn.fetch(Q1, args["org"], args["team"], args["cycle"])
            out: dict[int, dict] = {}
            krs: dict[int, list] = defaultdict(list)
            for r in rows:
                out.setdefault(
                    r["id"],
                    {
                        "id": r["id"],
                        "title": r["title"],
                        "progress": r["progress"],
                        "owner": r["owner"],
                    },
                )
                if r["kr_id"] is not None:
                    krs[r["id"]].append(
                        {
                            "title": r["kr_title"],
                            "progress": r["kr_progress"],
                            "currentValue": r["current_value"],
                            "lastCheckIn": {"value": r["last_value"], "createdAt": r["last_at"]},
                        }
                    )
            await _json(send, [{**o, "keyResults": krs[i]} for i, o in out.items()])
        elif path == "/q2":
            rows = await conn.fetch(Q2, args["org"], args["cycle"])
            await _json(send, [dict(r) for r in rows])
        elif path == "/q3":
            rows = await conn.fetch(Q3, args["org"], args["kr"])
            await _json(send, [dict(r) for r in rows])
        elif path == "/q4":
            # The key result, its cycle and all its check-ins (the forecast's input,
            # the 50 latest shown); nothing computed.
            rows = await conn.fetch(Q4, args["org"], args["kr"])
            head = rows[0]
            checks = [
                {
                    "value": r["value"],
                    "note": r["note"],
                    "measuredAt": r["measured_at"],
                    "createdAt": r["checked_at"],
                }
                for r in rows
                if r["value"] is not None
            ]
            await _json(
                send,
                {
                    "id": head["id"],
                    "title": head["title"],
                    "type": head["type"],
                    "progress": head["progress"],
                    "currentValue": head["current_value"],
                    "targetValue": head["target_value"],
                    "cycle": [head["starts_on"], head["ends_on"], head["status"]],
                    "points": [[c["measuredAt"], c["value"]] for c in checks],
                    "checkIns": checks[:50],
                },
            )
        elif path == "/m1":
            count = await conn.fetchval(M1, args["org"], args["kr"], float(args["value"]))
            await _json(send, {"objectives": count})
        else:
            await _json(send, {"error": "not found"}, 404)
