"""No sticky sessions: a stream on edge A, every `POST /emulation` to edge B, and the client still
subscribes, pings and sends messages; answers come on A's stream. Over one push service with two
edges, and over two push replicas sharing Redis (B's replica -> Redis -> A's replica -> A)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pushclient import PushClient
from pushclient.streams import StreamConnection, post_json
from tests.conftest import start_system
from tests.support.processes import System, another_edge
from tests.support.redis_server import RedisServer
from tests.support.timing import timeout
from tests.support.tokens import token
from tests.support.wsclient import StreamClient


@dataclass
class Pair:
    a: str  # http://host:port of the edge holding the streams
    b: str  # the edge every POST goes to
    push_address: str  # where the test publishes


@pytest.fixture(scope="module", params=["one-push-two-edges", "two-push-replicas-on-redis"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    if request.param == "one-push-two-edges":
        system = start_system(tmp_path_factory, "emulation")
        try:
            with another_edge(system, "edge-b") as address:
                yield Pair(system.http_url, f"http://{address}", system.push_address)
        finally:
            system.stop()
        return
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    redis.start()
    env = {"PUSH_BROKER_URL": redis.url}
    first: System = start_system(tmp_path_factory, "emulation-a", push_env=env)
    second: System = start_system(tmp_path_factory, "emulation-b", push_env=env)
    try:
        yield Pair(first.http_url, second.http_url, first.push_address)
    finally:
        first.stop()
        second.stop()
        redis.stop()


@pytest.mark.parametrize("transport", ["sse", "http_stream"])
async def test_every_post_to_the_other_edge_still_reaches_the_session(pair: Pair, transport: str):
    path = "/sse" if transport == "sse" else "/stream"
    client = await StreamClient.open(pair.a, path, transport, post_url=pair.b, token=token("ann"))
    recipient = await StreamClient.open(pair.a, path, transport, post_url=pair.b, topics="user:bob",
                                        token=token("bob"))
    assert client.stream.post_url == pair.b + "/emulation"
    try:
        pong = await client.request({"type": "ping", "id": f"p-{transport}"}, wait=10)
        assert (pong["type"], pong["id"]) == ("pong", f"p-{transport}")

        ack = await client.request({"type": "subscribe", "id": "s1", "data": {"topics": [f"far:{transport}"]}}, wait=10)
        assert ack["data"] == {"type": "subscribe", "topics": [f"far:{transport}"]}
        async with PushClient(pair.push_address) as push:
            reply = await push.publish(f"far:{transport}", "t", {"n": 1}, id=f"far-{transport}")
        message = await client.recv(10)
        assert (message["id"], message["offset"], message["epoch"]) == (f"far-{transport}", reply.offset, reply.epoch)

        sent = await client.request({"type": "send_message", "id": "m1",
                                     "data": {"recipient": "bob", "content": f"hi over {transport}"}}, wait=10)
        assert sent["type"] == "ack" and sent["data"]["topic"] == "user:bob"
        note = await recipient.recv(10)
        assert (note["type"], note["data"]["message"], note["data"]["from_user"]) == (
            "notification", f"hi over {transport}", "ann")

        bad = await client.request({"type": "subscribe", "id": "s2", "data": {"topics": ["bad topic"]}}, wait=10)
        assert bad["error"]["code"] == "INVALID_TOPIC"
        gone = await client.request({"type": "unsubscribe", "id": "u1", "data": {"topics": [f"far:{transport}"]}},
                                    wait=10)
        assert gone["data"] == {"type": "unsubscribe", "topics": [f"far:{transport}"]}

        # Several frames in one POST are read in order, as on a WebSocket.
        status, answer = await client.stream.send_frames([{"type": "ping", "id": f"b{i}"} for i in range(5)])
        assert (status, answer) == (202, {"accepted": 5})
        assert [(await client.recv(10))["id"] for _ in range(5)] == [f"b{i}" for i in range(5)]
    finally:
        await client.close()
        await recipient.close()


async def test_unknown_and_malformed_sessions_get_a_clear_http_error(pair: Pair):
    stream = await StreamConnection.open(pair.a, "/stream")
    assert (await stream.recv_raw() or b"").startswith(b'{"type":"connected"')
    session = stream.session
    assert session is not None
    await stream.close()
    ping = [{"type": "ping"}]
    # Its session is over: on its own edge (known mark), and from the other edge (the push service
    # reaches A, whose session has ended: frames dropped there; no edge holds a made-up mark).
    for _ in range(int(timeout(50))):
        status, answer = await post_json(pair.a + "/emulation", {"session": session, "frames": ping})
        if status == 404:
            break
        await asyncio.sleep(0.1)  # until A has seen the stream end
    assert (status, answer) == (404, {"error": "unknown session (ended, or never opened)"})
    unknown_edge = "~" + "ab" * 6 + "." + "0" * 32
    for url in (pair.a, pair.b):
        assert await post_json(url + "/emulation", {"session": unknown_edge, "frames": ping}) == (
            404, {"error": "unknown session (no edge holds it)"})
        assert await post_json(url + "/emulation", {"session": "nope", "frames": ping}) == (
            400, {"error": "`session` must be the session id of `connected.data.session`"})
        assert await post_json(url + "/emulation", {"session": session, "frames": []}) == (
            400, {"error": "`frames` must be a non-empty list of client frames"})
