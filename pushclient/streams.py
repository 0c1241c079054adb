"""The edge's HTTP transports from Python, with no HTTP library: `GET /sse` (or `/stream`) read as a
stream of JSON frames, and `POST /emulation` for what the client sends.

`StreamConnection.open(base_url, "/sse", topics=...)` gives the frames one by one (`recv_raw()`); the
`connected` frame's `data.session` names the session in `send()`, which may go to any edge
(`post_url`). Plain HTTP/1.1 over asyncio streams: chunked or close-delimited bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson


class StreamError(Exception):
    """The edge answered with an HTTP error instead of a stream (status, body)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body.decode(errors='replace')}")
        self.status = status
        self.body = body


async def _request(url: str, method: str, body: bytes = b"", headers: dict[str, str] | None = None,
                   sock: socket.socket | None = None, limit: int = 1 << 22
                   ) -> tuple[int, dict[str, str], asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if sock is not None:
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
    else:
        reader, writer = await asyncio.open_connection(host, port, limit=limit)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    status_line = await reader.readline()
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        writer.close()
        raise StreamError(0, status_line) from None
    received: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        received[name.strip().lower()] = value.strip()
    return status, received, reader, writer


class _Body:
    """A response body, chunked or not, read line by line (each byte looked at once)."""

    def __init__(self, reader: asyncio.StreamReader, chunked: bool) -> None:
        self._reader, self._chunked = reader, chunked
        self._lines: deque[bytes] = deque()  # complete lines, in order
        self._partial = b""  # the start of the next line
        self._done = False

    async def _chunk(self) -> bytes:
        if not self._chunked:
            return await self._reader.read(65536)
        size_line = await self._reader.readline()
        size = int(size_line.split(b";")[0].strip() or b"0", 16) if size_line else 0
        data = await self._reader.readexactly(size) if size else b""
        await self._reader.readline()
        return data

    async def _more(self) -> bool:
        if self._done:
            return False
        data = await self._chunk()
        if not data:
            self._done = True
            return False
        *complete, self._partial = (self._partial + data).split(b"\n")
        self._lines.extend(complete)
        return True

    async def readline(self) -> bytes | None:
        """The next line without its end, None at the end of the body."""
        while not self._lines:
            if not await self._more():
                if self._partial:
                    line, self._partial = self._partial, b""
                    return line
                return None
        return self._lines.popleft().rstrip(b"\r")

    async def read_all(self) -> bytes:
        while await self._more():
            pass
        data = b"\n".join([*self._lines, self._partial])
        self._lines.clear()
        self._partial = b""
        return data


async def post_json(url: str, value: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST a JSON body; the status and the parsed answer."""
    status, received, reader, writer = await _request(url, "POST", orjson.dumps(value), headers)
    try:
        body = await _Body(reader, received.get("transfer-encoding") == "chunked").read_all()
    finally:
        writer.close()
    return status, orjson.loads(body) if body else None


class StreamConnection:
    """One `GET /sse` or `GET /stream`: frames as JSON text; what is sent goes by `POST /emulation`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str],
                 sse: bool, post_url: str) -> None:
        self._writer = writer
        self._body = _Body(reader, headers.get("transfer-encoding") == "chunked")
        self.headers = headers
        self.sse = sse
        self.post_url = post_url
        self.session: str | None = None  # from the `connected` frame
        self.last_event_id: str | None = None  # SSE: the latest `id:` (every position seen)
        self.heartbeats = 0

    @classmethod
    async def open(cls, base_url: str, path: str = "/sse", post_url: str | None = None,
                   headers: dict[str, str] | None = None, sock: socket.socket | None = None,
                   limit: int = 1 << 22, **params: str) -> StreamConnection:
        """`base_url` as http://host:port; `post_url`: where to POST (default: the same edge); `sock`:
        a connected socket to use; `limit`: bytes read ahead at most (a line may not be longer)."""
        query = f"?{urlencode(params)}" if params else ""
        status, received, reader, writer = await _request(base_url + path + query, "GET", headers=headers,
                                                          sock=sock, limit=limit)
        if status != 200:
            body = await _Body(reader, received.get("transfer-encoding") == "chunked").read_all()
            writer.close()
            raise StreamError(status, body)
        sse = path.startswith("/sse")
        return cls(reader, writer, received, sse, (post_url or base_url) + "/emulation")

    async def recv_raw(self) -> bytes | None:
        """The next frame's JSON text (heartbeats skipped); None at the end of the stream."""
        if not self.sse:
            while (line := await self._body.readline()) is not None:
                if line:
                    return self._seen(line)
                self.heartbeats += 1
            return None
        data: list[bytes] = []
        while (line := await self._body.readline()) is not None:
            if not line:
                if data:
                    return self._seen(b"\n".join(data))
                continue
            if line.startswith(b":"):
                self.heartbeats += 1
                continue
            name, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"data":
                data.append(value)
            elif name == b"id":
                self.last_event_id = value.decode()
        return None

    def _seen(self, raw: bytes) -> bytes:
        if self.session is None and raw.startswith(b'{"type":"connected"'):
            self.session = orjson.loads(raw)["data"].get("session")
        return raw

    async def send_frames(self, frames: list[Any]) -> tuple[int, Any]:
        """POST frames (objects, or JSON text) for this session: the edge's status and answer."""
        assert self.session is not None, "no `connected` frame yet"
        return await post_json(self.post_url, {"session": self.session, "frames": frames})

    async def send(self, frame: Any) -> None:
        status, answer = await self.send_frames([frame])
        if status != 202:
            raise StreamError(status, orjson.dumps(answer))

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await self._writer.wait_closed()
