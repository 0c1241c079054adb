"""The push service's bounds over gRPC (a real server on a TCP port, a real redis-server): history
answered in pages, UNAVAILABLE with a message while Redis is away, bursts that wait for a Redis
connection instead of being refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import grpc
import orjson
import pytest
from push.v1 import push_service_pb2 as pb
from push.v1 import push_service_pb2_grpc as pb_grpc

from push_service.config import PushSettings
from push_service.server import RunningPushServer, start_push_server
from tests.support.processes import ServiceProcess, free_port, wait_grpc_serving
from tests.support.redis_server import RedisServer
from tests.support.timing import timeout

T = TypeVar("T")
HISTORY = '[{"pattern": "big:*", "size": 1000, "ttl": 600}, {"pattern": "*", "size": 100, "ttl": 600}]'


@asynccontextmanager
async def push_service(**settings: object) -> AsyncIterator[tuple[RunningPushServer, pb_grpc.PushServiceStub]]:
    running = await start_push_server(PushSettings(port=0, metrics_port=0, history_rules=HISTORY, **settings))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield running, pb_grpc.PushServiceStub(channel)
    finally:
        await running.stop(0)


async def requests_from(queue: asyncio.Queue[T | None]) -> AsyncIterator[T]:
    """A streaming call's requests, as the test puts them in `queue` (None: the end of the stream)."""
    while (request := await queue.get()) is not None:
        yield request


def message(topic: str, n: int, pad: int = 0) -> pb.OutgoingMessage:
    return pb.OutgoingMessage(topic=topic, type="t", id=f"m{n}", data=orjson.dumps({"n": n, "pad": "x" * pad}))


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_a_history_larger_than_a_grpc_message_is_answered_in_pages():
    """300 messages of 60 KB (18 MB) since offset 0 used to be one answer, refused by the 4 MiB limit."""
    async with push_service(history_topic_bytes=32 * 1024 * 1024) as (_, stub):  # the default keeps 4 MiB
        for n in range(300):
            await stub.Publish(pb.PublishRequest(message=message("big:t", n, pad=60_000)), timeout=timeout(10))
        small = await stub.Publish(pb.PublishRequest(message=message("small:t", 0)), timeout=timeout(10))
        first = await stub.History(pb.HistoryRequest(topic="big:t", since_offset=0, epoch=small.epoch),
                                   timeout=timeout(10))
        assert (first.recovered, first.truncated, first.offset) == (True, True, 300)
        assert len(first.publications) == (1024 * 1024) // len(first.publications[0].frame) == 17
        offsets, since, answers = [], 0, 0
        while True:  # what a caller does with a truncated answer: ask again from its last offset
            read = await stub.History(pb.HistoryRequest(topic="big:t", since_offset=since, epoch=small.epoch),
                                      timeout=timeout(10))
            assert read.recovered and sum(len(p.frame) for p in read.publications) <= 1024 * 1024
            offsets += [p.offset for p in read.publications]
            answers += 1
            if not read.truncated:
                break
            since = read.publications[-1].offset
        assert (offsets, answers) == (list(range(1, 301)), 18)
        # What fits in one page is answered as before, in one answer.
        whole = await stub.History(pb.HistoryRequest(topic="small:t", since_offset=0, epoch=small.epoch),
                                   timeout=timeout(10))
        assert ([p.offset for p in whole.publications], whole.truncated, whole.recovered) == ([1], False, True)
        assert orjson.loads(whole.publications[0].frame)["id"] == "m0"


