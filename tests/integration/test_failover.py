"""Replica A dies mid-stream: edges and the publisher move to replica B; nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from pushclient import PushClient
from pushclient.client import outgoing
from tests.support.metrics import falls_to, reaches, scrape, value
from tests.support.processes import System
from tests.support.redis_server import RedisServer
from tests.support.timing import timeout
from tests.support.wsclient import WsClient, unpack

HISTORY = '[{"pattern": "big:*", "size": 10000, "ttl": 600}, {"pattern": "*", "size": 1000, "ttl": 300}]'


@asynccontextmanager
async def two_systems_on_redis(tmp_path: Path, a_on_b_only: bool = False) -> AsyncIterator[tuple[System, System, str]]:
    """Systems a and b on one Redis, started; each edge lists both replicas, a's first (with
    `a_on_b_only`, edge a lists b alone). Yields them with that list."""
    redis = RedisServer(tmp_path)
    redis.start()
    env = {"PUSH_BROKER_URL": redis.url, "PUSH_HISTORY_RULES": HISTORY}
    a = System(tmp_path / "a", push_env=env)
    b = System(tmp_path / "b", push_env=env)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    replicas = f"{a.push_address},{b.push_address}"
    for system in (a, b):
        system.edge.env["EDGE_PUSH_ADDRESS"] = replicas
        system.edge.env["EDGE_PUSH_RECONNECT_MAX"] = "0.3"
        # A welcome only once the replica applied the subscription (not after 3 s without its answer, on
        # a loaded machine): the tests stop a replica right after it.
        system.edge.env["EDGE_SUBSCRIBE_CONFIRM_TIMEOUT"] = "30"
    if a_on_b_only:
        a.edge.env["EDGE_PUSH_ADDRESS"] = b.push_address
    try:
        for system in (b, a) if a_on_b_only else (a, b):  # an edge is ready once its replica serves it
            await system.start()
        yield a, b, replicas
    finally:
        a.stop()
        b.stop()
        redis.stop()


async def test_replica_killed_while_5000_messages_stream_every_client_gets_all_exactly_once(tmp_path: Path):
    async with two_systems_on_redis(tmp_path) as (a, b, replicas):
        clients = [await WsClient.connect(s.ws_url, topics="big:stream") for s in (a, b) for _ in range(2)]
        try:
            received: list[list[dict]] = [[] for _ in clients]

            async def read(index: int) -> None:
                while len(received[index]) < 5000:
                    received[index].extend(unpack([await clients[index].recv(30)]))

            readers = [asyncio.create_task(read(i)) for i in range(len(clients))]
            async with PushClient(replicas) as push:
                publisher = push.stream_publisher(idempotent=True)
                publisher.start()
                for n in range(5000):
                    publisher.submit(outgoing("big:stream", "tick", {"n": n}, id=f"m{n}"))
                    if n % 100 == 99:
                        await asyncio.sleep(0.03)
                    if n == 1500:
                        a.push.kill(signal.SIGKILL)  # replica A dies mid-stream
                await asyncio.wait_for(publisher.flush(), 60)
                await publisher.close()
            await asyncio.wait_for(asyncio.gather(*readers), 60)
            for messages in received:
                assert [m["id"] for m in messages] == [f"m{n}" for n in range(5000)]
            for client in clients:
                await client.expect_silence(0.3)
        finally:
            for client in clients:
                await client.close()


@pytest.mark.parametrize("published_before", [True, False], ids=["quiet", "never-published"])
async def test_a_quiet_topic_with_history_is_recovered_when_the_edges_replica_stops_before_its_next_message(
        tmp_path: Path, published_before: bool):
    """A subscriber of a topic that is rarely published (history, but nothing since it subscribed, or
    nothing ever: a user's inbox, a job's status): its edge's replica stops, a message is published on
    the other, and the edge, moved there, fills the gap from where the push service told it the topic
    stood when it subscribed (its offset, or nothing published yet: the message is then the first of
    its epoch). Without that, it could only tell the subscriber it cannot recover."""
    async with two_systems_on_redis(tmp_path) as (a, b, _), PushClient(b.push_address) as push:
        before = await push.publish("inbox:ann", "note", {"n": 1}, id="before") if published_before else None
        client = await WsClient.connect(a.ws_url, topics="inbox:ann")
        try:
            a.push.kill(signal.SIGSTOP)  # edge a's replica: the edge gives it up after 3 s of silence
            try:
                during = await push.publish("inbox:ann", "note", {"n": 2}, id="during")
                assert during.offset == (before.offset + 1 if before else 1)
                assert before is None or during.epoch == before.epoch
                assert await client.recv(15) == {
                    "type": "note", "id": "during", "timestamp": during.timestamp_ms, "data": {"n": 2},
                    "topic": "inbox:ann", "offset": during.offset, "epoch": during.epoch}
            finally:
                a.push.kill(signal.SIGCONT)
            await client.expect_silence(0.3)
        finally:
            await client.close()


async def test_a_topic_subscribed_while_the_edge_had_no_stream_is_recovered_over_the_next_loss(tmp_path: Path):
    """A topic subscribed while the edge's stream was down rides the next stream's first request (the
    snapshot), and the edge asks where it stands then (`position_topics`). Lost again before its first
    delivery, its gap is filled from history: the subscriber gets what was published meanwhile. Without
    that position the edge could only tell it "the edge's stream was interrupted"."""
    async with two_systems_on_redis(tmp_path, a_on_b_only=True) as (a, b, _), PushClient(a.push_address) as push:
        before = await push.publish("inbox:bea", "note", {"n": 1}, id="before")
        b.push.kill(signal.SIGSTOP)  # edge a's only replica
        connecting = None
        try:
            await falls_to(a.edge_metrics_url, "ws_edge_push_connected", 0, timeout(15))
            # Welcomed once the stream's first request is applied, after the try open now has ended.
            connecting = asyncio.create_task(WsClient.connect(a.ws_url, welcome_wait=30, topics="inbox:bea"))
            await reaches(a.edge_metrics_url, "ws_edge_topics", 1, timeout(10))  # subscribed, no stream
            # The edge keeps trying the stopped replica, each try given up after 3 s of silence: one
            # open when the subscription came took it as a change after its first request. Once that
            # try has ended, every later one declares the topic in its first request.
            tries = value(scrape(a.edge_metrics_url), "ws_edge_push_reconnects_total")
            await reaches(a.edge_metrics_url, "ws_edge_push_reconnects_total", tries + 1, timeout(15))
        finally:
            b.push.kill(signal.SIGCONT)
        client = await connecting  # welcomed once the new stream's snapshot is applied
        assert f"push stream to {b.push_address} up (1 topics" in a.edge.log_path.read_text(), a.edge.log_tail()
        try:
            b.push.kill(signal.SIGSTOP)
            try:
                await falls_to(a.edge_metrics_url, "ws_edge_push_connected", 0, timeout(15))
                during = await push.publish("inbox:bea", "note", {"n": 2}, id="during")  # in the outage
            finally:
                b.push.kill(signal.SIGCONT)
            assert (during.offset, during.epoch) == (before.offset + 1, before.epoch)
            assert await client.recv(15) == {
                "type": "note", "id": "during", "timestamp": during.timestamp_ms, "data": {"n": 2},
                "topic": "inbox:bea", "offset": during.offset, "epoch": during.epoch}
            await client.expect_silence(0.3)
        finally:
            await client.close()
