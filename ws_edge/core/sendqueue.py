"""A backed-up connection's backlog: bounded in messages and in bytes, coalescing superseded messages,
and leaving as batch frames of at most `batch_max` messages when the socket drains.

A socket whose transport still holds unsent bytes takes nothing more: what fan-out routes to it
waits here, and once the socket has drained it leaves as batch frames (`pop_frame`, `pop_wire`),
so a client that falls behind gets fewer, fuller frames instead of drowning in one frame per message.
Past `coalesce_mark` queued entries, a message with a conflation key replaces the queued message
with the same key (a newer `task_progress` of the same task supersedes the older one). Past
`max_messages` or `max_bytes`, `push` answers False: the connection is to be closed as a slow
consumer (4008), so a slow client never grows the edge's memory without bound.

Nothing is allocated while the queue is empty (most connections, most of the time): the entries
and the key index exist only while something waits. Sockets that drain in the same state (the same
messages at the head of their backlog: clients that fell behind together) share their frames through
`SharedFrames`, built once. No I/O.
"""

from __future__ import annotations

from collections import deque

from .frames import MAX_FRAME_MESSAGES, batch_frame, websocket_text_frame


class SharedFrames:
    """Frames built from queued envelopes, by the envelopes they hold: the same envelopes (the same
    bytes objects, which fan-out shares between connections) give the same frame, built once. Bounded:
    forgotten all at once past `max_entries` or `max_bytes`, so it holds nothing for long."""

    __slots__ = ("max_entries", "max_bytes", "_frames", "bytes", "built")

    def __init__(self, max_entries: int = 1024, max_bytes: int = 4 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._frames: dict[tuple[bytes, ...], tuple[bytes, bytes]] = {}
        self.bytes = 0
        self.built = 0

    def get(self, envelopes: tuple[bytes, ...]) -> tuple[bytes, bytes]:
        """(the JSON frame, its WebSocket text frame) for `envelopes`."""
        frame = self._frames.get(envelopes)
        if frame is None:
            if len(self._frames) >= self.max_entries or self.bytes >= self.max_bytes:
                self._frames.clear()
                self.bytes = 0
            payload = batch_frame(list(envelopes))
            frame = self._frames[envelopes] = (payload, websocket_text_frame(payload))
            self.bytes += 2 * len(payload)
            self.built += 1
        return frame

    def __len__(self) -> int:
        return len(self._frames)


SHARED_FRAMES = SharedFrames()  # one per process: the frames of sockets that drain alike


class SendQueue:
    __slots__ = ("coalesce_mark", "max_messages", "max_bytes", "batch_max", "shared", "_entries", "_by_key",
                 "bytes", "coalesced")

    def __init__(self, coalesce_mark: int = 100, max_messages: int = 1000, max_bytes: int = 1 << 20,
                 batch_max: int = MAX_FRAME_MESSAGES, shared: SharedFrames | None = None) -> None:
        self.coalesce_mark = coalesce_mark
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.batch_max = batch_max  # messages per batch frame
        self.shared = shared if shared is not None else SHARED_FRAMES
        # [frame, conflation key, whether the frame is one envelope (and so may join a batch)];
        # None while empty.
        self._entries: deque[list] | None = None
        self._by_key: dict[str, list] | None = None
        self.bytes = 0
        self.coalesced = 0

    def push(self, frame: bytes, key: str | None = None, envelope: bool = False) -> bool:
        """Queue a frame; False when the queue is over its bounds (the client is too slow)."""
        entries = self._entries
        if entries is None:
            entries = self._entries = deque()
        if key is not None:
            by_key = self._by_key
            if by_key is None:
                by_key = self._by_key = {}
            queued = by_key.get(key)
            if queued is not None and len(entries) >= self.coalesce_mark:
                self.bytes += len(frame) - len(queued[0])
                queued[0] = frame
                self.coalesced += 1
                return self.bytes <= self.max_bytes
        entry = [frame, key, envelope]
        entries.append(entry)
        if key is not None:
            self._by_key[key] = entry  # type: ignore[index]
        self.bytes += len(frame)
        return len(entries) <= self.max_messages and self.bytes <= self.max_bytes

    def push_first(self, frame: bytes) -> None:
        if self._entries is None:
            self._entries = deque()
        self._entries.appendleft([frame, None, False])
        self.bytes += len(frame)

    def pop_frame(self) -> bytes | None:
        """The next JSON frame to write: a queued frame, or up to `batch_max` queued envelopes as one batch."""
        popped = self._pop()
        return None if popped is None else popped[0]

    def pop_wire(self, max_bytes: int = 1 << 20) -> bytes:
        """What is queued (up to about `max_bytes`) as WebSocket text frames, for one write: the
        envelopes in batch frames of at most `batch_max`, shared with sockets in the same state."""
        wires = []
        size = 0
        while size < max_bytes and (popped := self._pop()) is not None:
            wires.append(popped[1])
            size += len(popped[1])
        return wires[0] if len(wires) == 1 else b"".join(wires)

    def _pop(self) -> tuple[bytes, bytes] | None:
        entries = self._entries
        if not entries:
            return None
        entry = entries.popleft()
        self._forget(entry)
        if not entry[2]:
            frame = (entry[0], websocket_text_frame(entry[0]))
        else:
            envelopes = [entry[0]]
            limit = self.batch_max
            while entries and entries[0][2] and len(envelopes) < limit:
                following = entries.popleft()
                self._forget(following)
                envelopes.append(following[0])
            frame = self.shared.get(tuple(envelopes))
        if not entries:  # empty: hold nothing until the next backlog
            self._entries = self._by_key = None
        return frame

    def _forget(self, entry: list) -> None:
        self.bytes -= len(entry[0])
        key = entry[1]
        if key is not None and self._by_key is not None and self._by_key.get(key) is entry:
            del self._by_key[key]

    @property
    def allocated(self) -> bool:
        """Whether it holds any storage (only while something is queued)."""
        return self._entries is not None or self._by_key is not None

    def __len__(self) -> int:
        return len(self._entries) if self._entries is not None else 0

    def __bool__(self) -> bool:
        return bool(self._entries)
