"""The presence store's contract (broker/presence.py) on both engines (Redis: a real redis-server, the
Lua scripts): events once per change, caps, snapshots, liveness and sweeps, nothing left behind."""

from __future__ import annotations

import asyncio

from push_service.core.presence import ClientEntry, Occupancy, PresenceChange, PresenceEvent
from tests.push_service import test_broker_contract as contract
from tests.push_service.test_broker_contract import Engine

# The contract suite's fixtures: every engine (memory, Redis, Redis Cluster) on real redis-servers.
redis_server = contract.redis_server
redis_cluster = contract.redis_cluster
engine = contract.engine


def entry(client_id: str, user: str = "u", joined: int = 1) -> ClientEntry:
    return ClientEntry(client_id, user, b'{"n":1}', joined)


def join(topic: str, e: ClientEntry) -> PresenceChange:
    return PresenceChange(topic, e)


def leave(topic: str, e: ClientEntry) -> PresenceChange:
    return PresenceChange(topic, e, leave=True)


async def test_joins_and_leaves_are_events_once_and_reads_list_live_edges(engine: Engine):
    store = engine.broker.presence
    await store.beat("e1", 30, b'{"kind":"edge"}')
    await store.beat("e2", 30, b"{}")
    a, b, a2 = entry("a", joined=1), entry("b", "v", 2), entry("a", joined=3)
    assert (await store.apply("e1", [join("t", a), join("t", b)])).events == [
        PresenceEvent("t", True, a), PresenceEvent("t", True, b)]
    assert (await store.apply("e1", [join("t", a)])).events == []
    assert (await store.apply("e2", [join("t", a2)])).events == []  # the same client id elsewhere
    assert await store.clients("t") == [a, b]
    assert (await store.apply("e1", [leave("t", a)])).events == []  # still on e2
    assert (await store.apply("e2", [leave("t", a2)])).events == [PresenceEvent("t", False, a2)]
    assert (await store.apply("e1", [leave("t", b)])).events == [PresenceEvent("t", False, b)]
    assert await store.clients("t") == []
    assert (await store.reports())["e1"] == b'{"kind":"edge"}'


async def test_a_topic_is_capped(engine: Engine):
    store = engine.broker.presence
    store_cap = 3
    if engine.kind == "memory":
        store.table.max_clients = store_cap
    else:
        store._max_clients = store_cap
    await store.beat("e1", 30, b"{}")
    applied = await store.apply("e1", [join("cap", entry(f"c{i}")) for i in range(5)])
    assert [e.client.client_id for e in applied.events] == ["c0", "c1", "c2"] and applied.refused == 2
    assert [c.client_id for c in await store.clients("cap")] == ["c0", "c1", "c2"]


async def test_a_snapshot_replaces_an_edges_entries_and_holds(engine: Engine):
    store = engine.broker.presence
    await store.beat("e1", 30, b"{}")
    a, b, c = entry("a"), entry("b"), entry("c")
    await store.apply("e1", [join("s", a), join("s", b)])
    assert await store.occupancy("e1", [("topic", "s"), ("user", "u")], []) == [
        Occupancy("topic", "s", True), Occupancy("user", "u", True)]
    applied = await store.apply("e1", [join("s", b), join("s", c)], snapshot=True)  # `a` left meanwhile
    assert applied.events == [PresenceEvent("s", False, a), PresenceEvent("s", True, c)]
    assert await store.occupancy("e1", [("topic", "s")], [], snapshot=True) == [Occupancy("user", "u", False)]
    assert await store.occupancy("e1", [], [("topic", "s")]) == [Occupancy("topic", "s", False)]


async def test_a_silent_edge_is_unseen_then_swept_once_with_its_leaves_and_holds(engine: Engine):
    store = engine.broker.presence
    await store.beat("dies", 0.3, b"{}")
    await store.beat("lives", 30, b"{}")
    x, y = entry("x"), entry("y")
    await store.apply("dies", [join("k", x)])
    await store.apply("lives", [join("k", y)])
    await store.occupancy("dies", [("user", "gone")], [])
    await asyncio.sleep(0.5)
    assert await store.clients("k") == [y]
    assert set(await store.reports()) == {"lives"}
    events, changes = await store.sweep()
    assert events == [PresenceEvent("k", False, x)] and changes == [Occupancy("user", "gone", False)]
    assert await store.sweep() == ([], [])
    if engine.kind == "redis":  # nothing of the dead edge stays in Redis (a cluster's keys: on its nodes)
        prefix = f"{{{engine.broker.keys.prefix}:pn}}:"
        keys = sorted(k.decode() for k in await engine.broker._redis.keys(prefix.replace("{", "\\{") + "*"))
        assert keys == sorted(prefix + k for k in ("alive", "r:lives", "h:k:lives", "te:k", "et:lives"))
    await store.apply("lives", [leave("k", y)])
    if engine.kind == "memory":
        assert engine.broker.presence.table.size()["entries"] == 0


async def test_a_beat_tells_whether_the_store_knew_the_edge_alive(engine: Engine):
    """An edge the store did not know alive (swept while it lived, or lost with Redis's data) has
    nothing of what it declared recorded: its stream gives all of it again (push_service/presence.py)."""
    store = engine.broker.presence
    assert [await store.beat("e", 0.3, b"{}"), await store.beat("e", 0.3, b"{}")] == [True, False]
    await asyncio.sleep(0.5)
    await store.sweep()
    assert [await store.beat("e", 30, b"{}"), await store.beat("e", 30, b"{}")] == [True, False]
    await engine.lose_everything()
    assert await engine.broker.presence.beat("e", 30, b"{}") is True


async def test_every_key_an_edge_keeps_in_redis_expires_if_nobody_beats(engine: Engine):
    """With every replica away past the keys' safety TTL, a dead edge's occupancy sets stayed for ever
    (and a topic it held was never told occupied or vacated again)."""
    if engine.kind != "redis":  # (a cluster runs the same scripts; its keys are on its nodes)
        return
    store = engine.broker.presence
    await store.beat("e", 30, b"{}")
    await store.apply("e", [join("k", entry("x"))])
    await store.occupancy("e", [("user", "u"), ("topic", "k")], [])
    await store.beat("e", 30, b"{}")
    prefix = f"{{{engine.broker.keys.prefix}:pn}}:"
    keys = sorted(k.decode() for k in await engine.broker._redis.keys(prefix.replace("{", "\\{") + "*"))
    assert keys == sorted(prefix + k for k in ("alive", "r:e", "h:k:e", "te:k", "et:e", "eo:e", "o:user:u", "o:topic:k"))
    for key in keys:
        assert 0 < await engine.broker._redis.pttl(key) <= 3 * 30_000 + 60_000, key
