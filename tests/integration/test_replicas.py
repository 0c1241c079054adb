"""Two push replicas sharing topics through one real redis-server, each with its own edge."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pushclient import PushClient
from tests.conftest import start_system
from tests.support.processes import System
from tests.support.redis_server import RedisServer
from tests.support.wsclient import WsClient, unpack


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, System, RedisServer]]:
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    redis.start()
    env = {"PUSH_BROKER_URL": redis.url}
    a = start_system(tmp_path_factory, "replica-a", push_env=env)
    b = start_system(tmp_path_factory, "replica-b", push_env=env)
    yield a, b, redis
    a.stop()
    b.stop()
    redis.stop()


@pytest.mark.parametrize("direction", ["a-to-b", "b-to-a"])
async def test_published_on_one_replica_reaches_clients_of_the_other(replicas, direction: str):
    a, b, _ = replicas
    publisher_side, client_side = (a, b) if direction == "a-to-b" else (b, a)
    client = await WsClient.connect(client_side.ws_url, topics="x:news", client_id=f"far-{direction}")
    try:
        async with PushClient(publisher_side.push_address) as push:
            topic_reply = await push.publish("x:news", "headline", {"n": 1}, id=f"n-{direction}")
            personal_reply = await push.publish("", "note", {"hi": True}, id=f"p-{direction}",
                                                client_id=f"far-{direction}")
        # Two frames, or one batch of both: the other replica may take them from Redis in one read, and
        # its edge then writes them to this client at once.
        received = unpack(await client.frames_until(2))
        assert len(received) == 2
        message, personal = received
        assert (message["id"], message["topic"], message["offset"], message["epoch"]) == (
            f"n-{direction}", "x:news", topic_reply.offset, topic_reply.epoch)
        assert (personal["id"], personal["data"]) == (f"p-{direction}", {"hi": True})
        assert personal_reply.offset == 0
    finally:
        await client.close()


async def test_personal_message_to_an_assigned_client_id_crosses_replicas(replicas):
    a, b, _ = replicas
    client = await WsClient.connect(b.ws_url)  # an id assigned by b's edge, routed by its mark
    try:
        async with PushClient(a.push_address) as push:
            await push.publish("", "note", {"to": "assigned"}, id="p-assigned", client_id=client.client_id)
        personal = await client.recv()
        assert (personal["id"], personal["data"]) == ("p-assigned", {"to": "assigned"})
    finally:
        await client.close()


async def test_history_is_shared_between_replicas(replicas):
    a, b, _ = replicas
    async with PushClient(a.push_address) as push_a:
        replies = [await push_a.publish("x:shared", "t", {"n": n}, id=f"s{n}") for n in range(3)]
    client = await WsClient.connect(b.ws_url)
    try:
        ack = await client.request({"type": "subscribe", "id": "r", "data": {
            "topics": ["x:shared"], "since": {"x:shared": {"offset": replies[0].offset, "epoch": replies[0].epoch}}}})
        assert ack["data"]["recovery"]["x:shared"]["recovered"] is True
        assert [m["id"] for m in await client.messages(2)] == ["s1", "s2"]
    finally:
        await client.close()
