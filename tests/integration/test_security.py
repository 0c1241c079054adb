"""Who may connect, subscribe and publish; the gRPC API's credentials; refused handshakes."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import grpc
import orjson
import pytest
import websockets
from grpc_health.v1 import health_pb2, health_pb2_grpc
from task.v1 import task_service_pb2 as task_pb
from task.v1 import task_service_pb2_grpc as task_grpc

from pushclient import PublishError, PushClient
from tests.conftest import start_system
from tests.support.processes import System
from tests.support.timing import timeout
from tests.support.tokens import SECRET, exp_of, token
from tests.support.wsclient import WsClient

GRPC_TOKEN = "grpc-shared-secret"
RULES = [
    {"pattern": "user:admin", "subscribe": "none", "publish": "none"},
    {"pattern": "user:*", "subscribe": "owner", "publish": "authenticated"},
    {"pattern": "*", "subscribe": "authenticated", "publish": "none"},
]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(
        tmp_path_factory, "secure",
        push_env={"PUSH_AUTH_TOKEN": GRPC_TOKEN},
        task_env={"TASK_AUTH_TOKEN": GRPC_TOKEN, "TASK_PUSH_TOKEN": GRPC_TOKEN},
        edge_env={
            "EDGE_ALLOW_ANONYMOUS": "false",
            "EDGE_DEV_TOKENS": "false",
            "EDGE_GRPC_TOKEN": GRPC_TOKEN,
            "EDGE_ALLOWED_ORIGINS": "https://app.example",
            "EDGE_MAX_CONNECTIONS_PER_USER": "2",
            "EDGE_TASK_CONTROL": "authenticated",
            "EDGE_TOPIC_RULES": json.dumps(RULES),
            "EDGE_HEARTBEAT_CHECK_INTERVAL": "0.2",
            "EDGE_AUTH_TIMEOUT": "2",
            "EDGE_HANDSHAKE_TIMEOUT": "2",
        },
    )
    yield system
    system.stop()


async def closed_with(url: str, first_message: dict | None = None, **kwargs) -> tuple[int, str]:
    """Connect, optionally send one message, and return the close code and reason the edge sent."""
    async with websockets.connect(url, **kwargs) as connection:
        if first_message is not None:
            await connection.send(orjson.dumps(first_message).decode())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(connection.recv(), timeout(5))
    assert closed.value.rcvd is not None, "the edge must close with a code"
    return closed.value.rcvd.code, closed.value.rcvd.reason


def unsigned(claims: dict, alg: str = "none") -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(claims)}."


async def test_bad_tokens_are_refused_with_their_close_codes(secure: System):
    url = secure.ws_url + "/ws?token="
    exp = int(time.time()) + 3600
    assert await closed_with(url + token("mallory", secret="not-the-secret-but-long-enough-for-hs256-0123456789")) == (
        4003, "invalid token: Signature verification failed")
    assert (await closed_with(url + token("alice", ttl=-60)))[0] == 4001
    assert await closed_with(url + unsigned({"sub": "alice", "exp": exp})) == (
        4003, "token algorithm 'none' is not accepted")
    hs512 = __import__("jwt").encode({"sub": "alice", "exp": exp}, SECRET, algorithm="HS512")
    assert (await closed_with(url + hs512))[0] == 4003
    assert (await closed_with(url + "garbage"))[0] == 4003
    no_sub = __import__("jwt").encode({"exp": exp}, SECRET, algorithm="HS256")
    assert (await closed_with(url + no_sub))[0] == 4003
    # Without ?token=, the first message must authenticate.
    assert (await closed_with(secure.ws_url + "/ws", {"type": "ping", "id": "p"}))[0] == 4003
    assert (await closed_with(secure.ws_url + "/ws", {"type": "auth", "data": {"token": "x.y.z"}}))[0] == 4003
    assert (await closed_with(secure.ws_url + "/ws"))[0] == 4003  # silence: closed after EDGE_AUTH_TIMEOUT


async def test_a_close_reason_too_long_for_a_close_frame_is_cut(secure: System):
    """The reason quotes the token's `alg`, whose length the client chooses: cut to 123 bytes of UTF-8
    at a character boundary, so the client still gets its close code (not 1006)."""
    exp = int(time.time()) + 3600
    expected = ("token algorithm '" + "é" * 200)  # 17 bytes, then 2 per "é": 51 of them fit in 120
    code, reason = await closed_with(secure.ws_url + "/ws?token=" + unsigned({"sub": "alice", "exp": exp}, "é" * 200))
    assert (code, reason) == (4003, expected[:17 + 51] + "\u2026")
    assert len(reason.encode()) == 122
    # The same through the first message (a refusal after the handshake, from another close site).
    code, reason = await closed_with(secure.ws_url + "/ws", {"type": "auth", "data": {
        "token": unsigned({"sub": "alice", "exp": exp}, "A" * 200)}})
    assert (code, reason) == (4003, "token algorithm '" + "A" * 103 + "\u2026")


async def test_first_message_authentication(secure: System):
    async with websockets.connect(secure.ws_url + "/ws") as connection:
        await connection.send(orjson.dumps({"type": "auth", "data": {"token": token("alice")}}).decode())
        welcome = orjson.loads(await asyncio.wait_for(connection.recv(), timeout(5)))
    assert welcome["type"] == "connected" and welcome["data"]["user"] == "alice"


async def test_user_topics_belong_to_their_user_and_forbidden_requests_keep_the_connection(secure: System):
    alice_token = token("alice")
    alice = await WsClient.connect(secure.ws_url, token=alice_token, topics="user:alice,user:bob")
    bob = await WsClient.connect(secure.ws_url, token=token("bob"), topics="user:bob")
    try:
        assert alice.welcome["data"] == {"client_id": alice.client_id, "topics": [], "user": "alice",
                                         "expires_at": exp_of(alice_token)}
        refused = await alice.recv()
        assert refused["type"] == "error" and refused["error"]["code"] == "FORBIDDEN"
        assert "user:bob" in refused["error"]["message"]

        answer = await alice.request({"type": "subscribe", "id": "s1", "data": {"topics": ["user:bob"]}})
        assert (answer["type"], answer["id"], answer["error"]["code"]) == ("error", "s1", "FORBIDDEN")
        answer = await alice.request({"type": "subscribe", "id": "s2", "data": {"topics": ["user:alice"]}})
        assert (answer["type"], answer["data"]["topics"]) == ("ack", ["user:alice"])

        # Publishing through the edge follows the rules too.
        answer = await alice.request({"type": "send_message", "id": "m1",
                                      "data": {"recipient": "admin", "content": "hi"}})
        assert answer["error"]["code"] == "FORBIDDEN"
        answer = await alice.request({"type": "send_message", "id": "m2", "data": {"recipient": "bob", "content": "hi"}})
        assert answer["type"] == "ack"
        note = await bob.recv()
        assert note["topic"] == "user:bob"
        assert (note["data"]["from"], note["data"]["from_user"]) == (alice.client_id, "alice")
        assert (await alice.request({"type": "ping", "id": "still"}))["type"] == "pong"
    finally:
        await alice.close()
        await bob.close()


async def test_expired_session_is_closed_with_4001(secure: System):
    code, reason = await closed_with(secure.ws_url + "/ws?token=" + token("carol", ttl=1.5))
    assert (code, reason) == (4001, "token expired")


async def test_connections_per_user_are_limited(secure: System):
    first = await WsClient.connect(secure.ws_url, token=token("dora"))
    second = await WsClient.connect(secure.ws_url, token=token("dora"))
    try:
        assert (await closed_with(secure.ws_url + "/ws?token=" + token("dora"))) == (4029, "too many connections")
        other = await WsClient.connect(secure.ws_url, token=token("erin"))
        await other.close()
    finally:
        await first.close()
        await second.close()


def handshake_request(path: str, host: str, extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


async def raw_exchange(port: int, request: bytes, source: str = "127.0.0.1") -> bytes:
    """Send `request` on a raw TCP connection from `source` and return everything the edge writes until
    it closes the connection (generous bound: a test fails by assertion, not by hanging)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(request)
        received = b""
        while chunk := await asyncio.wait_for(reader.read(65536), timeout(10)):
            received += chunk
        return received
    finally:
        writer.close()


