"""Client frames for this edge's HTTP-transport sessions, by session id (`~<mark>.<hex>`).

`POST /emulation` may land on any edge; one that does not hold the session forwards the frames
through the push service, which routes them by the session id's edge mark to the holding edge's
stream as control deliveries. Here they are split from the fan-out and put in their session's inbox.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

log = logging.getLogger("ws_edge")


class Inbox(Protocol):
    """An HTTP-transport session's client frames (http_stream.py): False when it takes no more."""

    def put(self, frames: list[str]) -> bool: ...


class StreamInboxes(dict[str, Inbox]):
    def take_control(self, deliveries: Sequence[Any]) -> Sequence[Any]:
        """Put the control deliveries' frames in their inboxes; returns the others, for fan-out."""
        if not any(d.control for d in deliveries):
            return deliveries
        for delivery in deliveries:
            if delivery.control:
                self.deliver(delivery.client_id, delivery.frame)
        return [d for d in deliveries if not d.control]

    def deliver(self, session_id: str, frame: bytes) -> None:
        inbox = self.get(session_id)
        try:
            frames = orjson.loads(frame)
        except orjson.JSONDecodeError:
            frames = None
        if inbox is None or not isinstance(frames, list) or not all(isinstance(f, str) for f in frames):
            log.info("client frames for session %s dropped: %s", session_id[:13],
                     "no such session here" if inbox is None else "not a list of frames")
            return
        if not inbox.put(frames):
            log.warning("client frames for session %s dropped: its inbox is full", session_id[:13])
