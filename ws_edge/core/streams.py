"""The HTTP transports' encodings and the emulation request, with no I/O.

A session served over HTTP (`GET /sse`, `GET /stream`) sends the same JSON frames as a WebSocket,
each encoded for the stream:
- SSE (`text/event-stream`): one event per frame, `data:` lines; an event that moves a topic's
  position carries `id:` = every position the connection has seen, as the `since` JSON
  (`{"topic": {"offset": n, "epoch": "..."}}`), so an EventSource's automatic `Last-Event-ID` resumes
  with the same recovery as `?since=`. A comment line is the heartbeat.
- HTTP-streaming (`application/x-ndjson`): one frame per line; an empty line is the heartbeat.
The end of a stream is a `close` frame (`{"type":"close","data":{"code":…,"reason":…}}`, the codes of
a WebSocket close) and then the end of the body.

Client frames come by `POST /emulation`: `{"session": "<session id>", "frames": [frame, …]}`, each
frame a JSON object (or its JSON text), checked here; the session id is `~<edge mark>.<32 hex>`, so
any edge can tell which edge holds it (common/client_ids.py's routing by mark).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from common.client_ids import route_key

from .codes import fit_close_reason
from .frames import server_frame

MAX_EMULATION_FRAMES = 100
SESSION_ID = re.compile(r"~[0-9a-f]{12}\.[0-9a-f]{32}")
SSE_HEARTBEAT = b": heartbeat\n\n"
NDJSON_HEARTBEAT = b"\n"


def close_frame(code: int, reason: str, timestamp_ms: int) -> bytes:
    """A stream's last frame: the close code and reason a WebSocket close would carry."""
    return server_frame("close", None, timestamp_ms, {"code": code, "reason": fit_close_reason(reason)})


def ndjson_line(frame: bytes) -> bytes:
    """One frame as one line. A raw line break can only be JSON whitespace (inside strings it is
    escaped), so published `data` printed over several lines is put on one."""
    if b"\n" in frame or b"\r" in frame:
        frame = frame.replace(b"\r", b" ").replace(b"\n", b" ")
    return frame + b"\n"


def sse_event(frame: bytes, event_id: str | None) -> bytes:
    """One frame as one SSE event (a line break inside, JSON whitespace, continues the `data:`)."""
    if b"\n" in frame or b"\r" in frame:
        frame = frame.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\ndata: ")
    head = b"id: " + event_id.encode() + b"\n" if event_id is not None else b""
    return head + b"data: " + frame + b"\n\n"


Positions = list[tuple[str, int, str]]
_parsed: dict[bytes, Positions] = {}  # a frame sent to many streams is parsed once
_PARSED_MAX = 1024


def frame_positions(frame: bytes) -> Positions:
    """The (topic, offset, epoch) a server frame carries, in order: its messages' positions, or a
    recovery report's. Frames without `"offset"` are not parsed; the same frame (one bytes object
    fanned out to many streams: its hash is computed once) is parsed once."""
    if b'"offset"' not in frame:
        return []
    found = _parsed.get(frame)
    if found is None:
        found = _positions_of(frame)
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()
        _parsed[frame] = found
    return found


def _positions_of(frame: bytes) -> Positions:
    try:
        value = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(value, dict):
        return []
    found: Positions = []
    kind = value.get("type")
    if kind == "batch":
        for message in value.get("messages") or ():
            _add(found, message)
    elif kind in ("connected", "ack"):
        data = value.get("data")
        recovery = data.get("recovery") if isinstance(data, dict) else None
        for topic, report in (recovery if isinstance(recovery, dict) else {}).items():
            _add(found, {**report, "topic": topic} if isinstance(report, dict) else None)
    elif kind == "recovery":
        _add(found, value.get("data"))
    else:
        _add(found, value)
    return found


def _add(found: Positions, where: Any) -> None:
    if not isinstance(where, dict):
        return
    topic, offset, epoch = where.get("topic"), where.get("offset"), where.get("epoch")
    if isinstance(topic, str) and isinstance(offset, int) and offset > 0 and isinstance(epoch, str) and epoch:
        found.append((topic, offset, epoch))


class PositionTracker:
    """Every topic position a connection was sent (messages with `offset`, recovery reports), for
    the SSE event id."""

    __slots__ = ("positions",)

    def __init__(self) -> None:
        self.positions: dict[str, tuple[int, str]] = {}

    def note(self, frame: bytes) -> bool:
        """Take the positions `frame` carries; whether any moved."""
        moved = False
        for topic, offset, epoch in frame_positions(frame):
            if self.positions.get(topic) != (offset, epoch):
                self.positions[topic] = (offset, epoch)
                moved = True
        return moved

    def event_id(self) -> str:
        return orjson.dumps({t: {"offset": o, "epoch": e} for t, (o, e) in self.positions.items()}).decode()


@dataclass(frozen=True, slots=True)
class EmulationRequest:
    session: str
    frames: list[str]

    @property
    def edge_mark(self) -> str:
        return route_key(self.session)


class EmulationError(Exception):
    """A `POST /emulation` to refuse: the HTTP status and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_emulation(body: bytes, max_bytes: int) -> EmulationRequest:
    """The body of a `POST /emulation`, checked; raises EmulationError (400 / 413). Each frame is
    checked later by the session itself, as it would be on a WebSocket (its errors come on the stream)."""
    if len(body) > max_bytes:
        raise EmulationError(413, f"body is {len(body)} bytes; the limit is {max_bytes}")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EmulationError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise EmulationError(400, 'body must be {"session": "...", "frames": [...]}')
    session = value.get("session")
    if not isinstance(session, str) or SESSION_ID.fullmatch(session) is None:
        raise EmulationError(400, "`session` must be the session id of `connected.data.session`")
    frames = value.get("frames")
    if not isinstance(frames, list) or not frames:
        raise EmulationError(400, "`frames` must be a non-empty list of client frames")
    if len(frames) > MAX_EMULATION_FRAMES:
        raise EmulationError(413, f"{len(frames)} frames; at most {MAX_EMULATION_FRAMES} in one request")
    texts = []
    for index, frame in enumerate(frames):
        if isinstance(frame, str):
            texts.append(frame)
        elif isinstance(frame, dict):
            texts.append(orjson.dumps(frame).decode())
        else:
            raise EmulationError(400, f"`frames[{index}]` must be a JSON object (or its JSON text)")
    return EmulationRequest(session, texts)
