"""The largest message the push service is configured to take reaches a browser: the edge's stream
takes what the push service sends it (a message of PUSH_MAX_DATA_BYTES, at its 4 MiB ceiling, in its
envelope, is more than gRPC's default 4 MiB a message)."""

from __future__ import annotations

import pytest

from pushclient import PushClient
from tests.conftest import start_system
from tests.support.processes import System
from tests.support.wsclient import WsClient

LARGEST = 4 * 1024 * 1024  # push_service/config.py: max_data_bytes' ceiling


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "large", push_env={"PUSH_MAX_DATA_BYTES": str(LARGEST)})
    yield system
    system.stop()


async def test_a_message_of_the_largest_configured_size_reaches_its_subscriber(large: System):
    client = await WsClient.connect(large.ws_url, topics="large")
    try:
        async with PushClient(large.push_address) as push:
            data = b'"' + b"x" * (LARGEST - 2) + b'"'  # a JSON string of exactly LARGEST bytes
            reply = await push.publish("large", "blob", data, id="big")
            after = await push.publish("large", "blob", b'"small"', id="after")
        big, small = await client.messages(2, wait=30)  # (together in a batch frame, as often as not)
        assert (big["id"], len(big["data"]), big["offset"]) == ("big", LARGEST - 2, reply.offset)
        assert (small["id"], small["offset"]) == ("after", reply.offset + 1)  # and the stream goes on
        assert after.offset == reply.offset + 1
    finally:
        await client.close()
