"""push-client.js in a real page: handlers, subscriptions, batches, acknowledgements, reconnect schedule."""

from __future__ import annotations

import asyncio
import signal

import pytest
from playwright.async_api import Page

from pushclient import PushClient
from pushclient.client import outgoing
from tests.conftest import start_system
from tests.support.processes import System
from tests.support.tokens import token

TRANSPORTS = ["websocket", "sse", "http_stream"]  # push-client.js TRANSPORTS

pytestmark = pytest.mark.browser

SETUP = """async ([url, config]) => {
  const { WebSocketService, ProtocolError } = await import('/static/push-client.js');
  const log = { events: [], byTopic: [], byType: [], second: [], status: [] };
  const client = new WebSocketService({ url, ...config });
  for (const key of ['$connecting', '$closed', '$reconnect', '$reconnect_failed']) {
    client.on(key, (data) => log.events.push({ key, at: performance.now(), ...(data || {}) }));
  }
  client.onConnectionChange((c) => log.status.push(c));
  window.t = { client, log, ProtocolError };
  client.connect();
  await new Promise((resolve) => { const off = client.onConnectionChange((c) => { if (c) { off(); resolve(); } }); });
  return true;
}"""


async def open_client(page: Page, system: System, **config) -> None:
    await page.goto(system.http_url + "/healthz")  # any same-origin page will do
    await page.evaluate(SETUP, [system.ws_url + "/ws", config])


async def wait_for(page: Page, expression: str, timeout: float = 10_000) -> None:
    await page.wait_for_function(expression, timeout=timeout)


async def test_handlers_subscriptions_batches_and_acknowledgements(system: System, page: Page):
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(f)))
    await open_client(page, system, topics=["page:a"])
    await page.evaluate("""() => {
      t.onA = (data, m) => t.log.byTopic.push(m.id);
      t.onBeta = (data, m) => t.log.byType.push(m.id);
      t.client.on('page:a', t.onA);
      t.client.on('beta', t.onBeta);
    }""")
    assert await page.evaluate("() => t.client.subscribe(['page:b'])") == {"type": "subscribe", "topics": ["page:b"]}
    await wait_for(page, "() => t.client.clientId !== null")

    async with PushClient(system.push_address) as push:
        publisher = push.stream_publisher()
        publisher.start()
        for i in range(12):
            publisher.submit(outgoing("page:a", "alpha", {"i": i}, id=f"a{i}"))
        for i in range(3):
            publisher.submit(outgoing("page:b", "beta", {"i": i}, id=f"b{i}"))
        await publisher.flush()
        await wait_for(page, "() => t.log.byTopic.length === 12 && t.log.byType.length === 3")
        assert await page.evaluate("() => t.log.byTopic") == [f"a{i}" for i in range(12)]
        assert await page.evaluate("() => t.log.byType") == ["b0", "b1", "b2"]
        assert any(f.startswith('{"type":"batch"') for f in frames), "the burst must have come in batch frames"

        # off: the topic handler no longer runs; the type handler still does (sync point).
        await page.evaluate("() => t.client.off('page:a', t.onA)")
        publisher.submit(outgoing("page:a", "alpha", {}, id="a-after-off"))
        publisher.submit(outgoing("page:b", "beta", {}, id="b-sync"))
        await publisher.flush()
        await wait_for(page, "() => t.log.byType.length === 4")
        assert await page.evaluate("() => t.log.byTopic.length") == 12

        # unsubscribe: page:b stops arriving; page:a (handled again) proves the stream is alive.
        assert await page.evaluate("() => t.client.unsubscribe(['page:b'])") == {"type": "unsubscribe",
                                                                                  "topics": ["page:b"]}
        await page.evaluate("() => t.client.on('page:a', (d, m) => t.log.second.push(m.id))")
        publisher.submit(outgoing("page:b", "beta", {}, id="b-unsubscribed"))
        publisher.submit(outgoing("page:a", "alpha", {}, id="a-sync"))
        await publisher.flush()
        await wait_for(page, "() => t.log.second.length === 1")
        assert await page.evaluate("() => t.log.byType") == ["b0", "b1", "b2", "b-sync"]
        await publisher.close()

    # The acknowledgement Promise: resolved on ack / pong, rejected on an error frame.
    pong = await page.evaluate("() => t.client.request({ type: 'ping', id: 'p-1' })")
    assert (pong["type"], pong["id"]) == ("pong", "p-1")
    rejected = await page.evaluate("""() => t.client.subscribe(['bad topic']).then(
        () => 'resolved', (e) => ({ name: e.name, code: e.code, isProtocolError: e instanceof t.ProtocolError }))""")
    assert rejected == {"name": "ProtocolError", "code": "INVALID_TOPIC", "isProtocolError": True}
    unknown = await page.evaluate("() => t.client.request({ type: 'no_such' }).catch((e) => e.code)")
    assert unknown == "UNKNOWN_MESSAGE_TYPE"
    sent_id = await page.evaluate("() => t.client.send({ type: 'ping' })")
    assert sent_id.startswith("ping_")


@pytest.fixture
def own_system(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "client-reconnect")
    yield system
    system.stop()


