"""The edge outlives its push service; dead browsers are found by heartbeat; idle traffic is never held."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from pushclient import PushClient
from pushclient.client import outgoing
from tests.conftest import start_system
from tests.support.metrics import reaches, scrape, value
from tests.support.processes import System, http_status, read_url
from tests.support.timing import timeout
from tests.support.wsclient import WsClient, unpack


@pytest.fixture
def own_system(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    system = start_system(tmp_path_factory, "own", **request.param)
    yield system
    system.stop()


async def wait_until(predicate, limit: float, what: str) -> None:
    deadline = time.monotonic() + timeout(limit)
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("own_system", [{}], indirect=True)
async def test_push_service_killed_and_restarted_edge_reconnects_and_clients_stay(own_system: System):
    system = own_system
    clients = [await WsClient.connect(system.ws_url, topics="live") for _ in range(3)]
    personal = await WsClient.connect(system.ws_url, client_id="pinned")
    try:
        async with PushClient(system.push_address) as push:
            await push.publish("live", "t", {"n": 0}, id="before")
        for client in clients:
            assert (await client.recv())["id"] == "before"

        system.push.kill(signal.SIGKILL)
        await wait_until(lambda: _status(system, "/readyz", 503), 10, "edge to notice the push service is gone")
        system.push.start()
        await system.wait_push()
        # Ready again means the push service confirmed the edge's re-declared interest.
        await wait_until(lambda: _status(system, "/readyz", 200), 15, "edge to reconnect")

        async with PushClient(system.push_address) as push:
            await push.publish("live", "t", {"n": 1}, id="after")
            await push.send_personal_message({"type": "note", "id": "p-after"}, "pinned")
        for client in clients:
            # Told, not left silently behind: the restarted push service is a new history epoch.
            notice = await client.recv()
            assert (notice["type"], notice["data"]["topic"], notice["data"]["recovered"]) == ("recovery", "live", False)
            assert (await client.recv())["id"] == "after"
        assert (await personal.recv())["id"] == "p-after"
        # The very same WebSocket connections: nobody was disconnected.
        for client in [*clients, personal]:
            assert (await client.request({"type": "ping", "id": "still"}))["type"] == "pong"
    finally:
        for client in [*clients, personal]:
            await client.close()


@pytest.mark.parametrize(
    # A welcome only once the push service applied the subscription (not after 3 s without its answer).
    "own_system", [{"edge_env": {"EDGE_PUSH_SILENCE_TIMEOUT": "2.0", "EDGE_SUBSCRIBE_CONFIRM_TIMEOUT": "30"},
                    "push_env": {"PUSH_EDGE_HEARTBEAT_INTERVAL": "0.2"}}],
    indirect=True,
)
async def test_an_edge_stopped_past_its_silence_timeout_keeps_its_stream_and_a_stopped_replica_is_given_up(
        own_system: System):
    """A loaded machine can leave the edge's process unscheduled for seconds (CI saw it once): the
    heartbeats it missed wait in its socket, so the time is not the replica's silence. A replica that
    stops is still given up, and the edge's subscribers see neither."""
    system = own_system
    client = await WsClient.connect(system.ws_url, topics="paused")
    try:
        async with PushClient(system.push_address) as push:
            system.edge.kill(signal.SIGSTOP)
            try:
                stopped = await push.publish("paused", "t", {"n": 1}, id="while-edge-stopped")
                await asyncio.sleep(4.0)  # twice the edge's silence timeout
            finally:
                system.edge.kill(signal.SIGCONT)
            assert await client.recv() == {"type": "t", "id": "while-edge-stopped", "timestamp": stopped.timestamp_ms,
                                            "data": {"n": 1}, "topic": "paused", "offset": 1, "epoch": stopped.epoch}
            await client.expect_silence(0.5)  # no recovery notice: the stream was never lost
            assert value(scrape(system.edge_metrics_url), "ws_edge_push_silences_total") == 0

            system.push.kill(signal.SIGSTOP)
            try:
                await reaches(system.edge_metrics_url, "ws_edge_push_silences_total", 1, timeout(10))
            finally:
                system.push.kill(signal.SIGCONT)
            await wait_until(lambda: _status(system, "/readyz", 200), 15, "edge to take its stream again")
            after = await push.publish("paused", "t", {"n": 2}, id="after-replica-stopped")
            # Nothing was missed, and history says so: no notice, the next message in order.
            assert await client.recv() == {"type": "t", "id": "after-replica-stopped", "timestamp": after.timestamp_ms,
                                           "data": {"n": 2}, "topic": "paused", "offset": 2, "epoch": stopped.epoch}
    finally:
        await client.close()


async def _status(system: System, path: str, expected: int) -> bool:
    return await asyncio.to_thread(http_status, system.http_url + path) == expected


@pytest.mark.parametrize(
    "own_system", [{"edge_env": {"EDGE_CLIENT_TIMEOUT": "5.0", "EDGE_HEARTBEAT_CHECK_INTERVAL": "0.2"}}],
    indirect=True,
)
async def test_silent_connection_is_closed_by_heartbeat_and_released(own_system: System):
    system = own_system
    silent = await WsClient.connect(system.ws_url, topics="hb")
    lively = await WsClient.connect(system.ws_url, topics="hb")
    try:
        started = time.monotonic()
        # Pings 0.3 s apart keep it well inside the 5 s timeout even if a loaded machine stalls the edge
        # for seconds (the sweep can then run before the pings waiting in its socket are read).
        while time.monotonic() - started < timeout(7):
            assert (await lively.request({"type": "ping", "id": "hb"}))["type"] == "pong"
            await asyncio.sleep(0.3)
        with pytest.raises(Exception) as closed:
            await silent.recv(timeout(5))
        assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 4000
        assert closed.value.rcvd.reason == "heartbeat timeout"
        assert json.loads(await asyncio.to_thread(read_url, system.http_url + "/healthz"))["connections"] == 1
    finally:
        await silent.close()
        await lively.close()


# A window of four times the longest receive deadline (15 s, scaled by TIMEOUT_FACTOR like them): a
# message held for it would miss every one, so no clock needs reading here.
@pytest.mark.parametrize("own_system", [{"push_env": {"PUSH_BATCH_INTERVAL": str(timeout(60))}}], indirect=True)
async def test_lone_message_after_quiet_period_is_not_held_for_the_batch_window(own_system: System):
    system = own_system
    client = await WsClient.connect(system.ws_url, topics="quiet")
    try:
        async with PushClient(system.push_address) as push:
            await push.publish("quiet", "t", {"n": 1}, id="q1")
            assert (await client.recv(5))["id"] == "q1"
            await asyncio.sleep(0.5)  # quiet: the stream idle again
            await push.publish("quiet", "t", {"n": 2}, id="q2")
            assert (await client.recv(5))["id"] == "q2"
            # Under load the window does coalesce: a burst goes out in batches, and its tail does not
            # wait for the window either (it leaves once the stream has sent what came before).
            publisher = push.stream_publisher()
            publisher.start()
            for i in range(25):
                publisher.submit(outgoing("quiet", "t", {"n": i}, id=f"load{i}"))
            await publisher.flush()
            await publisher.close()
            frames = await client.frames_until(25)
            assert any(f["type"] == "batch" for f in frames)
            assert [m["id"] for m in unpack(frames)] == [f"load{i}" for i in range(25)]
    finally:
        await client.close()
