"""The push service on the Redis Cluster engine, with an edge and a subscriber: the master of the topic's
shard is killed mid-stream (its replica takes over). The idempotent stream publisher retries what was
refused; the subscriber is told of the new master's epoch (`recovered: false`) and has every message after
all, none twice on either side of the notice, each side in order."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from push_service.broker.redis_cluster import ClusterKeys
from pushclient import PushClient
from pushclient.client import outgoing
from tests.support.processes import System
from tests.support.redis_cluster import RedisCluster
from tests.support.timing import timeout
from tests.support.wsclient import WsClient, unpack

HISTORY = '[{"pattern": "c:*", "size": 10000, "ttl": 600}, {"pattern": "*", "size": 1000, "ttl": 300}]'
TOTAL = 2000
TOPIC = "c:stream"


def segments(seen: list[dict]) -> list[list[int]]:
    """The message numbers delivered, split at each `recovered: false` notice."""
    parts: list[list[int]] = [[]]
    for message in seen:
        if message["type"] == "recovery":
            parts.append([])
        elif message["type"] == "tick":
            parts[-1].append(message["data"]["n"])
    return parts


def assert_everything_and_told(seen: list[dict]) -> None:
    """Every message arrives (after the notice if not before), in order and once within each segment, and
    the new master's epoch is announced with `recovered: false`: both, not either."""
    parts = segments(seen)
    notices = [m for m in seen if m["type"] == "recovery"]
    assert all(n["data"]["recovered"] is False for n in notices)
    assert set().union(*parts) == set(range(TOTAL)), "every message, at least after the notice"
    for part in parts:  # in order, none twice, within what came before and after each notice
        assert part == sorted(set(part))
    assert notices, "the new master's epoch is announced (what the dead one had not replicated may be lost)"


async def test_a_shards_master_killed_mid_stream_clients_get_everything_and_are_told_of_the_new_epoch(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with RedisCluster(tmp_path / "cluster") as cluster:
        await _kill_a_master_mid_stream(cluster, tmp_path, caplog)


async def _kill_a_master_mid_stream(cluster: RedisCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    system = System(tmp_path / "sys", push_env={"PUSH_BROKER_URL": cluster.url, "PUSH_HISTORY_RULES": HISTORY})
    (tmp_path / "sys").mkdir()
    client = None
    try:
        await system.start()
        client = await WsClient.connect(system.ws_url, topics=TOPIC)
        seen: list[dict] = []

        async def read() -> None:
            while True:
                seen.extend(unpack([await client.recv(60)]))

        reader = asyncio.create_task(read())
        master = cluster.node_for_slot(ClusterKeys("push").slot(f"t:{TOPIC}"))
        async with PushClient(system.push_address) as push:
            publisher = push.stream_publisher(idempotent=True)
            publisher.start()
            for n in range(TOTAL):
                publisher.submit(outgoing(TOPIC, "tick", {"n": n}, id=f"r{n}"))
                if n % 100 == 99:
                    await asyncio.sleep(0.03)
                if n == 800:
                    master.stop()  # kill -9: its replica takes over within a few seconds
            await asyncio.wait_for(publisher.flush(), timeout(60))
            await publisher.close()
            assert (publisher.rejected, publisher.dropped) == (0, 0)
        assert cluster.node_for_slot(ClusterKeys("push").slot(f"t:{TOPIC}")) is not master  # failed over
        assert "refused for now, retrying" in caplog.text  # UNAVAILABLE answers were retried
        deadline = time.monotonic() + timeout(15)
        while time.monotonic() < deadline:  # until everything arrived (the checks below say what did not)
            parts = segments(seen)
            if len(set().union(*parts)) >= TOTAL and parts[-1] and parts[-1][-1] == TOTAL - 1:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # nothing more comes (a repeat would show in the checks below)
        reader.cancel()
        assert_everything_and_told(seen)
    finally:
        if client is not None:
            await client.close()
        system.stop()
