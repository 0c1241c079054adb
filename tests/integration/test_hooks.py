"""Backend hooks against the example backend (examples/hooks_backend.py) as a real process, over gRPC,
with a real edge: each hook's allow, refuse, changed data, time-out and backend-down answers, and the
bound of calls in flight. The failure mode holds everywhere: nothing is allowed that the backend did
not allow (connect: 4503; subscribe, publish, rpc: UNAVAILABLE; refresh: not extended, 4001 at exp)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import orjson
import pytest
import websockets
from hooks.v1 import hooks_pb2 as pb
from hooks.v1 import hooks_pb2_grpc as pb_grpc

from tests.conftest import start_system
from tests.support.hooks_backend import hooks_backend
from tests.support.processes import ServiceProcess, System, wait_grpc_serving
from tests.support.timing import timeout
from tests.support.tokens import token
from tests.support.wsclient import TRANSPORTS, Closed, WebSocketClosed, WsClient, connect_client, parse_server_frame

HOOK_TIMEOUT = 3  # EDGE_HOOK_TIMEOUT; the backend's slow answers take 60 s
SESSION_TTL = 12  # the example backend's cookie sessions and refreshes
NOTICE = 8  # EDGE_TOKEN_REFRESH_NOTICE
RULES = [{"pattern": "chat:*", "subscribe": "authenticated", "publish": "authenticated"},
         {"pattern": "user:*", "subscribe": "owner", "publish": "authenticated"},
         {"pattern": "*", "subscribe": "public", "publish": "none"}]


class Hooked:
    def __init__(self, system: System, backend: ServiceProcess, address: str) -> None:
        self.system, self.backend, self.address = system, backend, address

    async def stats(self) -> dict:
        async with grpc.aio.insecure_channel(self.address) as channel:
            reply = await pb_grpc.BackendHooksStub(channel).RPC(pb.RPCRequest(method="stats"), timeout=5)
        return orjson.loads(reply.result.data)


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hooked]:
    workdir = tmp_path_factory.mktemp("hooks")
    with hooks_backend(workdir, EXAMPLE_SLOW_SECONDS="60", EXAMPLE_SESSION_TTL=str(SESSION_TTL)) as (backend, address):
        system = start_system(tmp_path_factory, "hooked", edge_env={
            "EDGE_HOOKS_ADDRESS": address, "EDGE_HOOK_CONNECT": "true", "EDGE_HOOK_REFRESH": "true",
            "EDGE_HOOK_RPC": "true", "EDGE_HOOK_RPC_UNKNOWN_TYPES": "true", "EDGE_HOOK_SUBSCRIBE_TOPICS": "room:*",
            "EDGE_HOOK_PUBLISH_TOPICS": "chat:*", "EDGE_HOOK_TIMEOUT": str(HOOK_TIMEOUT),
            "EDGE_HOOK_MAX_IN_FLIGHT": "2", "EDGE_TOKEN_REFRESH_NOTICE": str(NOTICE),
            "EDGE_TOPIC_RULES": json.dumps(RULES)})
        yield Hooked(system, backend, address)
        system.stop()


async def connect(hooked: Hooked, cookie: str | None = None, **params: str) -> WsClient:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    headers = {"Cookie": cookie} if cookie else {}
    connection = await websockets.connect(f"{hooked.system.ws_url}/ws?{query}", additional_headers=headers)
    try:
        welcome = parse_server_frame(await asyncio.wait_for(connection.recv(), timeout(15)))
    except websockets.ConnectionClosed as exc:
        raise WebSocketClosed(exc) from None
    assert welcome["type"] == "connected", welcome
    return WsClient(connection, welcome)


async def refused(hooked: Hooked, cookie: str | None = None, **params: str) -> Closed:
    with pytest.raises(Closed) as caught:
        await connect(hooked, cookie, **params)
    return caught.value


@pytest.fixture
async def clients() -> AsyncIterator[list[WsClient]]:
    opened: list[WsClient] = []
    yield opened
    for client in opened:
        await client.close()


# --- Connect -------------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_connect_allows_a_cookie_session_without_a_token(hooked: Hooked, clients, transport: str):
    cookie = "theme=dark; session=carol"
    carol = await (connect(hooked, cookie) if transport == "websocket"  # (connect_client sends no headers there)
                   else connect_client(transport, hooked.system, headers={"Cookie": cookie}))
    clients.append(carol)
    data = carol.welcome["data"]
    assert data["user"] == "carol" and data["topics"] == ["inbox:carol"]  # the backend's extra topic
    assert abs(data["expires_at"] - (time.time() + SESSION_TTL)) < 3
    who = await carol.request({"type": "rpc", "id": "w", "data": {"method": "whoami"}})
    assert who["data"] == {"type": "rpc", "data": {"user": "carol", "client_id": carol.client_id,
                                                   "info": {"via": "cookie", "transport": transport}}}


async def test_connect_gets_the_token_claims(hooked: Hooked, clients):
    alice = await connect(hooked, token=token("alice"))
    clients.append(alice)
    assert alice.welcome["data"]["user"] == "alice" and alice.welcome["data"]["topics"] == ["inbox:alice"]
    who = await alice.request({"type": "rpc", "id": "w", "data": {"method": "whoami"}})
    assert who["data"]["data"]["info"] == {"via": "token", "transport": "websocket"}


async def test_connect_refused_closes_4003(hooked: Hooked):
    closed = await refused(hooked, "session=banned-bob")
    assert (closed.code, closed.reason) == (4003, "connect refused: banned-bob is banned")
    closed = await refused(hooked)
    assert (closed.code, closed.reason) == (4003, "connect refused: no session cookie and no token")


async def test_connect_timing_out_closes_4503(hooked: Hooked):
    started = time.monotonic()
    closed = await refused(hooked, "session=slow-sam")
    assert (closed.code, closed.reason) == (4503, f"connect hook unavailable: connect hook timed out after {HOOK_TIMEOUT} s")
    assert time.monotonic() - started >= HOOK_TIMEOUT - 0.1


# --- Subscribe -----------------------------------------------------------------------------------

async def test_subscribe_allow_refuse_and_time_out(hooked: Hooked, clients):
    dave = await connect(hooked, "session=dave")
    clients.append(dave)
    ack = await dave.request({"type": "subscribe", "id": "s1", "data": {"topics": ["room:open-1", "lobby"]}})
    assert ack["data"] == {"type": "subscribe", "topics": ["room:open-1", "lobby"]}
    error = await dave.request({"type": "subscribe", "id": "s2", "data": {"topics": ["room:vip"]}})
    assert error["error"] == {"code": "FORBIDDEN", "message": "room:vip: members only"}
    ack = await dave.request({"type": "subscribe", "id": "s3",
                              "data": {"topics": ["room:vip"], "data": {"password": "open-sesame"}}})
    assert ack["data"] == {"type": "subscribe", "topics": ["room:vip"]}
    error = await dave.request({"type": "subscribe", "id": "s4", "data": {"topics": ["room:slow"]}}, wait=15)
    assert error["error"] == {"code": "UNAVAILABLE", "message": f"room:slow: subscribe hook timed out after {HOOK_TIMEOUT} s"}
    pong = await dave.request({"type": "ping", "id": "p"})  # the connection goes on
    assert pong["type"] == "pong"


# --- Publish -------------------------------------------------------------------------------------

async def test_publish_allow_changed_data_refuse_and_time_out(hooked: Hooked, clients):
    erin = await connect(hooked, "session=erin")
    frank = await connect(hooked, "session=frank")
    clients.extend([erin, frank])
    await frank.request({"type": "subscribe", "id": "s", "data": {"topics": ["chat:1"]}})
    ack = await erin.request({"type": "publish", "id": "p1", "data": {"topic": "chat:1", "data": {"text": "hello"}}})
    assert ack["data"]["type"] == "publish" and ack["data"]["topic"] == "chat:1"
    ack2 = await erin.request({"type": "publish", "id": "p2", "data": {"topic": "chat:1", "type": "said",
                                                                      "data": {"text": "darn it"}}})
    [first, second] = await frank.messages(2)
    assert (first["type"], first["data"], first["id"]) == ("message", {"text": "hello"}, ack["data"]["message_id"])
    assert (second["type"], second["data"], second["id"]) == ("said", {"text": "d**n it"}, ack2["data"]["message_id"])
    error = await erin.request({"type": "publish", "id": "p3", "data": {"topic": "chat:1", "data": "buy spam"}})
    assert error["error"] == {"code": "FORBIDDEN", "message": "looks like spam"}
    error = await erin.request({"type": "publish", "id": "p4", "data": {"topic": "news", "data": 1}})
    assert error["error"] == {"code": "FORBIDDEN", "message": "not allowed to publish on news"}  # the rules first
    error = await erin.request({"type": "publish", "id": "p5", "data": {"topic": "chat:slow", "data": 1}}, wait=15)
    assert error["error"] == {"code": "UNAVAILABLE", "message": f"publish hook timed out after {HOOK_TIMEOUT} s"}
    await frank.expect_silence(0.5)  # refused and timed-out publishes published nothing


# --- RPC -----------------------------------------------------------------------------------------

async def test_rpc_and_unknown_types_go_to_the_backend(hooked: Hooked, clients):
    gina = await connect(hooked, "session=gina")
    clients.append(gina)
    ack = await gina.request({"type": "rpc", "id": "r1", "data": {"method": "echo", "data": {"n": [1, 2]}}})
    assert ack == {"type": "ack", "id": "r1", "timestamp": ack["timestamp"],
                   "data": {"type": "rpc", "data": {"n": [1, 2]}}}
    error = await gina.request({"type": "custom_thing", "id": "c1", "data": {}})
    assert error["error"] == {"code": "NOT_FOUND", "message": "no method 'custom_thing'"}
    ack = await gina.request({"type": "echo", "id": "e1", "data": {"x": 1}})  # a type without a handler: the hook
    assert ack["data"] == {"type": "echo", "data": {"x": 1}}
    error = await gina.request({"type": "rpc", "id": "r2", "data": {"method": "sleep", "data": {"seconds": 60}}},
                               wait=15)
    assert error["error"] == {"code": "UNAVAILABLE", "message": f"rpc hook timed out after {HOOK_TIMEOUT} s"}


async def test_calls_beyond_the_bound_in_flight_are_refused_at_once(hooked: Hooked, clients):
    users = [await connect(hooked, f"session=bound-{i}") for i in range(3)]
    clients.extend(users)
    slow = {"type": "rpc", "data": {"method": "sleep", "data": {"seconds": 2}}}
    for i, user in enumerate(users[:2]):
        await user.send({**slow, "id": f"slow{i}"})
    deadline = time.monotonic() + timeout(10)
    while (await hooked.stats())["in_flight"].get("rpc", 0) < 2:
        assert time.monotonic() < deadline, "the two slow calls never reached the backend"
        await asyncio.sleep(0.05)
    started = time.monotonic()
    error = await users[2].request({"type": "rpc", "id": "third", "data": {"method": "echo", "data": 1}})
    assert error["error"] == {"code": "UNAVAILABLE", "message": "rpc hook: 2 calls in flight already"}
    assert time.monotonic() - started < 1.5  # refused at once, not queued
    for i, user in enumerate(users[:2]):
        ack = await user.recv(wait=10)
        assert ack["id"] == f"slow{i}" and ack["data"] == {"type": "rpc", "data": "slept"}
    assert (await hooked.stats())["most_in_flight"]["rpc"] == 2
    ack = await users[2].request({"type": "rpc", "id": "after", "data": {"method": "echo", "data": 2}})
    assert ack["data"] == {"type": "rpc", "data": 2}  # slots are given back


# --- Refresh -------------------------------------------------------------------------------------

async def test_refresh_hook_keeps_a_cookie_session_alive_and_a_refusal_ends_it_4001(hooked: Hooked, clients):
    hank = await connect(hooked, "session=hank")
    ivy = await connect(hooked, "session=expired-ivy")  # her refresh is refused
    leo = await connect(hooked, "session=lazy-leo")  # his refresh times out
    clients.extend([hank, ivy, leo])
    first_exp = hank.welcome["data"]["expires_at"]
    for user in (ivy, leo):  # told (refresh_required), then closed 4001 at exp: never extended
        exp = user.welcome["data"]["expires_at"]
        notice = await user.recv(wait=SESSION_TTL)
        assert notice["type"] == "refresh_required" and notice["data"] == {"expires_at": exp}
        with pytest.raises(Closed) as caught:
            await user.recv(wait=SESSION_TTL)
        assert (caught.value.code, caught.value.reason) == (4001, "token expired")
        assert time.time() >= exp - 1
    # hank's was extended by the backend without a word to him; he is still here past his first exp
    while time.time() < first_exp + 1:
        await asyncio.sleep(0.5)
    pong = await hank.request({"type": "ping", "id": "alive"})
    assert pong["type"] == "pong"
    assert (await hooked.stats())["calls"]["refresh"] >= 2


# --- the backend down (last: it stops the backend) -------------------------------------------------

async def test_backend_down_allows_nothing(hooked: Hooked, clients):
    jack = await connect(hooked, "session=jack")
    clients.append(jack)
    hooked.backend.stop()
    closed = await refused(hooked, "session=kim")
    assert closed.code == 4503 and closed.reason.startswith("connect hook unavailable: connect hook UNAVAILABLE")
    for frame in ({"type": "subscribe", "id": "s", "data": {"topics": ["room:open-2"]}},
                  {"type": "publish", "id": "p", "data": {"topic": "chat:1", "data": 1}},
                  {"type": "rpc", "id": "r", "data": {"method": "echo"}}):
        error = await jack.request(frame, wait=15)
        assert error["error"]["code"] == "UNAVAILABLE", error
    assert jack.connection.state is websockets.protocol.State.OPEN
    # the backend back on its port: the edge's channel reconnects by itself (backoff at most 2 s)
    hooked.backend.start()
    await wait_grpc_serving(hooked.address, hooked.backend)
    deadline = time.monotonic() + timeout(15)
    for attempt in range(1000):
        answer = await jack.request({"type": "rpc", "id": f"again{attempt}", "data": {"method": "echo", "data": 7}})
        if answer["type"] == "ack":
            assert answer["data"] == {"type": "rpc", "data": 7}
            break
        assert answer["error"]["code"] == "UNAVAILABLE" and time.monotonic() < deadline, answer
        await asyncio.sleep(0.2)
