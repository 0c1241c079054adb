"""A connection's spans (tracing on only; common/tracing.py): `edge.connect` from the accepted socket
to `connected` (or the refusal), and `edge.subscribe` from a subscription's interest change to its
confirmation by the push service (the children of `edge.connect` for the topics it starts with).
A connection's trace is sampled at the edge's ratio (EDGE_TRACE_SAMPLE_RATIO)."""

from __future__ import annotations

from collections.abc import Sequence

from common import tracing


class ConnectionSpans:
    def __init__(self, transport: str) -> None:
        self._connect: tracing.Span | None = tracing.start_span(
            "edge.connect", kind=tracing.SpanKind.SERVER, attributes={"push.sink": transport})
        self._subscribes: dict[int, tracing.Span] = {}

    @classmethod
    def sampled(cls, transport: str) -> ConnectionSpans | None:
        return cls(transport) if tracing.sampled_root() else None

    def connected(self, client_id: str, topics: int) -> None:
        if self._connect is not None:
            self._connect.set_attributes({"push.client_id": client_id, "push.topics": topics})
            self._connect.end()
            self._connect = None

    def refused(self, reason: str) -> None:
        if self._connect is not None:
            self._connect.set_status(tracing.Status(tracing.StatusCode.ERROR, reason))
            self._connect.end()
            self._connect = None

    def subscribing(self, ticket: int, topics: Sequence[str]) -> None:
        self._subscribes[ticket] = tracing.start_span(
            "edge.subscribe", parent=self._connect, attributes={"push.topics": list(topics)})

    def subscribed(self, ticket: int) -> None:
        if (span := self._subscribes.pop(ticket, None)) is not None:
            span.end()

    def ended(self) -> None:
        """The connection is gone: what is still open ends (a peer that left before `connected`)."""
        self.refused("closed before connected")
        for span in self._subscribes.values():
            span.set_status(tracing.Status(tracing.StatusCode.ERROR, "closed before confirmed"))
            span.end()
        self._subscribes.clear()
