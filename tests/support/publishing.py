"""Publishing from tests through the real client library."""

from __future__ import annotations

from pushclient import PushClient
from pushclient.client import outgoing


async def publish_through_stream(address: str, topic: str, count: int, id_prefix: str) -> None:
    """`count` messages (type "t", data {"n": n}, id `{id_prefix}{n}`) through one stream publisher,
    every one answered by the push service before this returns."""
    async with PushClient(address) as push:
        publisher = push.stream_publisher()
        publisher.start()
        for n in range(count):
            publisher.submit(outgoing(topic, "t", {"n": n}, id=f"{id_prefix}{n}"))
        await publisher.flush()
        await publisher.close()
