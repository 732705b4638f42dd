"""WebSocket clients of the GraphQL transports and real server processes, for the
real-time tests (both subprotocols, several replicas on one database)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
from gql import GraphQLRequest
from gql.transport.websockets import WebsocketsTransport

TRANSPORT, LEGACY = "graphql-transport-ws", "graphql-ws"


PROGRESS = """
subscription($after: String, $teamId: ID, $objectiveId: ID) {
  progressChanged(after: $after, teamId: $teamId, objectiveId: $objectiveId) {
    cursor occurredAt actor { name } checkIn { value note }
    changes { node { id __typename } previousProgress progress status }
  }
}
"""


class Replica:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.http = f"http://127.0.0.1:{port}/graphql"
        self.ws = f"ws://127.0.0.1:{port}/graphql"


def transport(replica: Replica, token: str, subprotocol: str | None = None) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=replica.ws,
        init_payload={"Authorization": f"Bearer {token}"},
        subprotocols=[subprotocol] if subprotocol else None,
    )


async def collect(session, variables: dict, n: int, queue: asyncio.Queue) -> None:
    request = GraphQLRequest(PROGRESS, variable_values=variables)
    async for result in session.subscribe(request):
        await queue.put(result["progressChanged"])


async def next_event(queue: asyncio.Queue, wait: float = 15) -> dict:
    return await asyncio.wait_for(queue.get(), wait)


async def connect(replica: Replica, token: str, protocol: str) -> Any:
    ws = await websockets.connect(replica.ws, subprotocols=[protocol])
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    ack = await receive(ws)
    assert ack["type"] == "connection_ack", ack
    return ws


async def receive(ws: Any, wait: float = 15, op: str | None = None) -> dict:
    """The next message that is not a keep-alive (and is about operation `op`, if given)."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), wait))
        if message["type"] != "ka" and (op is None or message.get("id") == op):
            return message


async def start(ws: Any, protocol: str, op: str, query: str, variables: dict | None = None):
    kind = "subscribe" if protocol == TRANSPORT else "start"
    payload = {"query": query, "variables": variables or {}}
    await ws.send(json.dumps({"id": op, "type": kind, "payload": payload}))


async def closed(ws: Any, wait: float) -> tuple[int, str, float]:
    """Read until the server closes: (code, reason, seconds it took)."""
    started = time.monotonic()
    try:
        while True:
            await asyncio.wait_for(ws.recv(), max(0.01, wait - (time.monotonic() - started)))
    except websockets.ConnectionClosed as exc:
        assert exc.rcvd is not None, "the server did not send a close frame"
        return exc.rcvd.code, exc.rcvd.reason, time.monotonic() - started
    except TimeoutError:
        raise AssertionError(f"the socket was still open after {wait} s") from None


async def graphql(replica: Replica, token: str, query: str, variables: dict | None = None):
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            replica.http,
            headers={"Authorization": f"Bearer {token}"},
            json={"query": query, "variables": variables or {}},
        )


class Server:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.http = f"http://127.0.0.1:{port}/graphql"
        self.ws = f"ws://127.0.0.1:{port}/graphql"


class Socket:
    """A raw client of either protocol: it shows exactly what the server sends."""

    def __init__(self, ws: Any, protocol: str) -> None:
        self.ws, self.protocol = ws, protocol
        self.queues: dict[str, asyncio.Queue] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server: Server, token: str, protocol: str = "graphql-transport-ws"):
        ws = await websockets.connect(server.ws, subprotocols=[protocol], max_size=2**24)
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["type"] == "connection_ack":
                return cls(ws, protocol)
            assert message["type"] == "ka", message

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message:
                await self.queues.setdefault(message["id"], asyncio.Queue()).put(message)

    async def subscribe(self, op_id: str, query: str, variables: dict | None = None) -> None:
        self.queues.setdefault(op_id, asyncio.Queue())
        kind = "subscribe" if self.protocol == "graphql-transport-ws" else "start"
        await self.ws.send(
            json.dumps(
                {"id": op_id, "type": kind, "payload": {"query": query, "variables": variables}}
            )
        )

    async def next(self, op_id: str, wait: float = 20) -> dict:
        """The next result (a `next`/`data` payload, or an `error` message's errors)."""
        message = await asyncio.wait_for(self.queues[op_id].get(), wait)
        if message["type"] in ("next", "data"):
            return message["payload"]
        if message["type"] == "error":  # a list of errors, or one (the legacy protocol)
            payload = message["payload"]
            return {"errors": payload if isinstance(payload, list) else [payload]}
        return {"ended": message["type"]}

    def idle(self, op_id: str) -> bool:
        return self.queues[op_id].empty()

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()


async def check_in_on(
    replica: Replica, token: str, kr_gid: str, value: float, note: str | None = None
) -> None:
    q = "mutation($i: CheckInInput!) { checkIn(input: $i) { userErrors { message } } }"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(
            replica.http,
            headers={"Authorization": f"Bearer {token}"},
            json={
                "query": q,
                "variables": {"i": {"keyResultId": kr_gid, "value": value, "note": note}},
            },
        )
    assert r.json()["data"]["checkIn"]["userErrors"] == [], r.text


def first_error(message: dict) -> dict:
    payload = message["payload"]
    return payload[0] if isinstance(payload, list) else payload
