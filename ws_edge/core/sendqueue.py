"""A slow connection's backlog: bounded in messages and in bytes, coalescing superseded messages.

Past `coalesce_mark` queued entries, a message with a conflation key replaces the queued message
with the same key (a newer `task_progress` of the same task supersedes the older one). Past
`max_messages` or `max_bytes`, `push` answers False: the connection is to be closed as a slow
consumer (4008), so a slow client never grows the edge's memory without bound. No I/O.
"""

from __future__ import annotations

from collections import deque

from .frames import MAX_FRAME_MESSAGES, batch_frame


class SendQueue:
    __slots__ = ("coalesce_mark", "max_messages", "max_bytes", "_entries", "_by_key", "bytes", "coalesced")

    def __init__(self, coalesce_mark: int = 100, max_messages: int = 1000, max_bytes: int = 1 << 20) -> None:
        self.coalesce_mark = coalesce_mark
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        # [frame, conflation key, whether the frame is one envelope (and so may join a batch)]
        self._entries: deque[list] = deque()
        self._by_key: dict[str, list] = {}
        self.bytes = 0
        self.coalesced = 0

    def push(self, frame: bytes, key: str | None = None, envelope: bool = False) -> bool:
        """Queue a frame; False when the queue is over its bounds (the client is too slow)."""
        if key is not None:
            queued = self._by_key.get(key)
            if queued is not None and len(self._entries) >= self.coalesce_mark:
                self.bytes += len(frame) - len(queued[0])
                queued[0] = frame
                self.coalesced += 1
                return self.bytes <= self.max_bytes
        entry = [frame, key, envelope]
        self._entries.append(entry)
        if key is not None:
            self._by_key[key] = entry
        self.bytes += len(frame)
        return len(self._entries) <= self.max_messages and self.bytes <= self.max_bytes

    def push_first(self, frame: bytes) -> None:
        self._entries.appendleft([frame, None, False])
        self.bytes += len(frame)

    def pop_frame(self) -> bytes | None:
        """The next frame to write: a queued frame, or up to 10 queued envelopes as one batch."""
        if not self._entries:
            return None
        entry = self._entries.popleft()
        self._forget(entry)
        if not entry[2]:
            return entry[0]
        envelopes = [entry[0]]
        while self._entries and self._entries[0][2] and len(envelopes) < MAX_FRAME_MESSAGES:
            following = self._entries.popleft()
            self._forget(following)
            envelopes.append(following[0])
        return batch_frame(envelopes)

    def _forget(self, entry: list) -> None:
        self.bytes -= len(entry[0])
        key = entry[1]
        if key is not None and self._by_key.get(key) is entry:
            del self._by_key[key]

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)
