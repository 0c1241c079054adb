"""Sharded pub/sub on a Redis Cluster: a replica's subscriptions, one `SSUBSCRIBE` connection per master
serving some of them (a `ShardLink`), following the slot map.

- `subscribe` returns once every channel is confirmed by the master serving its slot (one SSUBSCRIBE per
  slot and link: Redis refuses a command whose channels are in several slots).
- A link that breaks (its master died, the network) reconnects by itself, and tells the maintainer,
  which reads the slot map again: when a replica took over, the channels move to a link to it. A
  master that loses a slot (moved, or it became a replica) ends our subscriptions there with an
  `sunsubscribe` we did not ask for: the maintainer moves those channels too.
- The map is also read every 5 s: a master that stopped answering breaks no connection, but its
  replica may have been promoted meanwhile.
- Whenever a channel's subscription was interrupted and holds again, publications may have passed us
  by: `on_reconnect` is called (the hub makes the edges check their positions against history).
- Each link reads its own connection (redis-py's plain connection, no hidden retries or reconnects:
  every interruption is seen).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError
from redis.retry import Retry

from common.backoff import Backoff
from common.reconnect import reconnect_forever

from .base import EngineEvents, PublicationHandler, ReconnectHandler

log = logging.getLogger("push_service.broker.redis")

CONFIRM_TIMEOUT = 2.0
MAP_REFRESH_MIN_INTERVAL = 0.2  # seconds between two readings of the slot map
MAP_CHECK_INTERVAL = 5.0  # seconds between two readings when nothing suggests a change


class ShardLink:
    """One master's sharded pub/sub connection and the channels of ours it serves."""

    def __init__(self, owner: ShardedSubscriber, name: str, host: str, port: int) -> None:
        self.owner, self.name, self.host, self.port = owner, name, host, port
        self.channels: dict[bytes, int] = {}  # channel → slot, wanted here
        self._connection: Connection | None = None
        self._ready = asyncio.Event()  # connected, everything wanted at connect time confirmed
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._dropping: set[bytes] = set()  # sunsubscribes we asked for
        self._was_up = False
        self._task = asyncio.create_task(
            reconnect_forever(self._attempt, Backoff(initial=0.1, maximum=1.0), log, f"redis shard {name} subscriber",
                              expected=(RedisError, OSError)), name=f"redis-shard-{name}")

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def add(self, channels: dict[bytes, int]) -> bool:
        """Subscribe these here; True once confirmed (False: deferred to the link's reconnect)."""
        self.channels.update(channels)
        self._dropping.difference_update(channels)
        try:
            await asyncio.wait_for(self._ready.wait(), CONFIRM_TIMEOUT)
            loop = asyncio.get_running_loop()
            waits = [self._confirmations.setdefault(c, loop.create_future()) for c in channels]
            await self._ssubscribe(list(channels))
            await asyncio.wait_for(asyncio.gather(*waits), CONFIRM_TIMEOUT)
            return True
        except (TimeoutError, RedisError, OSError) as exc:
            self.owner.events.failed("subscribe")
            log.warning("shard subscription on %s (%d channels) deferred to its reconnect: %r", self.name,
                        len(channels), exc)
            return False
        finally:  # as the single-Redis subscriber does: an unconfirmed channel dropped later leaves nothing
            for channel in channels:
                self._confirmations.pop(channel, None)

    async def drop(self, channels: list[bytes]) -> None:
        dropped = [c for c in channels if self.channels.pop(c, None) is not None]
        if dropped and self._connection is not None and self._ready.is_set():
            self._dropping.update(dropped)
            with contextlib.suppress(RedisError, OSError):  # broken: the reconnect leaves them out
                await self._by_slot("SUNSUBSCRIBE", dropped)

    async def _ssubscribe(self, channels: list[bytes]) -> None:
        await self._by_slot("SSUBSCRIBE", channels)

    async def _by_slot(self, command: str, channels: list[bytes]) -> None:
        """One command per slot, written at once."""
        connection = self._connection
        if connection is None:
            raise ConnectionError("not connected")
        by_slot: dict[int, list[bytes]] = {}
        for channel in channels:
            by_slot.setdefault(key_slot(channel), []).append(channel)
        await connection.send_packed_command(
            connection.pack_commands([(command, *group) for group in by_slot.values()]), check_health=False)

    async def _attempt(self, up: Callable[[], None]) -> None:
        connection = Connection(host=self.host, port=self.port, retry=Retry(NoBackoff(), 0), socket_keepalive=True, protocol=2,
                                **{**self.owner.node_options, "socket_timeout": None})
        try:
            await connection.connect()
            self._connection = connection
            waiting = set(self.channels)
            if waiting:
                await self._ssubscribe(list(waiting))
            else:
                self._up(up)
            while True:
                # An error reply (MOVED: a slot is elsewhere now) ends the attempt too: the slot map is
                # read again and the next attempt subscribes what is still ours here.
                reply = await connection.read_response()
                if isinstance(reply, list) and len(reply) == 3:
                    self._handle(reply, waiting, up)
        except (RedisError, OSError):
            self.owner.events.failed("subscriber")
            self.owner.disturbed()  # perhaps a replica takes over: read the slot map again
            raise
        finally:
            self._connection = None
            self._ready.clear()
            with contextlib.suppress(Exception):
                await connection.disconnect()

    def _handle(self, reply: list[Any], waiting: set[bytes], up: Callable[[], None]) -> None:
        kind, channel, data = reply
        if kind == b"smessage":
            self.owner.deliver(channel, data)
        elif kind == b"ssubscribe":
            confirmed = self._confirmations.pop(channel, None)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            if channel in waiting:
                waiting.discard(channel)
                if not waiting:
                    self._up(up)
        elif kind == b"sunsubscribe":
            if channel in self._dropping:
                self._dropping.discard(channel)
            elif self.channels.pop(channel, None) is not None:  # not ours to end: its slot left this master
                log.warning("shard subscriber on %s: %s ended by the server (its slot moved)", self.name, channel)
                self.owner.lost(channel, self)

    def _up(self, up: Callable[[], None]) -> None:
        self._ready.set()
        up()
        log.info("redis shard subscriber on %s up (%d channels)", self.name, len(self.channels))
        if self._was_up:
            self.owner.resumed()
        self._was_up = True


