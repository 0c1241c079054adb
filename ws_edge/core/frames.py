"""The JSON frame codec: parsing what a browser sends and building what the edge sends.

Frames the push service delivers are already complete envelopes (bytes); the edge only splices
them into batch frames. Nothing here decodes a published message's `data`.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from .codes import ErrorCode

# The guide's batch: at most this many messages in one frame (the default of EDGE_BATCH_MAX_MESSAGES).
MAX_FRAME_MESSAGES = 10
T = TypeVar("T")


class ProtocolError(Exception):
    """A frame the edge must answer with an error frame; `message_id` is the offending id, if any."""

    def __init__(self, code: ErrorCode, message: str, message_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.message_id = message_id


@dataclass(frozen=True, slots=True)
class ClientMessage:
    type: str
    id: str | None
    data: dict[str, Any]
    topic: str | None


def parse_client_frame(frame: str | bytes, max_bytes: int) -> ClientMessage:
    """Parse one inbound frame into a ClientMessage, or raise ProtocolError."""
    size = len(frame.encode()) if isinstance(frame, str) else len(frame)
    if size > max_bytes:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"frame is {size} bytes; the limit is {max_bytes}")
    try:
        value = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"frame is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"a message must be a JSON object, not {_kind(value)}")
    raw_id = value.get("id")
    if raw_id is None:
        message_id = None
    elif isinstance(raw_id, str) and 0 < len(raw_id) <= 128:
        message_id = raw_id
    elif isinstance(raw_id, int) and not isinstance(raw_id, bool) and abs(raw_id) < 2**53:
        message_id = str(raw_id)
    else:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "`id` must be a string of 1 to 128 characters or an integer")
    type_ = value.get("type")
    if not isinstance(type_, str) or not type_:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "`type` must be a non-empty string", message_id)
    if len(type_) > 64:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "`type` is longer than 64 characters", message_id)
    data = value.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"`data` must be an object, not {_kind(data)}", message_id)
    topic = value.get("topic")
    if topic is not None and not isinstance(topic, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "`topic` must be a string", message_id)
    return ClientMessage(type=type_, id=message_id, data=data, topic=topic)


def topics_field(message: ClientMessage) -> list[str]:
    """`data.topics` of a subscribe/unsubscribe: a list of strings (grammar checked by the caller)."""
    topics = message.data.get("topics")
    if isinstance(topics, str):
        topics = [topics]
    if not isinstance(topics, list) or not topics:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "`data.topics` must be a non-empty list of topics", message.id)
    return topics


# Types a browser's `publish` may not give its message: the server frames' own.
RESERVED_TYPES = frozenset({"connected", "ack", "pong", "error", "recovery", "batch", "close", "refresh_required",
                            "unsubscribed", "ping", "subscribe", "unsubscribe", "auth", "refresh", "publish", "rpc"})


def publish_fields(message: ClientMessage) -> tuple[str, str, bytes]:
    """`publish`'s `data = {topic, data, type?}`: the topic (grammar checked by the caller), the
    message's type (default `message`) and its data as JSON."""
    topic = message.data.get("topic")
    if not isinstance(topic, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "`data.topic` must be a topic", message.id)
    type_ = message.data.get("type", "message")
    if not isinstance(type_, str) or not 0 < len(type_) <= 64 or type_ in RESERVED_TYPES:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "`data.type` must be 1 to 64 characters and not a type "
                            "of the protocol's own", message.id)
    return topic, type_, orjson.dumps(message.data.get("data"))


def rpc_fields(message: ClientMessage) -> tuple[str, bytes]:
    """`rpc`'s `data = {method, data}`: the method and its data as JSON."""
    method = message.data.get("method")
    if not isinstance(method, str) or not 0 < len(method) <= 64:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "`data.method` must be a string of 1 to 64 characters",
                            message.id)
    return method, orjson.dumps(message.data.get("data"))


def split_topics_param(value: str | None) -> list[str]:
    """The `topics` query parameter: comma-separated, blanks ignored, order kept, duplicates dropped."""
    if not value:
        return []
    return list(dict.fromkeys(t.strip() for t in value.split(",") if t.strip()))


_PROCESS = os.urandom(6).hex()  # ids of frames the edge makes: unique across edges and restarts
_serial = itertools.count(1)


def new_id(prefix: str) -> str:
    """An id for a frame the edge makes itself (`connected`, an error without one); cheaper than a
    UUID per frame, and as unique."""
    return f"{prefix}_{_PROCESS}{next(_serial):x}"


def server_frame(type_: str, message_id: str | None, timestamp_ms: int, data: Any = None) -> bytes:
    frame: dict[str, Any] = {"type": type_, "id": message_id or new_id(type_), "timestamp": timestamp_ms}
    if data is not None:
        frame["data"] = data
    return orjson.dumps(frame)


def error_frame(code: ErrorCode, message: str, message_id: str | None, timestamp_ms: int) -> bytes:
    """The guide's error frame: the offending message's id (a fresh one when it had none)."""
    return orjson.dumps(
        {
            "type": "error",
            "id": message_id or new_id("error"),
            "timestamp": timestamp_ms,
            "error": {"code": code.value, "message": message},
        }
    )


def batch_frame(envelopes: list[bytes]) -> bytes:
    """`{"type":"batch","messages":[...]}` from already-encoded envelopes; a lone one goes as itself."""
    if len(envelopes) == 1:
        return envelopes[0]
    return b'{"type":"batch","messages":[' + b",".join(envelopes) + b"]}"


def regroup(batches: Sequence[Sequence[T]], cap: int) -> Sequence[Sequence[T]]:
    """The messages of `batches`, in order, in batches of at most `cap` (each full but the last): the
    frames of a fan-out round. Batches from the push service are small when it is not busy; when the
    edge is, a round carries several, and its sockets then get full frames instead of one per batch."""
    if len(batches) == 1 and len(batches[0]) <= cap:
        return batches
    messages = [message for batch in batches for message in batch]
    return [messages[i:i + cap] for i in range(0, len(messages), cap)]


def websocket_text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (RFC 6455 5.2) holding UTF-8 `payload`:
    what a server sends, identical for every client."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
