"""Presence, per edge, with no I/O: who is subscribed to which topic, and which edges are alive.

The broker keeps it (the memory engine holds a `PresenceTable`; the Redis engine keeps the same
structure in Redis, with the same rules, in Lua). An edge reports its connections' joins and leaves
on its stream, and a report every interval that proves it alive; its entries count only while it
is alive (`beat` until `expires_at`), and `sweep` takes away those of an edge that stopped reporting
(SIGKILLed, cut off): leave events for its clients, vacated topics and offline users. A client id
held on two edges is one entry for readers: its join is told when its first edge adds it, its leave
when its last one drops it.

Bounds: a topic holds at most `max_clients` entries (more joins are not recorded: the clients stay
subscribed, unseen by presence; `refused` counts them); a topic, an edge or a key with no entry
left is deleted, so nothing stays behind for topics nobody watches any more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from common.presence_rules import public_client


@dataclass(frozen=True, slots=True)
class ClientEntry:
    """One client in a topic's presence: its id, user ("" anonymous), public info (JSON text or b"")
    and when it joined (Unix ms)."""

    client_id: str
    user: str
    info: bytes
    joined_ms: int

    def to_json(self) -> bytes:
        return orjson.dumps({"c": self.client_id, "u": self.user, "i": self.info.decode(), "j": self.joined_ms})

    @classmethod
    def from_json(cls, text: bytes | str) -> ClientEntry:
        v = orjson.loads(text)
        return cls(v["c"], v["u"], v["i"].encode(), int(v["j"]))

    def public(self) -> dict[str, object]:
        """As browsers see it in join/leave events."""
        return public_client(self.client_id, self.user, self.info, self.joined_ms)


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """From an edge: `client` joined `topic` on it (leave False) or left."""

    topic: str
    client: ClientEntry
    leave: bool = False


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A change readers see: `client` joined (`join`) or left `topic`."""

    topic: str
    join: bool
    client: ClientEntry


@dataclass(frozen=True, slots=True)
class Occupancy:
    """`kind` "topic": its first subscriber on any edge came (occupied) or its last went; "user": the
    user's first connection opened (occupied: online) or its last closed."""

    kind: str
    key: str
    occupied: bool


def first_joins(entries: Iterable[ClientEntry]) -> list[ClientEntry]:
    """One entry per client id (its first join: a client on several edges is one client), in join order."""
    first: dict[str, ClientEntry] = {}
    for entry in entries:
        if entry.client_id not in first or entry.joined_ms < first[entry.client_id].joined_ms:
            first[entry.client_id] = entry
    return sorted(first.values(), key=lambda e: (e.joined_ms, e.client_id))


def stats(entries: Iterable[ClientEntry]) -> tuple[int, int]:
    """Clients and distinct users (anonymous clients are no user)."""
    listed = list(entries)
    return len(listed), len({e.user for e in listed if e.user})


