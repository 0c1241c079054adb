"""The HTTP transports' own rules: heartbeats, refusals before and after the stream starts, the close
frame at the end (the session's rules themselves run over every transport in test_delivery.py)."""

from __future__ import annotations

import asyncio
import signal

import orjson
import pytest

from pushclient.streams import StreamConnection, StreamError, post_json
from tests.conftest import start_system
from tests.support.processes import System
from tests.support.timing import timeout
from tests.support.tokens import token
from tests.support.wsclient import Closed, StreamClient, parse_server_frame


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory):
    """Heartbeats every 0.2 s, silence closed after 1.5 s; tokens required."""
    system = start_system(tmp_path_factory, "streams", edge_env={
        "EDGE_STREAM_HEARTBEAT_INTERVAL": "0.2", "EDGE_CLIENT_TIMEOUT": "1.5", "EDGE_HEARTBEAT_CHECK_INTERVAL": "0.2",
        "EDGE_ALLOW_ANONYMOUS": "false"})
    yield system
    system.stop()


@pytest.mark.parametrize("path", ["/sse", "/stream"])
async def test_heartbeats_keep_a_silent_reader_open_past_the_client_timeout(quick: System, path: str):
    stream = await StreamConnection.open(quick.http_url, path, token=token("hb"))
    try:
        assert orjson.loads(await stream.recv_raw() or b"")["type"] == "connected"
        reading = asyncio.create_task(stream.recv_raw())
        await asyncio.sleep(3.0)  # twice the client timeout, and the client sends nothing
        assert not reading.done(), "a reader that takes the heartbeats is not closed as silent"
        assert stream.heartbeats >= 5
        reading.cancel()
    finally:
        await stream.close()


async def test_refusals_before_the_stream_are_http_statuses(quick: System):
    foreign = {"Origin": "http://evil.example"}
    for path in ("/sse", "/stream"):
        with pytest.raises(StreamError) as refused:
            await StreamConnection.open(quick.http_url, path, headers=foreign, token=token("o"))
        assert (refused.value.status, orjson.loads(refused.value.body)) == (403, {"error": "origin not allowed"})
        with pytest.raises(StreamError) as anonymous:
            await StreamConnection.open(quick.http_url, path)
        assert (anonymous.value.status, orjson.loads(anonymous.value.body)) == (
            401, {"error": "a token is required: ?token= or Authorization: Bearer"})
    assert await post_json(quick.http_url + "/emulation", {"session": "x", "frames": [{}]}, foreign) == (
        403, {"error": "origin not allowed"})
    # The token as a header (a fetch can send one), instead of the URL.
    stream = await StreamConnection.open(quick.http_url, "/stream", headers={"Authorization": f"Bearer {token('hd')}"})
    try:
        assert orjson.loads(await stream.recv_raw() or b"")["data"]["user"] == "hd"
    finally:
        await stream.close()


@pytest.mark.parametrize(("params", "code", "reason"), [
    ({"client_id": "~mine"}, 4400, "a client_id may not begin with '~' (kept for the ids the server assigns)"),
    ({"token": "not.a.jwt"}, 4003, None),
])
async def test_refusals_after_the_stream_started_are_a_close_frame_then_the_end(quick: System, params, code, reason):
    stream = await StreamConnection.open(quick.http_url, "/sse", **{"token": token("late"), **params})
    try:
        frame = parse_server_frame(await stream.recv_raw() or b"")
        assert (frame["type"], frame["data"]["code"]) == ("close", code)
        if reason is not None:
            assert frame["data"]["reason"] == reason
        assert await asyncio.wait_for(stream.recv_raw(), timeout(5)) is None
    finally:
        await stream.close()


@pytest.fixture
def away_system(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "streams-away")
    yield system
    system.stop()


@pytest.mark.parametrize("where", ["query", "last-event-id"])
async def test_unusable_positions_are_said_after_connected_as_on_a_websocket(quick: System, where: str):
    headers = {"Last-Event-ID": "{nope"} if where == "last-event-id" else None
    params = {"since": "{nope"} if where == "query" else {}
    stream = await StreamConnection.open(quick.http_url, "/sse", headers=headers, token=token("pos"), **params)
    try:
        assert parse_server_frame(await stream.recv_raw() or b"")["type"] == "connected"
        error = parse_server_frame(await stream.recv_raw() or b"")
        assert error["error"] == {"code": "INVALID_MESSAGE",
                                  "message": "?since= ignored: `since` must be a JSON object of positions"}
    finally:
        await stream.close()


@pytest.mark.parametrize("transport", ["sse", "http_stream"])
async def test_an_edge_going_away_ends_every_stream_with_1001(away_system: System, transport: str):
    client = await StreamClient.open(away_system.http_url, "/sse" if transport == "sse" else "/stream", transport,
                                     topics="away")
    away_system.edge.kill(signal.SIGTERM)
    with pytest.raises(Closed) as closed:
        await client.recv(10)
    assert (closed.value.code, closed.value.reason) == (1001, "going away")
    await client.close()
