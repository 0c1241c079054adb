"""redis-server restarted (its data lost) mid-stream: refused publishes are retried by the producer, and
clients end with everything or told `recovered: false`; nothing silently missing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pushclient import PushClient
from pushclient.client import outgoing
from tests.support.processes import System
from tests.support.redis_server import RedisServer
from tests.support.wsclient import WsClient, unpack

HISTORY = '[{"pattern": "r:*", "size": 10000, "ttl": 600}, {"pattern": "*", "size": 1000, "ttl": 300}]'
TOTAL = 2000


async def test_redis_restart_mid_stream(tmp_path: Path, caplog):
    redis = RedisServer(tmp_path)
    redis.start()
    system = System(tmp_path / "sys", push_env={"PUSH_BROKER_URL": redis.url, "PUSH_HISTORY_RULES": HISTORY})
    (tmp_path / "sys").mkdir()
    client = None
    try:
        await system.start()
        client = await WsClient.connect(system.ws_url, topics="r:stream")
        seen: list[dict] = []

        async def read() -> None:
            while True:
                seen.extend(unpack([await client.recv(60)]))

        reader = asyncio.create_task(read())
        async with PushClient(system.push_address) as push:
            publisher = push.stream_publisher(idempotent=True)
            publisher.start()
            for n in range(TOTAL):
                publisher.submit(outgoing("r:stream", "tick", {"n": n}, id=f"r{n}"))
                if n % 100 == 99:
                    await asyncio.sleep(0.03)
                if n == 800:
                    redis.stop()  # data lost: it keeps nothing on disk
                    await asyncio.sleep(1.0)
                    redis.start()
            await asyncio.wait_for(publisher.flush(), 60)
            await publisher.close()
            assert (publisher.rejected, publisher.dropped) == (0, 0)
        assert "refused for now, retrying" in caplog.text  # UNAVAILABLE answers were retried
        for _ in range(150):  # until everything arrived, or the clients were told
            if len({m.get("id") for m in seen}) >= TOTAL or any(m["type"] == "recovery" for m in seen):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # what the edge sends along with the notice
        reader.cancel()
        ids = {m["id"] for m in seen if m["type"] == "tick"}
        notices = [m for m in seen if m["type"] == "recovery"]
        missing = {f"r{n}" for n in range(TOTAL)} - ids
        assert not missing or notices, f"{len(missing)} missing without a word"
        assert all(n["data"]["recovered"] is False for n in notices)
        assert notices, "the new epoch after Redis lost its data is announced"
    finally:
        if client is not None:
            await client.close()
        system.stop()
        redis.stop()
