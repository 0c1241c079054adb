"""A real push service in this process, on a TCP port, for the task service's publishing tests; what
was published is read back with the History RPC (the default rules keep task topics)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson
import pytest
from push.v1 import push_service_pb2 as pb

from push_service.config import PushSettings
from push_service.server import RunningPushServer, start_push_server
from pushclient import PushClient, StreamPublisher
from tests.support.timing import timeout


@asynccontextmanager
async def push_service(port: int = 0, **settings: object) -> AsyncIterator[RunningPushServer]:
    running = await start_push_server(PushSettings(port=port, metrics_port=0, **settings))
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def push() -> AsyncIterator[PushClient]:
    async with push_service() as running, PushClient(f"127.0.0.1:{running.port}") as client:
        yield client


@pytest.fixture
async def publisher(push: PushClient) -> AsyncIterator[StreamPublisher]:
    publisher = push.stream_publisher(idempotent=True)
    publisher.start()
    yield publisher
    await publisher.close()


async def history(push: PushClient, topic: str) -> list[dict]:
    """Every message the push service keeps for `topic`, oldest first, as envelopes."""
    reply = await push.stub.History(pb.HistoryRequest(topic=topic), timeout=timeout(10))
    assert not reply.truncated
    return [orjson.loads(p.frame) for p in reply.publications]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition` (a generous deadline: only a fault makes it late)."""
    deadline = asyncio.get_running_loop().time() + timeout(10)
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.01)
