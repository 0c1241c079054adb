"""A WebSocket test client speaking the guide's protocol, with exact-frame helpers."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any
from urllib.parse import urlencode

import orjson
import websockets

from .asyncapi import check_server_frame
from .timing import timeout


class WsClient:
    def __init__(self, connection: websockets.ClientConnection, welcome: dict[str, Any]) -> None:
        self.connection = connection
        self.welcome = welcome
        self.client_id: str = welcome["data"]["client_id"]
        self._backlog: deque[dict[str, Any]] = deque()  # frames read past by request(), in order

    @classmethod
    async def connect(cls, base_url: str, path: str = "/ws", **params: str) -> WsClient:
        query = f"?{urlencode(params)}" if params else ""
        connection = await websockets.connect(base_url + path + query, max_size=None)
        welcome = parse_server_frame(await asyncio.wait_for(connection.recv(), timeout(10)))
        assert welcome["type"] == "connected", welcome
        return cls(connection, welcome)

    async def close(self) -> None:
        await self.connection.close()

    async def send(self, message: Any) -> None:
        await self.connection.send(orjson.dumps(message).decode())

    async def send_raw(self, frame: str | bytes) -> None:
        await self.connection.send(frame)

    async def recv(self, wait: float = 5.0) -> dict[str, Any]:
        """The next frame, parsed."""
        if self._backlog:
            return self._backlog.popleft()
        return parse_server_frame(await asyncio.wait_for(self.connection.recv(), timeout(wait)))

    async def frames_until(self, count: int, wait: float = 10.0) -> list[dict[str, Any]]:
        """Frames (batches kept whole) until they hold `count` messages in all."""
        frames, seen = [], 0
        while seen < count:
            frame = await self.recv(wait)
            frames.append(frame)
            seen += len(frame["messages"]) if frame["type"] == "batch" else 1
        assert seen == count, f"expected {count} messages, got {seen}"
        return frames

    async def messages(self, count: int, wait: float = 10.0) -> list[dict[str, Any]]:
        """The next `count` messages, batches unpacked."""
        return unpack(await self.frames_until(count, wait))

    async def expect_silence(self, seconds: float = 0.5) -> None:
        assert not self._backlog, f"expected no frame, got {self._backlog[0]!r}"
        try:
            frame = await asyncio.wait_for(self.connection.recv(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected no frame, got {frame!r}")

    async def request(self, message: dict[str, Any], wait: float = 5.0) -> dict[str, Any]:
        """Send and return the answer with the same id (ack, pong or error). Published messages that
        arrive first are kept, in order, for the next recv()."""
        await self.send(message)
        while True:
            frame = parse_server_frame(await asyncio.wait_for(self.connection.recv(), timeout(wait)))
            if frame.get("type") in ("ack", "pong", "error") and frame.get("id") == message.get("id"):
                return frame
            self._backlog.append(frame)


def parse_server_frame(raw: str | bytes) -> dict[str, Any]:
    """A received frame, parsed and held to the published protocol (docs/asyncapi.yaml)."""
    frame = orjson.loads(raw)
    check_server_frame(frame)
    return frame


def unpack(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for frame in frames:
        out.extend(frame["messages"] if frame["type"] == "batch" else [frame])
    return out
