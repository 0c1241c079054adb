"""Presence, join/leave and occupancy on the push service: the async side of broker/presence.py.

Each edge stream's requests carry the edge's id, its connections' presence changes and, every
report interval, its report (it is alive; its figures). The replica that receives them records them
in the broker and tells what changed: a join or leave event on the topic's join/leave channel (to
the edges whose connections asked; never for a topic without a `joinleave` rule), and occupancy
events on the configured internal topic. Every sweep interval each replica beats (its own report)
and sweeps the edges that stopped reporting; the broker lets exactly one replica take each dead
edge, so its clients' leaves are told once. An edge's clients leave presence within
`ttl` of its last report for readers, and their leave events follow within a sweep interval.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import orjson

from common.presence_rules import PresenceRules
from common.version import VERSION

from .broker.base import Broker, BrokerUnavailable
from .core.presence import Occupancy, PresenceChange, PresenceEvent
from .core.publication import JOIN_LEAVE, Publication, encode_envelope, make_publication

log = logging.getLogger("push_service.presence")

Publish = Callable[[Publication], Awaitable[object]]


class EdgeMirror:
    """What one edge stream has declared (its presence entries, its occupancy holds), kept by the
    replica serving it so that the broker can be given all of it again after refusing a change."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], PresenceChange] = {}
        self.holds: set[tuple[str, str]] = set()
        self.dirty = False
        self.refused = False  # some entries were over their topic's cap: tried again with each report

    def update(self, changes: Sequence[PresenceChange], holds: Sequence[tuple[str, str]],
               releases: Sequence[tuple[str, str]], reset: bool) -> None:
        if reset:
            self.entries.clear()
            self.holds.clear()
        for change in changes:
            key = (change.topic, change.client.client_id)
            if change.leave:
                self.entries.pop(key, None)
            else:
                self.entries[key] = change
        self.holds.update(holds)
        self.holds.difference_update(releases)

    def changes(self) -> list[PresenceChange]:
        return list(self.entries.values())


