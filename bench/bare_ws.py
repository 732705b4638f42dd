"""The limit for live updates: the thinnest server of the service's own stack.

uvicorn (the same WebSocket implementation `okr serve` picks, the same loop) and one
Starlette WebSocket route speaking just enough `graphql-transport-ws` for the
subscriber client of bench/subscribers.py: `connection_init` is answered with
`connection_ack` (no authentication), `subscribe` registers the socket, and every
`POST /event` encodes one `next` frame (`progressChanged { cursor occurredAt }`, the
instant being the server's clock when the event arrives) once and writes it to every
subscribed socket. No database, no GraphQL, no per-socket task. `GET /metrics` counts
the subscribed sockets under the service's metric name, `okr_subscribers`.

    python -m uvicorn bench.bare_ws:app --ws websockets-sansio --port 8001
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

PROTOCOL = "graphql-transport-ws"

# operation id -> the sockets subscribed under it (the client uses one id, "1")
subscribed: dict[str, set[WebSocket]] = {}
seq = 0


async def graphql(ws: WebSocket) -> None:
    await ws.accept(subprotocol=PROTOCOL)
    mine: list[tuple[str, WebSocket]] = []
    try:
        while True:
            message = orjson.loads(await ws.receive_text())
            kind = message.get("type")
            if kind == "connection_init":
                await ws.send_text('{"type":"connection_ack"}')
            elif kind == "subscribe":
                op = str(message["id"])
                subscribed.setdefault(op, set()).add(ws)
                mine.append((op, ws))
            elif kind == "complete":
                subscribed.get(str(message["id"]), set()).discard(ws)
            elif kind == "ping":
                await ws.send_text('{"type":"pong"}')
    except WebSocketDisconnect:
        pass
    finally:
        for op, sock in mine:
            subscribed.get(op, set()).discard(sock)


async def event(request: Request) -> JSONResponse:
    """One event: one payload encoded once, one frame per operation id, every socket."""
    global seq
    seq += 1
    payload = orjson.dumps(
        {
            "data": {
                "progressChanged": {
                    "cursor": str(seq),
                    "occurredAt": datetime.now(UTC).isoformat(),
                }
            }
        }
    ).decode()
    sent = 0
    for op, sockets in list(subscribed.items()):
        frame = '{"id":' + orjson.dumps(op).decode() + ',"type":"next","payload":' + payload + "}"
        for ws in list(sockets):
            try:
                await ws.send_text(frame)
                sent += 1
            except Exception:  # gone
                sockets.discard(ws)
    return JSONResponse({"sent": sent})


async def metrics(request: Request) -> PlainTextResponse:
    count = sum(len(s) for s in subscribed.values())
    return PlainTextResponse(f"okr_subscribers {count}\n")


async def readyz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        WebSocketRoute("/graphql", graphql),
        Route("/event", event, methods=["POST"]),
        Route("/metrics", metrics),
        Route("/readyz", readyz),
    ]
)
