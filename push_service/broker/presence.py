"""Where the broker keeps presence (issue 15): the contract, and the memory engine's store.

Guarantees every store gives (the memory one by `core/presence.PresenceTable`, the Redis one by the
same rules in Lua, atomically per call):
- `beat(node, ttl, report)`: the node (an edge, or a push replica) is alive for `ttl` seconds more,
  with its report (JSON: its figures, for Info and Channels).
- `apply(edge, changes, snapshot)`: an edge's joins and leaves, in order; answers the events readers
  see: a join when a client id is new in the topic (on any edge), a leave when its last entry goes;
  a repeat is no event. With `snapshot` (a stream's first request: the edge's whole presence), the
  edge's entries that the snapshot does not hold are removed first (leaves missed while its stream
  was down). Joins past the topic's cap are not recorded (`refused` in the answer).
- `clients(topic)`: the entries of live edges, one per client id, in join order.
- `hold` / `release` (occupancy): a topic subscribed or a user connected on an edge; answers the
  transitions of the whole cluster (first edge: occupied; last: vacated). `snapshot` replaces all
  of an edge's holds.
- `sweep()`: edges that stopped beating are forgotten, each by exactly one replica: the leaves of
  their clients and the keys they alone held come back, to be told once.
- Every call raises BrokerUnavailable when the backing store is away.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.presence import ClientEntry, Occupancy, PresenceChange, PresenceEvent, PresenceTable


@dataclass(slots=True)
class Applied:
    events: list[PresenceEvent] = field(default_factory=list)
    refused: int = 0


class PresenceStore(abc.ABC):
    @abc.abstractmethod
    async def beat(self, node: str, ttl: float, report: bytes) -> bool:
        """`node` is alive for `ttl` more seconds; True when it was not known alive (new, swept, or the
        store lost it): what it declared before is not recorded, and its stream gives all of it again."""

    @abc.abstractmethod
    async def apply(self, edge: str, changes: Sequence[PresenceChange], snapshot: bool = False) -> Applied: ...

    @abc.abstractmethod
    async def clients(self, topic: str) -> list[ClientEntry]: ...

    @abc.abstractmethod
    async def occupancy(self, edge: str, holds: Sequence[tuple[str, str]], releases: Sequence[tuple[str, str]],
                        snapshot: bool = False) -> list[Occupancy]: ...

    @abc.abstractmethod
    async def sweep(self) -> tuple[list[PresenceEvent], list[Occupancy]]: ...

    @abc.abstractmethod
    async def reports(self) -> dict[str, bytes]: ...


class MemoryPresence(PresenceStore):
    """One process: the table itself, on the monotonic clock."""

    def __init__(self, max_clients: int = 1000) -> None:
        self.table = PresenceTable(max_clients)

    async def beat(self, node: str, ttl: float, report: bytes) -> bool:
        return self.table.beat(node, time.monotonic() + ttl, report)

    async def apply(self, edge: str, changes: Sequence[PresenceChange], snapshot: bool = False) -> Applied:
        refused = self.table.refused
        events = []
        if snapshot:
            keep = {(c.topic, c.client.client_id) for c in changes if not c.leave}
            gone = [PresenceChange(topic, entry, leave=True) for topic, entry in self.table.entries_of(edge)
                    if (topic, entry.client_id) not in keep]
            events = self.table.apply(edge, gone)
        events += self.table.apply(edge, changes)
        return Applied(events, self.table.refused - refused)

    async def clients(self, topic: str) -> list[ClientEntry]:
        return self.table.clients(topic, time.monotonic())

    async def occupancy(self, edge: str, holds: Sequence[tuple[str, str]], releases: Sequence[tuple[str, str]],
                        snapshot: bool = False) -> list[Occupancy]:
        changes = []
        if snapshot:
            keep = set(holds)
            releases = [*[h for h in self.table.holds_of(edge) if h not in keep], *releases]
        for kind, key in holds:
            if (change := self.table.hold(edge, kind, key)) is not None:
                changes.append(change)
        for kind, key in releases:
            if (change := self.table.release(edge, kind, key)) is not None:
                changes.append(change)
        return changes

    async def sweep(self) -> tuple[list[PresenceEvent], list[Occupancy]]:
        return self.table.sweep(time.monotonic())

    async def reports(self) -> dict[str, bytes]:
        return self.table.reports(time.monotonic())
