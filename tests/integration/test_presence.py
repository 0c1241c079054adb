"""Presence, join/leave and the server API on one system (memory engine), over real processes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from pushclient import PushClient
from pushclient.server_api import ServerApiError
from tests.conftest import start_system
from tests.integration.test_cli import pushctl
from tests.support.processes import System
from tests.support.timing import timeout
from tests.support.tokens import token
from tests.support.wsclient import Closed, WsClient

RULES = "room:*:presence+joinleave,task:*:presence"
OCCUPANCY = "internal:occupancy"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    system = start_system(tmp_path_factory, "presence",
                          push_env={"PUSH_PRESENCE_RULES": RULES, "PUSH_PRESENCE_TTL": "1.5",
                                    "PUSH_OCCUPANCY_TOPIC": OCCUPANCY},
                          edge_env={"EDGE_JOIN_LEAVE_RATE": "1000"})
    yield system
    system.stop()


async def connect(system: System, user: str | None, **params: str) -> WsClient:
    if user is not None:
        params["token"] = token(user, info={"name": user.title()})
    return await WsClient.connect(system.ws_url, **params)


async def until(check, limit: float = 10.0):  # type: ignore[no-untyped-def]
    """Poll an async check until it returns something truthy (generous for a loaded machine)."""
    deadline = asyncio.get_running_loop().time() + timeout(limit)
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.05)


async def next_of(client: WsClient, *types: str, wait: float = 5.0) -> dict:
    """The next message of one of `types` (batches unpacked; others skipped)."""
    while True:
        frame = await client.recv(wait)
        if frame["type"] == "batch":
            client._backlog.extendleft(reversed(frame["messages"]))
            continue
        if frame["type"] in types:
            return frame


async def test_presence_lists_subscribers_with_their_info_and_the_browser_reads_it(system):
    alice = await connect(system, "alice", topics="room:a")
    bob = await connect(system, "bob", topics="room:a")
    anon = await connect(system, None, topics="room:a")
    try:
        async with PushClient(system.push_address) as push:
            clients = await until(lambda: presence_of(push, "room:a", 3))
            assert [(c["client_id"], c["user"], c["info"]) for c in clients] == [
                (alice.client_id, "alice", {"name": "Alice"}), (bob.client_id, "bob", {"name": "Bob"}),
                (anon.client_id, None, None)]
            assert await push.server.presence_stats("room:a") == {"clients": 3, "users": 2}
            with pytest.raises(ServerApiError, match="keeps no presence") as refused:
                await push.server.presence("news")
            assert refused.value.code.name == "FAILED_PRECONDITION"
        answer = await anon.request({"type": "presence", "id": "p1", "data": {"topic": "room:a"}})
        assert answer["data"]["type"] == "presence"
        assert [c["client_id"] for c in answer["data"]["clients"]] == [alice.client_id, bob.client_id, anon.client_id]
        stats = await anon.request({"type": "presence_stats", "id": "p2", "data": {"topic": "room:a"}})
        assert stats["data"] == {"type": "presence_stats", "topic": "room:a", "clients": 3, "users": 2}
        forbidden = await anon.request({"type": "presence", "id": "p3", "data": {"topic": "user:alice"}})
        assert forbidden["error"]["code"] == "FORBIDDEN"
    finally:
        for client in (alice, bob, anon):
            await client.close()
    async with PushClient(system.push_address) as push:
        assert await until(lambda: _empty(push, "room:a"))


async def presence_of(push: PushClient, topic: str, count: int) -> list | None:
    clients = await push.server.presence(topic)
    return clients if len(clients) == count else None


async def _info_once(push: PushClient, check) -> list | None:  # type: ignore[no-untyped-def]
    nodes = await push.server.info()
    return nodes if check(nodes) else None


async def _channels_are(push: PushClient, pattern: str, expected: dict) -> bool:
    return await push.server.channels(pattern) == expected


async def _empty(push: PushClient, topic: str) -> bool:
    return await push.server.presence(topic) == []


async def test_join_and_leave_arrive_once_per_change_to_those_who_asked(system):
    watcher = await connect(system, "watcher")
    quiet = await connect(system, "quiet", topics="room:b")
    try:
        ack = await watcher.request({"type": "subscribe", "id": "s", "data": {"topics": ["room:b"], "join_leave": True}})
        assert ack["data"] == {"type": "subscribe", "topics": ["room:b"], "join_leave": True}
        own = await next_of(watcher, "join")
        assert (own["topic"], own["data"]["client_id"], own["data"]["user"]) == ("room:b", watcher.client_id, "watcher")
        guest = await connect(system, "guest", topics="room:b")
        joined = await next_of(watcher, "join")
        assert (joined["data"]["client_id"], joined["data"]["info"]) == (guest.client_id, {"name": "Guest"})
        await guest.close()
        left = await next_of(watcher, "leave")
        assert left["data"]["client_id"] == guest.client_id
        await watcher.expect_silence(0.5)
        await quiet.expect_silence(0.1)  # it did not ask
        refused = await quiet.request({"type": "subscribe", "id": "t", "data": {"topics": ["task:1"], "join_leave": True}})
        assert refused["error"]["code"] == "PRESENCE_DISABLED"
    finally:
        await watcher.close()
        await quiet.close()


async def occupancy(backend: WsClient, keys: set[str], count: int) -> list[dict]:
    """The next `count` occupancy events about `keys` (others, e.g. the backend's own, skipped)."""
    seen: list[dict] = []
    while len(seen) < count:
        event = (await next_of(backend, "occupancy"))["data"]
        if event["key"] in keys:
            seen.append(event)
    return sorted(seen, key=lambda e: e["kind"])


async def test_occupancy_events_tell_first_and_last_subscriber_and_user_online(system):
    backend = await connect(system, "backend", topics=OCCUPANCY)
    keys = {"visitor", "room:occ"}
    try:
        visitor = await connect(system, "visitor", topics="room:occ")
        second = await connect(system, "visitor", topics="room:occ")  # neither the first nor the last
        assert await occupancy(backend, keys, 2) == [{"kind": "topic", "key": "room:occ", "state": "occupied"},
                                                     {"kind": "user", "key": "visitor", "state": "online"}]
        await visitor.close()
        await second.close()
        assert await occupancy(backend, keys, 2) == [{"kind": "topic", "key": "room:occ", "state": "vacated"},
                                                     {"kind": "user", "key": "visitor", "state": "offline"}]
        assert [f for f in backend._backlog if f.get("data", {}).get("key") in keys] == []
        with pytest.raises(TimeoutError):
            await occupancy(backend, keys, 1)
    finally:
        await backend.close()


async def test_server_subscribe_unsubscribe_and_disconnect_reach_that_user_only(system):
    carol = await connect(system, "carol")
    dave = await connect(system, "dave")
    try:
        async with PushClient(system.push_address) as push:
            assert await push.server.subscribe("news:carol", user="carol")
            told = await next_of(carol, "ack")
            assert told["data"] == {"type": "subscribe", "topics": ["news:carol"], "server": True}
            await push.publish("news:carol", "headline", {"n": 1}, id="h1")
            assert (await next_of(carol, "headline"))["id"] == "h1"
            assert await until(lambda: _channels_are(push, "news:*", {"news:carol": 1}))
            assert await push.server.unsubscribe("news:carol", client_id=carol.client_id)
            told = await next_of(carol, "ack")
            assert told["data"] == {"type": "unsubscribe", "topics": ["news:carol"], "server": True}
            assert await until(lambda: _channels_are(push, "news:*", {}))
            nodes = await until(lambda: _info_once(push, lambda nodes: nodes[-1]["connections"] == 2))
            assert [n["kind"] for n in nodes] == ["push", "edge"]  # the edges' reports are TTL / 3 old at most
            assert nodes[1]["version"] == nodes[0]["version"] != "" and nodes[1]["uptime_ms"] > 0
            with pytest.raises(ServerApiError, match="exactly one"):
                await push.server.disconnect(user="carol", client_id="x")
            with pytest.raises(ServerApiError, match="4100-4399"):
                await push.server.disconnect(user="carol", code=1000)
            assert await push.server.disconnect(user="carol", code=4101, reason="banned")
        with pytest.raises(Closed) as closed:
            await next_of(carol, "never")
        assert (closed.value.code, closed.value.reason) == (4101, "banned")
        assert (await dave.request({"type": "ping", "id": "still"}))["type"] == "pong"
        await dave.expect_silence(0.3)
    finally:
        await carol.close()
        await dave.close()


async def test_pushctl_server_commands(system):
    erin = await connect(system, "erin", topics="room:cli")
    try:
        listed = await until(lambda: _presence_of_cli(system, "room:cli"))
        assert [(c["client_id"], c["user"], c["info"]) for c in listed] == [(erin.client_id, "erin", {"name": "Erin"})]
        stats = await asyncio.to_thread(pushctl, system, "presence", "room:cli", "--stats")
        assert json_lines(stats.stdout) == [{"topic": "room:cli", "clients": 1, "users": 1}]
        channels = await asyncio.to_thread(pushctl, system, "channels", "room:cl*")
        assert json_lines(channels.stdout) == [{"topic": "room:cli", "subscribers": 1}]
        info = await asyncio.to_thread(pushctl, system, "info")
        assert [n["kind"] for n in json_lines(info.stdout)] == ["push", "edge"]
        subscribed = await asyncio.to_thread(pushctl, system, "subscribe", "news:cli", "--client-id", erin.client_id)
        assert json_lines(subscribed.stdout) == [{"delivered": True}]
        assert (await next_of(erin, "ack"))["data"] == {"type": "subscribe", "topics": ["news:cli"], "server": True}
        unsubscribed = await asyncio.to_thread(pushctl, system, "unsubscribe", "news:cli", "--user", "erin")
        assert json_lines(unsubscribed.stdout) == [{"delivered": True}]
        assert (await next_of(erin, "ack"))["data"] == {"type": "unsubscribe", "topics": ["news:cli"], "server": True}
        for args, message in [
            (("presence", "news"), "presence refused: FAILED_PRECONDITION: news keeps no presence"),
            (("disconnect", "--user", "erin", "--code", "1000"), "use 4010 (the default) or an application code"),
            (("disconnect",), "one of the arguments --user --client-id is required"),
            (("subscribe", "bad topic", "--user", "x"), "may contain only letters"),
        ]:
            result = await asyncio.to_thread(pushctl, system, *args)
            assert result.returncode != 0 and message in result.stderr and result.stdout == ""
            assert len(result.stderr.strip().splitlines()) == 1
        kicked = await asyncio.to_thread(pushctl, system, "disconnect", "--user", "erin", "--reason", "bye")
        assert kicked.returncode == 0
        with pytest.raises(Closed) as closed:
            await next_of(erin, "never")
        assert (closed.value.code, closed.value.reason) == (4010, "bye")
    finally:
        await erin.close()


def json_lines(text: str) -> list:
    return [json.loads(line) for line in text.splitlines()]


async def _presence_of_cli(system: System, topic: str) -> list | None:
    result = await asyncio.to_thread(pushctl, system, "presence", topic)
    return json_lines(result.stdout) or None