@pytest.mark.parametrize("transports", [["websocket"], None], ids=["websocket-only", "every-transport"])
async def test_reconnect_schedule_stops_after_max_attempts(own_system: System, page: Page, transports):
    """With every transport (the default), one attempt is a round: each transport in turn, at once,
    while none reaches the edge; only then the next delay of the schedule."""
    system = own_system
    config = {"transports": transports} if transports else {}
    await open_client(page, system, reconnectInterval=300, maxReconnectInterval=1000, maxReconnectAttempts=3,
                      **config)
    # The first connection must be up before the edge goes: killed during its handshake, the client
    # would (rightly) try its other transports first, which is not the schedule this test pins.
    await wait_for(page, "() => t.client.clientId !== null", 30_000)
    system.edge.kill(signal.SIGKILL)
    await wait_for(page, "() => t.log.events.some((e) => e.key === '$reconnect_failed')", 20_000)
    await asyncio.sleep(1.5)  # nothing more happens after giving up
    events = await page.evaluate("() => t.log.events")
    keys = [e["key"] for e in events]
    round_ = ["$connecting"] + ["$closed", "$connecting"] * (len(transports or TRANSPORTS) - 1)
    assert keys == [
        "$connecting",  # the first connection
        "$closed", "$reconnect", *round_,
        "$closed", "$reconnect", *round_,
        "$closed", "$reconnect", *round_,
        "$closed", "$reconnect_failed",
    ]
    reconnects = [e for e in events if e["key"] == "$reconnect"]
    assert [e["attempt"] for e in reconnects] == [1, 2, 3]
    delays = [e["delay"] for e in reconnects]
    assert delays[0] == 300, "the first retry waits reconnectInterval"
    assert 0 <= delays[1] <= 600 and 0 <= delays[2] <= 1000, "then full jitter under min(cap, interval * 2^n)"
    # Each attempt really waited its delay (timer resolution aside).
    rounds = [events[i + 1] for i, e in enumerate(events) if e["key"] == "$reconnect"]
    for scheduled, attempt in zip(reconnects, rounds, strict=True):
        assert attempt["key"] == "$connecting" and attempt["at"] - scheduled["at"] >= scheduled["delay"] - 5
    assert events[-1]["reason"] == "maxReconnectAttempts reached"
    assert await page.evaluate("() => t.log.status") == [True, False]

    # connect() after giving up starts again, once the edge is back.
    system.edge.start()
    await system.wait_edge_ready()
    await page.evaluate("() => t.client.connect()")
    await wait_for(page, "() => t.client.connected")


async def test_disconnect_means_no_reconnect_and_missing_pong_means_dead(own_system: System, page: Page):
    system = own_system
    await open_client(page, system, reconnectInterval=100, pingInterval=300, pongTimeout=400)
    await page.evaluate("() => t.client.disconnect()")
    await asyncio.sleep(0.6)
    keys = await page.evaluate("() => t.log.events.map((e) => e.key)")
    assert keys == ["$connecting"], "disconnect() closes for good"
    assert await page.evaluate("() => t.log.status") == [True, False]

    await page.evaluate("() => t.client.connect()")
    await wait_for(page, "() => t.client.connected")
    system.edge.kill(signal.SIGSTOP)  # the socket stays open, but nothing answers
    try:
        timed_out = await page.evaluate(
            "() => t.client.request({ type: 'ping' }, { timeout: 150 }).then(() => 'resolved', (e) => e.message)"
        )
        assert "timed out after 150 ms" in timed_out
        await wait_for(page, "() => t.log.events.some((e) => e.key === '$closed' && e.code === 4000)", 10_000)
        closed = await page.evaluate("() => t.log.events.find((e) => e.key === '$closed')")
        assert closed["reason"] == "pong timeout"
    finally:
        system.edge.kill(signal.SIGCONT)
    await wait_for(page, "() => t.client.connected", 15_000)


@pytest.fixture
def swept_system(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "client-token", edge_env={"EDGE_HEARTBEAT_CHECK_INTERVAL": "0.2"})
    yield system
    system.stop()


async def test_expired_token_is_refreshed_through_get_token_and_the_client_reconnects(swept_system: System,
                                                                                      page: Page):
    system = swept_system
    await page.goto(system.http_url + "/healthz")
    # The first token lives 2 s; getToken is asked again after the 4001 close and gives a long one.
    await page.evaluate("""async ([url, short, long]) => {
      const { WebSocketService } = await import('/static/push-client.js');
      const tokens = [short, long];
      window.t = { asked: 0, events: [], users: [] };
      const client = new WebSocketService({ url, reconnectInterval: 60000,
        getToken: async () => tokens[Math.min(window.t.asked++, 1)] });
      for (const key of ['$closed', '$reconnect']) client.on(key, (d) => window.t.events.push({ key, ...d }));
      client.on('connected', (d) => window.t.users.push(d.user));
      window.t.client = client;
      client.connect();
    }""", [system.ws_url + "/ws", token("tess", ttl=2), token("tess", ttl=3600)])
    await wait_for(page, "() => t.users.length === 2", 15_000)
    events = await page.evaluate("() => t.events")
    assert events[0] == {"key": "$closed", "code": 4001, "reason": "token expired"}
    assert events[1]["key"] == "$reconnect" and events[1]["delay"] == 0, "not the 60 s reconnectInterval"
    assert await page.evaluate("() => [t.asked, t.users, t.client.connected]") == [2, ["tess", "tess"], True]