def http_answer(raw: bytes) -> tuple[int, bytes]:
    """(status, body) of a raw HTTP answer that closed the connection."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r\nconnection: close" in head.lower(), head
    return int(head.split(b" ", 2)[1]), body


async def test_foreign_origin_is_refused_at_the_handshake(secure: System):
    url = secure.ws_url + "/ws?token=" + token("alice")
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    async with websockets.connect(url, origin="https://app.example") as connection:
        assert orjson.loads(await connection.recv())["type"] == "connected"
    # With an allow-list, only the list counts: not even the edge's own host.
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, origin=f"http://127.0.0.1:{secure.edge_port}")
    assert refused.value.response.status_code == 403


async def test_dns_rebinding_origin_is_refused(secure: System):
    """A page on evil:18000 whose name now resolves to the edge: Host and Origin agree, both the attacker's."""
    answer = await raw_exchange(secure.edge_port, handshake_request(
        "/ws?token=" + token("alice"), "evil:18000", "Origin: http://evil:18000\r\n"))
    assert answer.startswith(b"HTTP/1.1 403 "), answer[:200]
    assert answer.endswith(b"origin not allowed")


async def test_own_host_origin_is_allowed_without_an_allow_list(system: System):
    async with websockets.connect(system.ws_url + "/ws", origin=f"http://127.0.0.1:{system.edge_port}") as connection:
        assert orjson.loads(await connection.recv())["type"] == "connected"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(system.ws_url + "/ws", origin="https://evil.example")
    assert refused.value.response.status_code == 403