class PresenceTable:
    def __init__(self, max_clients: int = 1000) -> None:
        self.max_clients = max_clients
        self.refused = 0
        self._topics: dict[str, dict[str, dict[str, ClientEntry]]] = {}  # topic -> edge -> client id -> entry
        self._alive: dict[str, float] = {}  # edge -> alive until
        self._reports: dict[str, bytes] = {}
        self._edge_topics: dict[str, set[str]] = {}
        self._holders: dict[tuple[str, str], set[str]] = {}  # (kind, key) -> edges holding it
        self._edge_holds: dict[str, set[tuple[str, str]]] = {}

    # --- edges ------------------------------------------------------------------------------------

    def beat(self, edge: str, alive_until: float, report: bytes | None = None) -> bool:
        """Whether `edge` was not known (new, or swept: what it declared is gone)."""
        new = edge not in self._alive
        self._alive[edge] = alive_until
        if report is not None:
            self._reports[edge] = report
        return new

    def alive(self, edge: str, now: float) -> bool:
        return self._alive.get(edge, 0.0) > now

    def reports(self, now: float) -> dict[str, bytes]:
        return {edge: r for edge, r in self._reports.items() if self.alive(edge, now)}

    def sweep(self, now: float) -> tuple[list[PresenceEvent], list[Occupancy]]:
        """Forget the edges that stopped reporting: their clients' leaves, what they alone held."""
        events: list[PresenceEvent] = []
        changes: list[Occupancy] = []
        for edge in [e for e, until in self._alive.items() if until <= now]:
            del self._alive[edge]
            self._reports.pop(edge, None)
            for topic in list(self._edge_topics.get(edge, ())):
                for entry in list(self._topics.get(topic, {}).get(edge, {}).values()):
                    events += self._remove(topic, edge, entry.client_id)
            for kind, key in list(self._edge_holds.get(edge, ())):
                if (change := self.release(edge, kind, key)) is not None:
                    changes.append(change)
        return events, changes

    # --- presence ---------------------------------------------------------------------------------

    def apply(self, edge: str, changes: Iterable[PresenceChange]) -> list[PresenceEvent]:
        """An edge's joins and leaves, in order; the events readers see (none for a repeat)."""
        events: list[PresenceEvent] = []
        for change in changes:
            if change.leave:
                events += self._remove(change.topic, edge, change.client.client_id)
            else:
                events += self._add(change.topic, edge, change.client)
        return events

    def _add(self, topic: str, edge: str, entry: ClientEntry) -> list[PresenceEvent]:
        by_edge = self._topics.get(topic, {})
        if entry.client_id in by_edge.get(edge, {}):
            return []  # a repeat (a stream's snapshot declares again what it held)
        seen = any(entry.client_id in clients for clients in by_edge.values())
        if not seen and sum(map(len, by_edge.values())) >= self.max_clients:
            self.refused += 1
            return []
        self._topics.setdefault(topic, {}).setdefault(edge, {})[entry.client_id] = entry
        self._edge_topics.setdefault(edge, set()).add(topic)
        return [] if seen else [PresenceEvent(topic, True, entry)]

    def _remove(self, topic: str, edge: str, client_id: str) -> list[PresenceEvent]:
        by_edge = self._topics.get(topic)
        clients = None if by_edge is None else by_edge.get(edge)
        if clients is None or (entry := clients.pop(client_id, None)) is None:
            return []
        if not clients:
            del by_edge[edge]  # type: ignore[index]
            self._edge_topics[edge].discard(topic)
            if not self._edge_topics[edge]:
                del self._edge_topics[edge]
        if not by_edge:
            del self._topics[topic]
        still = by_edge is not None and any(client_id in c for c in by_edge.values())
        return [] if still else [PresenceEvent(topic, False, entry)]

    def entries_of(self, edge: str) -> list[tuple[str, ClientEntry]]:
        return [(topic, entry) for topic in self._edge_topics.get(edge, ())
                for entry in self._topics[topic][edge].values()]

    def holds_of(self, edge: str) -> list[tuple[str, str]]:
        return list(self._edge_holds.get(edge, ()))

    def clients(self, topic: str, now: float) -> list[ClientEntry]:
        """A topic's clients on live edges, one entry per client id (its first join), in join order."""
        return first_joins(entry for edge, clients in self._topics.get(topic, {}).items() if self.alive(edge, now)
                           for entry in clients.values())

    # --- occupancy --------------------------------------------------------------------------------

    def hold(self, edge: str, kind: str, key: str) -> Occupancy | None:
        """`edge` holds `key` (a topic subscribed, a user connected): occupied when it is the first."""
        holders = self._holders.setdefault((kind, key), set())
        if edge in holders:
            return None
        holders.add(edge)
        self._edge_holds.setdefault(edge, set()).add((kind, key))
        return Occupancy(kind, key, True) if len(holders) == 1 else None

    def release(self, edge: str, kind: str, key: str) -> Occupancy | None:
        holders = self._holders.get((kind, key))
        if holders is None or edge not in holders:
            return None
        holders.discard(edge)
        held = self._edge_holds[edge]
        held.discard((kind, key))
        if not held:
            del self._edge_holds[edge]
        if holders:
            return None
        del self._holders[(kind, key)]
        return Occupancy(kind, key, False)

    def size(self) -> dict[str, int]:
        """What the table holds (for tests of its bounds, and metrics)."""
        return {"topics": len(self._topics), "edges": len(self._alive), "holds": len(self._holders),
                "entries": sum(len(c) for by_edge in self._topics.values() for c in by_edge.values())}
