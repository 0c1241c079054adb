"""redis-server restarted (its data lost) mid-stream: refused publishes are retried by the producer, and
clients end with everything or told `recovered: false`; nothing silently missing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from push.v1 import push_service_pb2 as push_pb
from push.v1 import push_service_pb2_grpc as push_grpc

from pushclient import PublishError, PushClient
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


async def test_a_stream_publishes_nothing_after_a_refusal_so_the_retry_keeps_the_order(tmp_path: Path):
    """Issue 17.4: a message refused while Redis was away, then later ones already sent on the same
    stream published once it is back, put them before it. After a refusal the stream publishes
    nothing more; the publisher sends again from the refused message, in order."""
    redis = RedisServer(tmp_path)
    redis.start()
    system = System(tmp_path / "sys", push_env={"PUSH_BROKER_URL": redis.url, "PUSH_HISTORY_RULES": HISTORY})
    (tmp_path / "sys").mkdir()
    try:
        await system.start()
        channel = grpc.aio.insecure_channel(system.push_address)
        requests: asyncio.Queue[push_pb.PublishStreamRequest] = asyncio.Queue()

        async def send():  # type: ignore[no-untyped-def]
            while True:
                yield await requests.get()

        call = push_grpc.PushServiceStub(channel).PublishStream(send())
        answers = aiter(call)

        def request(sequence: int) -> push_pb.PublishStreamRequest:
            message = push_pb.OutgoingMessage(topic="r:order", type="t", data=b"{}", id=f"o{sequence}")
            return push_pb.PublishStreamRequest(sequence=sequence, messages=[message])

        await requests.put(request(1))
        assert (await anext(answers)).results[0].error_code == 0
        redis.stop()
        await requests.put(request(2))
        refused = (await anext(answers)).results[0]
        assert refused.error_code == grpc.StatusCode.UNAVAILABLE.value[0]
        redis.start()
        async with PushClient(system.push_address) as push:
            for _ in range(100):  # until this replica publishes again
                try:
                    await push.publish("r:probe", "t", {})
                    break
                except PublishError:
                    await asyncio.sleep(0.1)
        await requests.put(request(3))
        halted = (await anext(answers)).results[0]
        assert (halted.error_code, halted.error_message.endswith("(an earlier message of this stream was refused)")) == (
            grpc.StatusCode.UNAVAILABLE.value[0], True)
        call.cancel()
        await channel.close()
    finally:
        system.stop()
        redis.stop()
