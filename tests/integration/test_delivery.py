"""Publish -> push_service -> edge stream -> WebSocket, against real processes over TCP."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
import websockets

from pushclient import PushClient
from tests.support.asyncapi import schema_errors
from tests.support.processes import System, read_url
from tests.support.timing import timeout
from tests.support.tokens import token
from tests.support.wsclient import TRANSPORTS, unpack

pytestmark = pytest.mark.portable
over_every_transport = pytest.mark.parametrize("transport", TRANSPORTS)

GUIDE_ORDER = ["type", "id", "timestamp", "data", "topic"]


@over_every_transport
async def test_published_message_reaches_topic_subscriber_with_exact_envelope(system: System, ws, push: PushClient):
    news = await ws(topics="news:eu,news:us")
    other = await ws(topics="sport")
    assert news.welcome["data"]["topics"] == ["news:eu", "news:us"]

    reply = await push.publish("news:eu", "headline", {"title": "hi", "n": [1, 2.5, None]}, id="m1")

    message = await news.recv()
    assert message == {
        "type": "headline",
        "id": "m1",
        "timestamp": reply.timestamp_ms,
        "data": {"title": "hi", "n": [1, 2.5, None]},
        "topic": "news:eu",
        "offset": reply.offset,  # 1 on the first transport's run; the module's system is shared
        "epoch": reply.epoch,
    }
    # The guide's fields in the guide's order, then the history position (extra fields).
    assert list(message) == [*GUIDE_ORDER, "offset", "epoch"]
    assert reply.id == "m1" and reply.offset >= 1 and len(reply.epoch) == 12
    await other.expect_silence(0.5)
    await news.expect_silence(0.2)


async def test_publish_assigns_unique_ids_when_absent(system: System, ws, push: PushClient):
    client = await ws(topics="ids")
    first = await push.publish("ids", "t", {"i": 1})
    second = await push.publish("ids", "t", {"i": 2})
    received = await client.messages(2)
    assert [m["id"] for m in received] == [first.id, second.id]
    assert first.id != second.id and len(first.id) >= 16


@over_every_transport
async def test_burst_of_25_arrives_in_batches_of_at_most_10_in_order(system: System, ws, push: PushClient):
    client = await ws(topics="burst")
    publisher = push.stream_publisher()
    publisher.start()
    from pushclient.client import outgoing

    for i in range(25):
        publisher.submit(outgoing("burst", "tick", {"i": i}, id=f"b{i}"))
    await asyncio.wait_for(publisher.flush(), 10)
    await publisher.close()
    assert (publisher.accepted, publisher.rejected, publisher.dropped) == (25, 0, 0)

    frames = await client.frames_until(25)
    for frame in frames:
        if frame["type"] == "batch":
            assert list(frame) == ["type", "messages"]
            assert 2 <= len(frame["messages"]) <= 10, "a lone message goes out as itself, batches hold <= 10"
        else:
            assert frame["type"] == "tick"
    assert any(f["type"] == "batch" for f in frames), "a burst must be coalesced"
    assert [m["data"]["i"] for m in unpack(frames)] == list(range(25))
    assert [m["id"] for m in unpack(frames)] == [f"b{i}" for i in range(25)]
    await client.expect_silence(0.3)


@over_every_transport
async def test_subscribe_and_unsubscribe_change_delivery_and_are_acknowledged(system: System, ws, push: PushClient):
    client = await ws()
    assert client.welcome["data"]["topics"] == []
    await push.publish("alerts", "alert", {"n": 0})
    await client.expect_silence(0.3)

    ack = await client.request({"type": "subscribe", "id": "sub_1", "data": {"topics": ["alerts", "alerts:2"]}})
    assert ack["type"] == "ack" and ack["id"] == "sub_1"
    assert ack["data"] == {"type": "subscribe", "topics": ["alerts", "alerts:2"]}
    assert isinstance(ack["timestamp"], int)

    await push.publish("alerts", "alert", {"n": 1}, id="a1")
    assert (await client.recv())["id"] == "a1"

    ack = await client.request({"type": "unsubscribe", "id": "unsub_1", "data": {"topics": ["alerts"]}})
    assert ack["type"] == "ack" and ack["id"] == "unsub_1"
    assert ack["data"] == {"type": "unsubscribe", "topics": ["alerts"]}
    await push.publish("alerts", "alert", {"n": 2})
    await push.publish("alerts:2", "alert", {"n": 3}, id="a3")
    assert (await client.recv())["id"] == "a3"
    await client.expect_silence(0.3)


@over_every_transport
async def test_ping_gets_pong_with_the_same_id(system: System, ws):
    client = await ws()
    pong = await client.request({"type": "ping", "id": "p1", "timestamp": 1})
    assert set(pong) == {"type", "id", "timestamp"}
    assert (pong["type"], pong["id"]) == ("pong", "p1")


def error(code: str, message_id: str | None, frame: dict) -> dict:
    """The expected error frame, with the actual (server-chosen) timestamp and message checked apart."""
    assert isinstance(frame.get("timestamp"), int)
    assert isinstance(frame.get("error", {}).get("message"), str) and frame["error"]["message"]
    expected_id = message_id if message_id is not None else frame["id"]
    return {"type": "error", "id": expected_id, "timestamp": frame["timestamp"],
            "error": {"code": code, "message": frame["error"]["message"]}}


@over_every_transport
async def test_every_bad_input_gets_its_error_code_and_the_connection_keeps_working(system: System, ws, push: PushClient):
    client = await ws(topics="still")
    cases = [
        ("{not json", None, "INVALID_JSON"),
        (b"\xff\xfe binary garbage", None, "INVALID_JSON"),
        ("[1, 2, 3]", None, "INVALID_MESSAGE"),
        ('{"id": "x1", "data": {}}', "x1", "INVALID_MESSAGE"),
        ('{"type": 7, "id": "x2"}', "x2", "INVALID_MESSAGE"),
        ('{"type": "subscribe", "id": "x3", "data": {"topics": "nope nope"}}', "x3", "INVALID_TOPIC"),
        ('{"type": "subscribe", "id": "x4", "data": {"topics": ["ok", 5]}}', "x4", "INVALID_TOPIC"),
        ('{"type": "subscribe", "id": "x5", "data": {}}', "x5", "INVALID_MESSAGE"),
        ('{"type": "custom_thing", "id": "x6"}', "x6", "UNKNOWN_MESSAGE_TYPE"),
        ('{"type": "ping", "id": "x7", "data": [1]}', "x7", "INVALID_MESSAGE"),
        ('{"type": "send_message", "id": "x8", "data": {"content": "no recipient"}}', "x8", "INVALID_MESSAGE"),
        ('{"type": "x", "id": "' + "y" * 70_000 + '"}', None, "MESSAGE_TOO_LARGE"),
    ]
    for frame, message_id, code in cases:
        if isinstance(frame, bytes) and client.transport != "websocket":
            continue  # an HTTP stream's frames are JSON text in a JSON body: no binary frames
        await client.send_raw(frame)
        answer = await client.recv()
        assert answer == error(code, message_id, answer), (frame[:60], answer)
    unknown = await client.request({"type": "custom_thing", "id": "x9"})
    assert unknown["error"] == {"code": "UNKNOWN_MESSAGE_TYPE", "message": "Unknown message type: custom_thing"}

    # The same connection still works: ping, and delivery.
    assert (await client.request({"type": "ping", "id": "after"}))["type"] == "pong"
    await push.publish("still", "t", {"ok": True}, id="s1")
    assert (await client.recv())["id"] == "s1"


@over_every_transport
async def test_rate_limit_answers_rate_limited_and_recovers(system: System, ws):
    client = await ws()
    sent = 300
    # Back to back: over the HTTP transports, 100 frames a POST (one POST each would take longer than
    # the rate allows on a loaded machine, or through a container's published port).
    await client.send_all([{"type": "ping", "id": f"r{i}"} for i in range(sent)])
    answers = [await client.recv() for _ in range(sent)]
    assert [a["id"] for a in answers] == [f"r{i}" for i in range(sent)], "every message is answered, in order"
    pongs = [a for a in answers if a["type"] == "pong"]
    limited = [a for a in answers if a["type"] == "error"]
    assert all(a["error"]["code"] == "RATE_LIMITED" for a in limited)
    # A burst of 100, then 100 per second over however long the edge took to handle them (its own
    # timestamps), so the bound holds on a loaded machine as well.
    span = (answers[-1]["timestamp"] - answers[0]["timestamp"]) / 1000
    assert 100 <= len(pongs) <= 100 + 100 * span + 2, (len(pongs), span)
    assert limited, f"300 messages in {span:.2f}s must exceed 100/s"
    await asyncio.sleep(1.1)
    assert (await client.request({"type": "ping", "id": "later"}))["type"] == "pong"


@over_every_transport
async def test_personal_message_reaches_that_connection_only(system: System, ws, push: PushClient):
    alice = await ws(client_id="alice-1", topics="shared")
    bob = await ws(client_id="bob-1", topics="shared")
    assert alice.client_id == "alice-1"

    await push.send_personal_message({"type": "notification", "id": "n1", "data": {"hello": "alice"}}, "alice-1")
    message = await alice.recv()
    assert message["type"] == "notification" and message["id"] == "n1"
    assert message["data"] == {"hello": "alice"}
    assert "topic" not in message
    await bob.expect_silence(0.5)


async def test_server_assigns_client_id_when_absent(system: System, ws):
    first = await ws()
    second = await ws()
    assert first.client_id and second.client_id and first.client_id != second.client_id


@over_every_transport
async def test_personal_message_to_an_assigned_client_id_reaches_that_connection_only(ws, push: PushClient):
    first, second = await ws(), await ws()
    # `~<edge mark>.<random>`: routed to the edge by its mark, to the connection by the whole id.
    assert re.fullmatch(r"~[0-9a-f]{12}\.[0-9a-f]{32}", first.client_id)
    assert first.client_id.partition(".")[0] == second.client_id.partition(".")[0]
    await push.send_personal_message({"type": "notification", "id": "to-first", "data": {}}, first.client_id)
    assert (await first.recv())["id"] == "to-first"
    await second.expect_silence(0.5)
    sibling = first.client_id.partition(".")[0] + "." + "0" * 32  # the same edge, nobody's id
    await push.send_personal_message({"type": "notification", "id": "nobody", "data": {}}, sibling)
    await first.expect_silence(0.5)


async def test_a_chosen_client_id_may_not_take_the_assigned_form(system: System):
    async with websockets.connect(system.ws_url + "/ws?client_id=~0a1b2c3d4e5f.spoof") as connection:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), timeout(5))
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        4400, "a client_id may not begin with '~' (kept for the ids the server assigns)")


@over_every_transport
async def test_send_message_handler_notifies_user_topic(system: System, ws):
    sender = await ws(client_id="carol", token=token("carol"))
    recipient = await ws(topics="user:dave", token=token("dave"))
    ack = await sender.request({"type": "send_message", "id": "sm1", "data": {"recipient": "dave", "content": "hi"}})
    assert ack["type"] == "ack" and ack["id"] == "sm1"
    assert ack["data"]["type"] == "send_message" and ack["data"]["topic"] == "user:dave"
    notification = await recipient.recv()
    assert notification == {
        "type": "notification",
        "id": ack["data"]["message_id"],
        "timestamp": notification["timestamp"],
        "data": {"user_id": "dave", "message": "hi", "from": "carol", "from_user": "carol", "read": False},
        "topic": "user:dave",
        "offset": notification["offset"],  # the module's system is shared by each transport's run
        "epoch": notification["epoch"],
    }
    assert schema_errors(notification["data"], "Notification") == []


async def test_send_message_names_the_verified_sender_whatever_client_id_it_chose(system: System, ws):
    # mallory signs in as herself but picks the client_id "alice": `from` is what she chose, `from_user`
    # what her token proves, and only that one is documented as trustworthy.
    mallory = await ws(client_id="alice", token=token("mallory"))
    recipient = await ws(topics="user:erin", token=token("erin"))
    ack = await mallory.request({"type": "send_message", "id": "sp1", "data": {"recipient": "erin", "content": "hi"}})
    assert ack["type"] == "ack"
    notification = await recipient.recv()
    assert notification["data"] == {"user_id": "erin", "message": "hi", "from": "alice", "from_user": "mallory",
                                    "read": False}
    assert schema_errors(notification["data"], "Notification") == []


@over_every_transport
async def test_task_endpoint_defaults_to_task_topics(system: System, ws):
    client = await ws("/ws/task")
    assert client.welcome["data"]["topics"] == ["task:progress", "task:status", "task:list"]
    explicit = await ws("/ws/task", topics="task:status")
    assert explicit.welcome["data"]["topics"] == ["task:status"]
    empty = await ws("/ws/task", topics="")  # an empty list is no list: the defaults
    assert empty.welcome["data"]["topics"] == ["task:progress", "task:status", "task:list"]
    assert (await ws("/ws", topics="")).welcome["data"]["topics"] == []


async def test_invalid_topic_in_query_is_reported_and_connection_stays(system: System, ws, push: PushClient):
    client = await ws(topics="fine,bad topic")
    assert client.welcome["data"]["topics"] == []
    answer = await client.recv()
    assert answer["type"] == "error" and answer["error"]["code"] == "INVALID_TOPIC"
    assert (await client.request({"type": "ping", "id": "p"}))["type"] == "pong"


async def test_connections_use_the_shared_frame_fast_path(system: System, ws):
    clients = [await ws() for _ in range(3)]
    health = json.loads(await asyncio.to_thread(read_url, system.http_url + "/healthz"))
    assert health["connections"] >= len(clients)
    assert health["fast_path_connections"] == health["connections"]
    assert health["frame_writer"] == "uvicorn-fast-path"


def edge_connections(system: System) -> int:
    return json.loads(read_url(system.http_url + "/healthz"))["connections"]


async def test_connections_closed_by_the_client_are_released(system: System, ws, push: PushClient):
    before = edge_connections(system)
    polite, rude, staying = await ws(topics="bye"), await ws(topics="bye"), await ws(topics="bye")
    assert edge_connections(system) == before + 3
    await polite.connection.close()
    rude.connection.transport.abort()
    for _ in range(100):
        if edge_connections(system) == before + 1:
            break
        await asyncio.sleep(0.05)
    assert edge_connections(system) == before + 1
    await push.publish("bye", "t", {}, id="after-close")  # fan-out skips the released ones cleanly
    assert (await staying.recv())["id"] == "after-close"


async def test_unusable_url_positions_are_said_after_connected_and_ignored(system: System, ws):
    client = await ws(topics="since:x", since="{not json")
    assert client.welcome["data"]["topics"] == ["since:x"] and "recovery" not in client.welcome["data"]
    error = await client.recv()
    assert (error["type"], error["error"]["code"]) == ("error", "INVALID_MESSAGE")
    assert error["error"]["message"] == "?since= ignored: `since` must be a JSON object of positions"
    assert (await client.request({"type": "ping", "id": "p"}))["type"] == "pong"