async def test_every_rpc_answers_unavailable_while_redis_is_away(redis: RedisServer):
    async with push_service(broker_url=redis.url) as (_, stub):
        published = await stub.Publish(pb.PublishRequest(message=message("r:t", 1)), timeout=timeout(10))
        assert published.offset == 1
        redis.stop()
        for call in (
            stub.History(pb.HistoryRequest(topic="r:t", since_offset=0, epoch=published.epoch), timeout=timeout(10)),
            stub.History(pb.HistoryRequest(topic="r:t", limit=5), timeout=timeout(10)),
            stub.Publish(pb.PublishRequest(message=message("r:t", 2)), timeout=timeout(10)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert refused.value.details().startswith("broker unavailable: redis: ")
            assert "Traceback" not in refused.value.details()

        async def one_request() -> AsyncIterator[pb.PublishStreamRequest]:
            yield pb.PublishStreamRequest(sequence=1, messages=[message("r:t", 3), message("r:t", 4)])

        answers = [answer async for answer in stub.PublishStream(one_request(), timeout=timeout(10))]
        assert [(r.error_code, r.error_message.startswith("broker unavailable: redis: "))
                for r in answers[0].results] == [(grpc.StatusCode.UNAVAILABLE.value[0], True)] * 2

        interest = asyncio.Queue[pb.EdgeStreamRequest | None]()
        await interest.put(pb.EdgeStreamRequest(add_topics=["r:t"], sequence=1))

        edge = stub.EdgeStream(requests_from(interest), timeout=timeout(30))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for _ in edge:
                pass
        await interest.put(None)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ended.value.details().startswith("broker unavailable: redis: ")


async def test_a_burst_of_5000_unary_publishes_waits_for_redis_connections(tmp_path: Path):
    """redis-server takes 50 clients: the burst used to open a connection per call and be refused
    (1,713 of 5,000 UNAVAILABLE "max number of clients reached" here). The push service is a process of
    its own, as deployed: in the test's process the client's calls would arrive too slowly to burst."""
    redis = RedisServer(tmp_path, "--maxclients", "50")
    redis.start()
    port = free_port()
    # The pool's wait is generous: on a loaded 2-core machine the last calls of the burst wait seconds.
    service = ServiceProcess("push_service", "push_service", {
        "PUSH_PORT": str(port), "PUSH_METRICS_PORT": "0", "PUSH_BROKER_URL": redis.url,
        "PUSH_HISTORY_RULES": HISTORY, "PUSH_REDIS_POOL_TIMEOUT": str(timeout(60))}, tmp_path / "push.log")
    service.start()
    try:
        await wait_grpc_serving(f"127.0.0.1:{port}", service)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.PushServiceStub(channel)
            calls = [stub.Publish(pb.PublishRequest(message=message("burst:t", n)), timeout=timeout(90))
                     for n in range(5000)]
            answers = await asyncio.gather(*calls, return_exceptions=True)
        refused = [a for a in answers if isinstance(a, BaseException)]
        assert refused == [], f"{len(refused)} refused, e.g. {refused[0]}"
        assert sorted(a.offset for a in answers) == list(range(1, 5001))  # type: ignore[union-attr]
    finally:
        service.stop()
        redis.stop()


async def test_a_stopping_service_refuses_what_it_would_not_deliver_and_delivers_what_it_answered():
    """Its edge streams drained, a publish it still took on an open stream was answered and never
    delivered: with the memory engine, lost for good (the publisher sends again only what is refused)."""
    running = await start_push_server(PushSettings(port=0, metrics_port=0, history_rules=HISTORY))
    stopped = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.PushServiceStub(channel)
            interest = asyncio.Queue[pb.EdgeStreamRequest | None]()
            await interest.put(pb.EdgeStreamRequest(add_topics=["s:t"], sequence=1))

            edge = stub.EdgeStream(requests_from(interest), timeout=timeout(30))
            async for response in edge:  # (a heartbeat first)
                if response.applied_sequence == 1:
                    break
            publishes = asyncio.Queue[pb.PublishStreamRequest | None]()

            answers = aiter(stub.PublishStream(requests_from(publishes), timeout=timeout(30)))
            await publishes.put(pb.PublishStreamRequest(sequence=1, messages=[message("s:t", 1)]))
            first = await anext(answers)
            assert (first.sequence, [(r.error_code, r.id) for r in first.results]) == (1, [(0, "m1")])
            stopped = asyncio.create_task(running.stop(5))
            await asyncio.sleep(0)
            await publishes.put(pb.PublishStreamRequest(sequence=2, messages=[message("s:t", 2)]))
            second = await anext(answers)
            assert (second.sequence, [(r.error_code, r.error_message) for r in second.results]) == (
                2, [(grpc.StatusCode.UNAVAILABLE.value[0], "the push service is stopping")])
            await publishes.put(None)
            delivered = [orjson.loads(d.frame)["id"] async for response in edge for d in response.deliveries]
            await interest.put(None)
            assert delivered == ["m1"]  # and the stream ended cleanly (no error raised)
            await stopped
    finally:
        if stopped is None:
            await running.stop(0)