class Roster:
    def __init__(self, broker: Broker, rules: PresenceRules, *, ttl: float = 10.0, occupancy_topic: str = "",
                 address: str = "", figures: Callable[[], tuple[int, int]] = lambda: (0, 0)) -> None:
        self.rules = rules
        self.ttl = ttl
        self.report_interval = ttl / 3  # edges report (beat) this often: two reports may be lost
        self.sweep_interval = max(0.1, min(1.0, ttl / 4))
        self.occupancy_topic = occupancy_topic
        self.node_id = f"push-{os.urandom(4).hex()}"
        self._store = broker.presence
        self._broker = broker
        self._address = address
        self._figures = figures  # (edge streams, topics routed) of this replica
        self._started_ms = int(time.time() * 1000)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_forever(), name="presence-sweep")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def on_edge_request(self, mirror: EdgeMirror, edge: str, *, first: bool, report: bytes | None,
                              presence: Sequence[PresenceChange], add_topics: Sequence[str] = (),
                              remove_topics: Sequence[str] = (), add_users: Sequence[str] = (),
                              remove_users: Sequence[str] = ()) -> None:
        """One request of an edge's stream (`first`: its snapshot, the edge's whole state). `mirror`
        is what this stream has declared so far: when the broker refuses (Redis away), the stream goes
        on and the next request that gets through brings the broker the edge's whole state again."""
        changes = [c for c in presence if self.rules.has_presence(c.topic)]
        holds = [*(("topic", t) for t in add_topics if t != self.occupancy_topic), *(("user", u) for u in add_users)]
        releases = [*(("topic", t) for t in remove_topics), *(("user", u) for u in remove_users)]
        if not self.occupancy_topic:
            holds, releases = [], []
        mirror.update(changes, holds, releases, reset=first)
        try:
            if report is not None and await self._store.beat(edge, self.ttl, report) and not first:
                # The store did not know it alive: swept while it lived (its reports late past the TTL),
                # or lost (a Redis restarted empty, whose refusal another caller took): all of it again.
                mirror.dirty = True
            if report is not None and mirror.refused:
                # Entries refused at a topic's cap get in once there is room (e.g. a dead edge's entries
                # swept): nothing else would give them again.
                mirror.dirty = True
            snapshot = first or mirror.dirty
            if snapshot:
                applied = await self._store.apply(edge, mirror.changes(), snapshot=True)
                occupancy = await self._store.occupancy(edge, list(mirror.holds), [], snapshot=True)
                mirror.dirty = False
            else:
                applied = await self._store.apply(edge, changes)
                occupancy = await self._store.occupancy(edge, holds, releases)
        except BrokerUnavailable as exc:
            if not mirror.dirty:
                log.warning("edge %s: presence not recorded, again once the broker answers: %s", edge, exc)
            mirror.dirty = True
            return
        if applied.refused and not mirror.refused:
            log.warning("edge %s: %d presence entries refused (topic at PUSH_PRESENCE_MAX_CLIENTS); tried again"
                        " with its reports", edge, applied.refused)
        # A snapshot tells whether any is still out; a change, only of its own.
        mirror.refused = bool(applied.refused) or (mirror.refused and not snapshot)
        await self._tell_and_announce(edge, applied.events, occupancy)

    async def _tell_and_announce(self, edge: str, events: Sequence[PresenceEvent], changes: Sequence[Occupancy]) -> None:
        """The events of a change already recorded. One the broker refuses is lost (said in the log):
        raised, it ended the edge's stream, which lost them just the same (its state given again is all
        repeats) and interrupted every delivery to the edge's clients besides."""
        for step, items in ((self._tell, events), (self._announce, changes)):
            try:
                await step(items)  # type: ignore[operator]
            except BrokerUnavailable as exc:
                log.warning("edge %s: presence events not told (the broker refused): %s", edge, exc)

    async def _tell(self, events: Sequence[PresenceEvent]) -> None:
        for event in events:
            if not self.rules.has_join_leave(event.topic):
                continue
            now_ms = int(time.time() * 1000)
            type_ = "join" if event.join else "leave"
            frame = encode_envelope(type_=type_, id_=f"{type_}_{uuid.uuid4().hex[:16]}", timestamp_ms=now_ms,
                                    data=orjson.dumps(event.client.public()), topic=event.topic)
            await self._broker.signal(Publication(topic=event.topic, client_id="", id="", timestamp_ms=now_ms,
                                                  frame=frame, kind=JOIN_LEAVE))

    async def _announce(self, changes: Sequence[Occupancy]) -> None:
        if not self.occupancy_topic:
            return
        for change in changes:
            state = {"topic": ("occupied", "vacated"), "user": ("online", "offline")}[change.kind]
            data = {"kind": change.kind, "key": change.key, "state": state[0] if change.occupied else state[1]}
            await self._broker.publish(make_publication(
                topic=self.occupancy_topic, type_="occupancy", data=orjson.dumps(data), id_="", client_id="",
                retain=False, now_ms=int(time.time() * 1000), max_data_bytes=1 << 20))

    def report(self) -> bytes:
        streams, topics = self._figures()
        return orjson.dumps({"kind": "push", "address": self._address, "version": VERSION,
                             "started_ms": self._started_ms, "connections": streams, "subscriptions": topics})

    async def sweep_once(self) -> None:
        await self._store.beat(self.node_id, self.ttl, self.report())
        events, changes = await self._store.sweep()
        if events or changes:
            log.info("swept edges that stopped reporting: %d leaves, %d occupancy changes", len(events), len(changes))
        await self._tell_and_announce("(swept)", events, changes)

    async def _sweep_forever(self) -> None:
        failing = False
        while True:
            try:
                await self.sweep_once()
                failing = False
            except BrokerUnavailable as exc:
                if not failing:  # once per outage
                    log.warning("presence sweeps skipped while the broker is away: %s", exc)
                failing = True
            except Exception:
                log.exception("presence sweep failed")
            await asyncio.sleep(self.sweep_interval)
