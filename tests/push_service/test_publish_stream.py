"""`PublishStream`'s bound on what a publisher may leave unanswered, driven directly (no network): a
publisher that sends and never reads the answers is read no further once the bound is reached."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from push.v1 import push_service_pb2 as pb

from push_service.broker.memory import MemoryBroker
from push_service.hub import Hub
from push_service.servicer import INVALID_ARGUMENT, MAX_STREAM_IN_FLIGHT, PushServicer


async def test_requests_with_no_valid_message_count_against_the_streams_bound_too():
    """Empty requests, or requests of invalid messages only, are answered like any other: a publisher that
    sends them and never reads the answers must not grow the service's queue of answers without end."""
    hub = Hub(MemoryBroker())
    await hub.start()
    pulled = 0

    async def requests() -> AsyncIterator[pb.PublishStreamRequest]:
        nonlocal pulled
        for sequence in range(1, 3 * MAX_STREAM_IN_FLIGHT + 1):
            pulled += 1
            invalid = [pb.OutgoingMessage(topic="bad topic", type="t", id="m")] if sequence % 2 else []
            yield pb.PublishStreamRequest(sequence=sequence, messages=invalid)

    answers = PushServicer(hub, max_data_bytes=1024).PublishStream(requests(), None)  # type: ignore[arg-type]
    try:
        first = await anext(answers)  # then the publisher reads no more
        assert first.sequence == 1 and first.results[0].error_code == INVALID_ARGUMENT
        for _ in range(20):
            await asyncio.sleep(0)
        # The bound, the first request answered (its room given back), and the one read that waits for room.
        assert pulled == MAX_STREAM_IN_FLIGHT + 2
    finally:
        await answers.aclose()
        await hub.close()