async def test_task_control_needs_a_user_over_http(secure: System):
    import urllib.request

    def post(headers: dict) -> int:
        request = urllib.request.Request(secure.http_url + "/api/tasks", data=b'{"params": {"interval": 0}}',
                                         method="POST", headers={"content-type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert await asyncio.to_thread(post, {}) == 401  # anonymous connections are off: a token is required
    assert await asyncio.to_thread(post, {"authorization": "Bearer nonsense"}) == 401
    assert await asyncio.to_thread(post, {"authorization": f"Bearer {token('alice')}"}) == 201


async def test_a_task_start_is_answered_before_its_body_is_read_and_its_body_is_bounded(secure: System):
    """A body parameter was read and parsed whole before the credential was checked: anyone could make
    the edge hold 100 MB (and parse it) for a 401."""
    host = f"127.0.0.1:{secure.edge_port}"

    def start(headers: str, length: int) -> bytes:
        return (f"POST /api/tasks HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {length}\r\nConnection: close\r\n{headers}\r\n").encode()

    # The headers alone: answered at once, though 100 MB are announced and none sent.
    status, body = http_answer(await raw_exchange(secure.edge_port, start("", 100_000_000)))
    assert (status, orjson.loads(body)) == (401, {"detail": "authentication required: Authorization: Bearer <token>"})
    bearer = f"Authorization: Bearer {token('alice')}\r\n"
    status, body = http_answer(await raw_exchange(secure.edge_port, start(bearer, 100_000_000)))
    assert (status, orjson.loads(body)) == (413, {"detail": "body over 65536 bytes"})
    for sent, detail in ((b"[1]", "the body must be a JSON object"), (b"{", "the body is not JSON: ")):
        raw = await raw_exchange(secure.edge_port, start(bearer, len(sent)) + sent)
        status, body = http_answer(raw)
        assert status == 400 and orjson.loads(body)["detail"].startswith(detail), body


def http_get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_task_reads_need_a_token_where_anonymous_connections_are_off(secure: System):
    bearer = {"authorization": f"Bearer {token('alice')}"}
    status, body = await asyncio.to_thread(http_get, secure.http_url + "/api/tasks")
    assert (status, orjson.loads(body)) == (401, {"detail": "authentication required: Authorization: Bearer <token>"})
    status, body = await asyncio.to_thread(http_get, secure.http_url + "/api/tasks/anything")
    assert (status, orjson.loads(body)) == (401, {"detail": "authentication required: Authorization: Bearer <token>"})
    forged = {"authorization": "Bearer " + token("alice", secret="not-the-secret-but-long-enough-for-hs256-0123456789")}
    status, body = await asyncio.to_thread(http_get, secure.http_url + "/api/tasks", forged)
    assert (status, orjson.loads(body)) == (401, {"detail": "invalid token: Signature verification failed"})
    status, body = await asyncio.to_thread(http_get, secure.http_url + "/api/tasks", bearer)
    assert status == 200 and "tasks" in orjson.loads(body)
    status, body = await asyncio.to_thread(http_get, secure.http_url + "/api/tasks/nope", bearer)
    assert status == 404


async def test_metrics_and_api_docs_are_not_on_the_public_port(secure: System):
    for path in ("/metrics", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        status, _ = await asyncio.to_thread(http_get, secure.http_url + path)
        assert status == 404, path
    status, body = await asyncio.to_thread(http_get, secure.edge_metrics_url)
    assert status == 200 and b"\nws_edge_connections " in body


async def test_grpc_without_credentials_is_unauthenticated(secure: System):
    async with PushClient(secure.push_address) as anonymous:
        with pytest.raises(PublishError) as refused:
            await anonymous.publish("news", "t", {})
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    async with PushClient(secure.push_address, token="wrong") as wrong:
        with pytest.raises(PublishError) as refused:
            await wrong.publish("news", "t", {})
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    async with PushClient(secure.push_address, token=GRPC_TOKEN) as allowed:
        assert (await allowed.publish("news", "t", {})).id
    async with grpc.aio.insecure_channel(secure.task_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await task_grpc.TaskServiceStub(channel).ListTasks(task_pb.ListTasksRequest())
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need no credentials


async def test_tokens_are_never_logged(secure: System):
    secret_token = token("logged-user")
    client = await WsClient.connect(secure.ws_url, token=secret_token)
    await client.close()
    await asyncio.sleep(0.3)
    log = secure.edge.log_path.read_text()
    assert "token=[redacted]" in log
    assert secret_token not in log and secret_token.split(".")[2] not in log


async def test_percent_encoded_token_parameter_is_never_logged(secure: System):
    """`?%74oken=` is `token` to the edge (it decodes parameter names): it authenticates, so it must be
    redacted too."""
    secret_token = token("encoded-user")
    async with websockets.connect(secure.ws_url + "/ws?client_id=enc-1&%74oken=" + secret_token) as connection:
        welcome = orjson.loads(await asyncio.wait_for(connection.recv(), timeout(5)))
    assert welcome["data"]["user"] == "encoded-user"
    log_path = secure.edge.log_path
    deadline = time.monotonic() + timeout(10)
    while "client_id=enc-1&%74oken=[redacted]" not in log_path.read_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    log = log_path.read_text()
    assert "client_id=enc-1&%74oken=[redacted]" in log
    assert secret_token not in log and secret_token.split(".")[1] not in log and secret_token.split(".")[2] not in log


# --- before the handshake (issue 16, item 3) -----------------------------------------------------------


async def test_a_request_not_finished_in_time_is_answered_408_and_closed(secure: System):
    """EDGE_HANDSHAKE_TIMEOUT (2 s here): uvicorn alone keeps a half-sent request forever."""
    for partial in (b"GET /ws?token=x HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\n", b""):
        started = time.monotonic()
        answer = await raw_exchange(secure.edge_port, partial)
        assert http_answer(answer) == (408, b"request not complete in 2 s")
        assert time.monotonic() - started >= 1.9
    # A kept-alive connection: its next request gets the same deadline.
    started = time.monotonic()
    answer = await raw_exchange(secure.edge_port, b"GET /readyz HTTP/1.1\r\nHost: edge\r\n\r\nGET /readyz HTTP/1.1\r\n")
    first, _, rest = answer.partition(b'{"ready":true}')
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert http_answer(rest) == (408, b"request not complete in 2 s")
    assert time.monotonic() - started >= 1.9


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "guarded", edge_env={
        "EDGE_HANDSHAKE_TIMEOUT": "60",  # the held sockets below stay held for the whole test
        "EDGE_MAX_PENDING_PER_IP": "5",
        "EDGE_MAX_PENDING_CONNECTIONS": "10",
        # The WebSocket layer's own line limit, below ours (8000): what it refuses still gets an answer.
        "WEBSOCKETS_MAX_LINE_LENGTH": "2000",
    })
    yield system
    system.stop()


async def pending_handshakes(system: System) -> int | None:
    """/healthz's count of connections before their first request; None while the edge's total is full
    (then /healthz, too, is refused: 503)."""
    status, body = await asyncio.to_thread(http_get, system.http_url + "/healthz")
    assert status in (200, 503), status
    return orjson.loads(body)["pending_handshakes"] if status == 200 else None


async def hold_silent(port: int, source: str, count: int) -> list[asyncio.StreamWriter]:
    held = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        held.append(writer)
    return held


async def wait_pending(system: System, expected: int) -> None:
    deadline = time.monotonic() + timeout(10)
    while (now := await pending_handshakes(system)) != expected:
        assert time.monotonic() < deadline, f"{now} pending handshakes, expected {expected}"
        await asyncio.sleep(0.05)


async def test_pending_connections_are_bounded_per_address_and_in_total(guarded: System):
    port = guarded.edge_port
    held = await hold_silent(port, "127.0.0.2", 5)
    try:
        await wait_pending(guarded, 5)  # /healthz (from 127.0.0.1) answers while 127.0.0.2 holds its maximum
        answer = await raw_exchange(port, b"", source="127.0.0.2")  # a 6th: answered and closed at once
        assert http_answer(answer) == (429, b"too many connections from this address are still in their handshake")
        assert await pending_handshakes(guarded) == 5
        # A real client from another address still gets through.
        async with websockets.connect(guarded.ws_url + "/ws") as connection:
            assert orjson.loads(await connection.recv())["type"] == "connected"
        held += await hold_silent(port, "127.0.0.3", 4)
        await wait_pending(guarded, 9)
        # The 10th fills the edge's total (/healthz, too, would now be refused): the edge takes
        # connections in the order they were made, so the next one, from a fourth address, is over it.
        held += await hold_silent(port, "127.0.0.3", 1)
        answer = await raw_exchange(port, b"", source="127.0.0.4")  # over the edge's total
        assert http_answer(answer) == (503, b"too many connections are still in their handshake")
    finally:
        for writer in held:
            writer.close()
    await wait_pending(guarded, 0)  # closed sockets give their slots back


async def test_an_oversized_request_head_is_answered_and_closed(guarded: System):
    port = guarded.edge_port
    long_url = "/ws?topics=" + "a" * 9000
    assert http_answer(await raw_exchange(port, handshake_request(long_url, "edge"))) == (
        414, b"URL over 8000 bytes")
    assert http_answer(await raw_exchange(port, f"GET /healthz?{'a' * 9000} HTTP/1.1\r\nHost: e\r\n\r\n".encode())) == (
        414, b"URL over 8000 bytes")
    assert http_answer(await raw_exchange(port, handshake_request("/ws", "edge", f"X-Big: {'b' * 8100}\r\n"))) == (
        431, b"header line over 8000 bytes")
    many = "".join(f"X-{n}: v\r\n" for n in range(101))
    assert http_answer(await raw_exchange(port, handshake_request("/ws", "edge", many))) == (
        431, b"more than 100 headers")
    # Within our bounds but over the WebSocket layer's (WEBSOCKETS_MAX_LINE_LENGTH=2000 here): its own
    # answer is written and the socket closed (uvicorn alone writes nothing and keeps the socket).
    status, body = http_answer(await raw_exchange(port, handshake_request("/ws?topics=" + "a" * 3000, "edge")))
    assert (status, body) == (
        414, b"Failed to open a WebSocket connection: read 3026 bytes, expected no more than 2000 bytes.\n")
    assert await pending_handshakes(guarded) == 0


@pytest.fixture
def throttled(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "throttled",
                          edge_env={"EDGE_CONNECT_RATE_PER_IP": "5", "EDGE_CONNECT_BURST_PER_IP": "10",
                                    "EDGE_MAX_CONNECTIONS_PER_IP": "6"})
    yield system
    system.stop()


async def test_connection_attempts_and_connections_per_address_are_limited(throttled: System):
    url = throttled.ws_url + "/ws"
    held = [await websockets.connect(url) for _ in range(6)]
    try:
        assert (await closed_with(url))[0] == 4029  # a 7th connection from the same address
    finally:
        for connection in held:
            await connection.close()
    statuses = []
    for _ in range(10):
        try:
            async with websockets.connect(url):
                statuses.append(101)
        except websockets.InvalidStatus as exc:
            statuses.append(exc.response.status_code)
    assert 429 in statuses, statuses  # the burst of 10 attempts per address is spent


async def test_a_forwarded_address_is_not_believed_from_a_peer_that_is_no_trusted_proxy(throttled: System):
    """uvicorn believes X-Forwarded-For from 127.0.0.1 by default: a client on the host chose its own
    address for every per-address limit (behind a proxy elsewhere, every browser had the proxy's)."""
    url = throttled.ws_url + "/ws"
    held = [await websockets.connect(url, additional_headers={"X-Forwarded-For": f"10.0.0.{n}"}) for n in range(6)]
    try:
        assert (await closed_with(url, additional_headers={"X-Forwarded-For": "10.0.0.99"}))[0] == 4029
    finally:
        for connection in held:
            await connection.close()


@pytest.fixture
def behind_a_proxy(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "behind-a-proxy",
                          edge_env={"EDGE_MAX_CONNECTIONS_PER_IP": "2", "EDGE_TRUSTED_PROXIES": "127.0.0.0/8, ::1"})
    yield system
    system.stop()


async def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_limits(behind_a_proxy: System):
    url = behind_a_proxy.ws_url + "/ws"
    alice = {"additional_headers": {"X-Forwarded-For": "198.51.100.7"}}
    held = [await websockets.connect(url, **alice) for _ in range(2)]
    try:
        assert (await closed_with(url, **alice))[0] == 4029
        async with websockets.connect(url, additional_headers={"X-Forwarded-For": "198.51.100.8"}) as other:
            assert orjson.loads(await other.recv())["type"] == "connected"
    finally:
        for connection in held:
            await connection.close()


@pytest.fixture
def crowded(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "crowded", edge_env={
        "EDGE_ALLOW_ANONYMOUS": "false", "EDGE_MAX_CONNECTIONS_PER_IP": "3", "EDGE_AUTH_TIMEOUT": "30"})
    yield system
    system.stop()


async def test_sockets_still_waiting_to_authenticate_count_against_their_address(crowded: System):
    """The class of issue 16.3 after the upgrade: a WebSocket that never sends its `auth` frame holds
    a descriptor for the auth timeout; such sockets count against the address's connection limit."""
    url = crowded.ws_url + "/ws"
    silent = [await websockets.connect(url) for _ in range(3)]
    try:
        assert await closed_with(url) == (4029, "too many connections")
    finally:
        for connection in silent:
            await connection.close()
    for _ in range(100):  # their slots are given back when they go
        if await asyncio.to_thread(health_connections, crowded) == 0:
            break
        await asyncio.sleep(0.05)
    assert (await closed_with(url, {"type": "auth", "data": {"token": "forged"}}))[0] == 4003


def health_connections(system: System) -> int:
    return json.loads(http_get(system.http_url + "/healthz")[1])["connections"]


# --- what any deployment must refuse (portable: these also run against a compose stack) ---------------


@pytest.mark.portable
async def test_the_system_under_test_refuses_forged_and_expired_tokens_and_foreign_user_topics(system: System):
    url = system.ws_url + "/ws?token="
    assert await closed_with(url + token("mallory", secret="not-the-secret-but-long-enough-for-hs256-0123456789")) == (
        4003, "invalid token: Signature verification failed")
    assert (await closed_with(url + token("alice", ttl=-60)))[0] == 4001
    assert (await closed_with(url + unsigned({"sub": "alice", "exp": int(time.time()) + 3600})))[0] == 4003
    if system.anonymous_allowed:
        async with websockets.connect(system.ws_url + "/ws") as connection:
            welcome = orjson.loads(await asyncio.wait_for(connection.recv(), timeout(5)))
        assert welcome["data"]["user"] is None
    else:  # a deployment: without a token, the first message must authenticate
        assert await closed_with(system.ws_url + "/ws", {"type": "ping", "id": "p"}) == (
            4003, "authentication required: send an `auth` message first")
    alice = await WsClient.connect(system.ws_url, token=token("alice"))
    try:
        refused = await alice.request({"type": "subscribe", "id": "s", "data": {"topics": ["user:bob"]}})
        assert refused["error"]["code"] == "FORBIDDEN"
        accepted = await alice.request({"type": "subscribe", "id": "s2", "data": {"topics": ["user:alice"]}})
        assert accepted["type"] == "ack"
    finally:
        await alice.close()


@pytest.mark.portable
async def test_the_system_under_test_keeps_metrics_docs_and_task_reads_off_the_public_port(system: System):
    for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
        status, _ = await asyncio.to_thread(http_get, system.http_url + path)
        assert status == 404, path
    status, _ = await asyncio.to_thread(http_get, system.http_url + "/api/tasks")
    assert status == (200 if system.anonymous_allowed else 401)
    status, _ = await asyncio.to_thread(http_get, system.http_url + "/api/tasks",
                                        {"authorization": f"Bearer {token('alice')}"})
    assert status == 200


@pytest.mark.portable
async def test_the_system_under_test_grpc_credentials(system: System):
    async with PushClient(system.push_address) as anonymous:
        if system.grpc_token is None:
            assert (await anonymous.publish("sec:open", "t", {})).id
        else:
            with pytest.raises(PublishError, match="UNAUTHENTICATED"):
                await anonymous.publish("sec:open", "t", {})
    async with PushClient(system.push_address, token=system.grpc_token) as publisher:
        assert (await publisher.publish("sec:open", "t", {})).id