class ShardedSubscriber:
    def __init__(self, cluster: RedisCluster, node_options: dict[str, Any], events: EngineEvents) -> None:
        self.cluster, self.node_options, self.events = cluster, node_options, events
        self._wanted: dict[bytes, int] = {}  # channel → slot
        self._links: dict[str, ShardLink] = {}
        self._holder: dict[bytes, ShardLink] = {}  # which link a channel is subscribed on
        self._handler: PublicationHandler | None = None
        self._on_reconnect: ReconnectHandler | None = None
        self._on_map: Callable[[set[str]], Awaitable[None]] | None = None
        self._dirty = asyncio.Event()
        self._maintainer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # subscribe, unsubscribe and moves, one at a time

    async def start(self, handler: PublicationHandler, on_reconnect: ReconnectHandler | None,
                    on_map: Callable[[set[str]], Awaitable[None]]) -> None:
        self._handler, self._on_reconnect, self._on_map = handler, on_reconnect, on_map
        try:
            await asyncio.wait_for(self.cluster.initialize(), CONFIRM_TIMEOUT * 2)
        except Exception as exc:  # the cluster away at start (a cluster client error is no RedisError): retried
            log.warning("redis cluster unreachable at start: %r", exc)
            self._dirty.set()
        self._maintainer = asyncio.create_task(self._maintain(), name="redis-cluster-map")

    async def close(self) -> None:
        if self._maintainer is not None:
            self._maintainer.cancel()
            await asyncio.gather(self._maintainer, return_exceptions=True)
        for link in self._links.values():
            await link.close()

    def deliver(self, channel: bytes, payload: bytes) -> None:
        from .redis import decode_payload

        if self._handler is None or channel not in self._wanted:
            return
        try:
            self._handler(decode_payload(payload))
        except Exception:
            log.exception("bad message on %s", channel)

    def disturbed(self) -> None:
        """Something suggests the slot map changed: the maintainer reads it again."""
        self._dirty.set()

    def lost(self, channel: bytes, link: ShardLink) -> None:
        """The server ended a subscription we hold: placed again by the maintainer."""
        if self._holder.get(channel) is link:
            del self._holder[channel]
        self._dirty.set()

    def resumed(self) -> None:
        """Subscriptions hold again after an interruption: publications may have been missed."""
        self.events.reconnected()
        if self._on_reconnect is not None:
            self._on_reconnect()

    async def refresh_now(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.cluster.nodes_manager.initialize()
        self._dirty.set()

    async def subscribe(self, channels: dict[bytes, int]) -> None:
        if not channels:
            return
        async with self._lock:
            self._wanted.update(channels)
            await self._place(list(channels))

    async def unsubscribe(self, channels: list[bytes]) -> None:
        if not channels:
            return
        async with self._lock:
            by_link: dict[ShardLink, list[bytes]] = {}
            for channel in channels:
                self._wanted.pop(channel, None)
                link = self._holder.pop(channel, None)
                if link is not None:
                    by_link.setdefault(link, []).append(channel)
            for link, dropped in by_link.items():
                await link.drop(dropped)

    async def _place(self, channels: list[bytes]) -> bool:
        """Subscribe each channel on the link to the master serving its slot now (moving it from the
        link it was on). True when every one is confirmed."""
        moves: dict[ShardLink, dict[bytes, int]] = {}
        for channel in channels:
            try:
                node = self.cluster.nodes_manager.get_node_from_slot(self._wanted[channel])
            except Exception:  # no slot map, or the slot not covered now: placed when the map says
                self._dirty.set()
                continue
            link = self._links.get(node.name) or self._open(node.name, node.host, node.port)
            previous = self._holder.get(channel)
            if previous is not link:
                if previous is not None:
                    await previous.drop([channel])
                self._holder[channel] = link
                moves.setdefault(link, {})[channel] = self._wanted[channel]
        results = await asyncio.gather(*(link.add(group) for link, group in moves.items()))
        return all(results) and len(self._holder) >= len(self._wanted)

    def _open(self, name: str, host: str, port: int) -> ShardLink:
        link = self._links[name] = ShardLink(self, name, host, port)
        return link

    async def _maintain(self) -> None:
        """Read the slot map again when told, move channels whose slot has another master now, close
        links left with nothing; tell the hub when moved subscriptions hold again."""
        backoff = Backoff(initial=MAP_REFRESH_MIN_INTERVAL, maximum=2.0)
        while True:
            # Also every few seconds: a master that stopped answering (paused, cut off) breaks no
            # connection, yet its replica may have taken over meanwhile.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), MAP_CHECK_INTERVAL)
            self._dirty.clear()
            try:
                await self.cluster.nodes_manager.initialize()
                async with self._lock:
                    moved = [c for c in self._wanted if self._holder.get(c) is None
                             or self._holder[c].name != self._owner_name(self._wanted[c])]
                    placed = await self._place(moved) if moved else True
                    await self._close_idle()
                masters = {n.name for n in self.cluster.get_primaries()}
                if self._on_map is not None:
                    await self._on_map(masters)
                if moved and placed:
                    log.info("%d shard channels moved to their slots' new masters", len(moved))
                    self.resumed()
                if not placed:
                    self._dirty.set()
                backoff.reset()
            except Exception as exc:  # (a cluster client error is no RedisError) the maintainer must go on
                log.warning("reading the redis cluster's slot map failed: %r", exc)
                self._dirty.set()
            await asyncio.sleep(backoff.next_delay())

    def _owner_name(self, slot: int) -> str | None:
        try:
            return self.cluster.nodes_manager.get_node_from_slot(slot).name
        except Exception:
            return None

    async def _close_idle(self) -> None:
        for name, link in list(self._links.items()):
            if not link.channels:
                del self._links[name]
                await link.close()
