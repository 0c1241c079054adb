"""From a publisher's message to a Publication: validated once, its JSON envelope encoded once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import orjson

from common.client_ids import MAX_CLIENT_ID_LENGTH, route_key
from common.topics import topic_error

MAX_TYPE_LENGTH = 64
MAX_ID_LENGTH = 128


class InvalidPublish(ValueError):
    """A message a publisher must fix; becomes INVALID_ARGUMENT at the gRPC edge."""


@dataclass(frozen=True, slots=True)
class Publication:
    """A message ready for fan-out. `frame` is the complete JSON envelope sent to browsers."""

    topic: str
    client_id: str
    id: str
    timestamp_ms: int
    frame: bytes
    retain: bool = False
    offset: int = 0  # position in the topic's history; 0 when the topic keeps none
    epoch: str = ""
    conflation_key: str = ""
    control: bool = False  # client frames for an edge's HTTP-transport session (Emulate), not a message
    kind: int = 0  # MESSAGE, JOIN_LEAVE (of `topic`), COMMAND (for every edge): push.v1.DeliveryKind
    traceparent: str = ""  # W3C trace context of a sampled message's span (common/tracing.py); "": not traced
    replay: bool = False  # a retained state sent again to an edge that declared the topic (push.v1.Delivery.replay)

    def at(self, offset: int, epoch: str) -> Publication:
        """This publication at a history position: the envelope gains `offset` and `epoch`."""
        frame = self.frame[:-1] + b',"offset":' + str(offset).encode() + b',"epoch":' + orjson.dumps(epoch) + b"}"
        return replace(self, frame=frame, offset=offset, epoch=epoch)

    @property
    def ack(self) -> Ack:
        return Ack(self.id, self.timestamp_ms, self.offset, self.epoch)

    @property
    def channel(self) -> str:
        if self.kind == JOIN_LEAVE:
            return join_leave_channel(self.topic)
        if self.kind == COMMAND:
            return COMMAND_CHANNEL
        return client_channel(route_key(self.client_id)) if self.client_id else topic_channel(self.topic)

    def idempotency_key(self, key: str) -> str:
        """`key` as its scope's own, as in Centrifugo: a topic's (a personal message's: its client id's).
        The scope's length first, so that no scope and key run into another's (topics may hold `:`)."""
        scope = client_channel(self.client_id) if self.client_id else topic_channel(self.topic)
        return f"{len(scope)}:{scope}:{key}"


@dataclass(frozen=True, slots=True)
class Ack:
    """How a publish is answered: the message's id, timestamp and position. A repeat (same
    idempotency key) gets its first's, and this is all that is kept to answer it."""

    id: str
    timestamp_ms: int
    offset: int = 0
    epoch: str = ""


TOPIC_CHANNEL_PREFIX = "t:"
MESSAGE, JOIN_LEAVE, COMMAND = 0, 1, 2  # Publication.kind (push.v1.DeliveryKind)
# Join/leave events of a topic: only edges with a connection that asked for them subscribe.
JOIN_LEAVE_CHANNEL_PREFIX = "j:"
# Server API commands: every edge stream is subscribed.
COMMAND_CHANNEL = "x:edges"


def join_leave_channel(topic: str) -> str:
    return JOIN_LEAVE_CHANNEL_PREFIX + topic


def topic_channel(topic: str) -> str:
    return TOPIC_CHANNEL_PREFIX + topic


CLIENT_CHANNEL_PREFIX = "c:"


def client_channel(client_id: str) -> str:
    return CLIENT_CHANNEL_PREFIX + client_id


def encode_envelope(*, type_: str, id_: str, timestamp_ms: int, data: bytes, topic: str) -> bytes:
    """The guide's envelope, field order as the guide prints it; `data` spliced in as given."""
    parts = [b'{"type":', orjson.dumps(type_), b',"id":', orjson.dumps(id_), b',"timestamp":',
             str(timestamp_ms).encode()]
    if data:
        parts += [b',"data":', data]
    if topic:
        parts += [b',"topic":', orjson.dumps(topic)]
    parts.append(b"}")
    return b"".join(parts)


def make_publication(
    *,
    topic: str,
    type_: str,
    data: bytes,
    id_: str,
    client_id: str,
    retain: bool,
    now_ms: int,
    max_data_bytes: int,
    conflation_key: str = "",
) -> Publication:
    """Validate a publisher's message and build its Publication; raises InvalidPublish."""
    if client_id:
        if len(client_id) > MAX_CLIENT_ID_LENGTH:
            raise InvalidPublish(f"client_id is longer than {MAX_CLIENT_ID_LENGTH} characters")
        if retain:
            raise InvalidPublish("a personal message (client_id set) cannot be retained")
    if (topic or not client_id) and (why := topic_error(topic)) is not None:
        raise InvalidPublish(f"invalid topic: {why}")
    if not type_:
        raise InvalidPublish("type must not be empty")
    if len(type_) > MAX_TYPE_LENGTH:
        raise InvalidPublish(f"type is longer than {MAX_TYPE_LENGTH} characters")
    if len(id_) > MAX_ID_LENGTH:
        raise InvalidPublish(f"id is longer than {MAX_ID_LENGTH} characters")
    if len(data) > max_data_bytes:
        raise InvalidPublish(f"data is {len(data)} bytes; the limit is {max_data_bytes}")
    if data:
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidPublish(f"data is not valid UTF-8 JSON: {exc}") from None
    id_ = id_ or uuid.uuid4().hex
    frame = encode_envelope(type_=type_, id_=id_, timestamp_ms=now_ms, data=data, topic=topic)
    if len(conflation_key) > MAX_ID_LENGTH:
        raise InvalidPublish(f"conflation_key is longer than {MAX_ID_LENGTH} characters")
    return Publication(topic=topic, client_id=client_id, id=id_, timestamp_ms=now_ms, frame=frame,
                       retain=retain, conflation_key=conflation_key)


def control_publication(session_id: str, frames: list[str], now_ms: int) -> Publication:
    """Client frames for the HTTP-transport session `session_id`, routed by its edge mark to the edge
    that holds it; `frame` is their JSON array. Raises InvalidPublish."""
    if not session_id.startswith("~") or route_key(session_id) == session_id or len(session_id) > MAX_CLIENT_ID_LENGTH:
        raise InvalidPublish("session_id must be `~<edge mark>.<id>` as the edge gave it")
    if not frames:
        raise InvalidPublish("frames must not be empty")
    return Publication(topic="", client_id=session_id, id=uuid.uuid4().hex, timestamp_ms=now_ms,
                       frame=orjson.dumps(frames), control=True)
