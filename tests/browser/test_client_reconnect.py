"""push-client.js across refusals and reconnects: a connection is made at the edge's `connected` (not
when the transport opens), the offline queue sends nothing the app was told failed, subscribes and
unsubscribes keep their order, a refused topic does not take the others down, and the positions sent
on resubscribe neither go backwards nor lose what a subscription token's expiry or join/leave asked."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from playwright.async_api import Page, WebSocketRoute

from pushclient import PushClient
from tests.conftest import start_system
from tests.support.processes import System
from tests.support.tokens import exp_of, token

pytestmark = pytest.mark.browser

# Every lifecycle event the client emits, with its data (an Error as its message).
SETUP = """async ([url, config, listen]) => {
  const { WebSocketService } = await import('/static/push-client.js');
  const log = { events: [], status: [], pongs: [], got: [], acks: [] };
  if (config.getToken) config.getToken = () => window.mintToken();
  if (config.getSubscriptionToken) config.getSubscriptionToken = (topic) => window.subscriptionToken(topic);
  const client = new WebSocketService({ url, ...config });
  for (const key of ['$connecting', '$closed', '$reconnect', '$reconnect_failed', '$fallback', '$error',
                     '$subscribe_failed', '$recovered', '$recovery_failed', '$unsubscribed', '$server_unsubscribe']) {
    client.on(key, (data) => log.events.push({ key, ...(data instanceof Error ? { message: data.message } : data || {}) }));
  }
  client.onConnectionChange((c) => log.status.push(c));
  client.on('pong', (data, m) => log.pongs.push(m.id));
  client.on('ack', (data) => { if (data.type === 'subscribe') log.acks.push(data.topics); });
  for (const topic of listen) client.on(topic, (data, m) => log.got.push(m.id));
  window.t = { client, log, WebSocketService };
}"""

CONNECTED = "() => t.client.connected"


async def open_page(page: Page, system: System, listen: tuple[str, ...] = (), **config: Any) -> None:
    """A client on the page (`t.client`), not connected yet: the test decides when."""
    await page.goto(system.http_url + "/healthz")  # any same-origin page will do
    await page.evaluate(SETUP, [system.ws_url + "/ws", config, list(listen)])


async def wait_for(page: Page, expression: str, timeout: float = 15_000) -> None:
    await page.wait_for_function(expression, timeout=timeout)


async def events(page: Page, *keys: str) -> list[dict[str, Any]]:
    return await page.evaluate("(keys) => t.log.events.filter((e) => !keys.length || keys.includes(e.key))",
                               list(keys))


class SentFrames:
    """What the page sends on its WebSockets, in wire order."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.frames: list[dict[str, Any]] = []
        page.on("websocket", lambda ws: ws.on("framesent", lambda payload: self.frames.append(orjson.loads(payload))))

    async def subscriptions(self) -> list[tuple[str, dict[str, Any]]]:
        """(type, data) of every subscribe and unsubscribe sent until now. Playwright reports a frame a
        little after the page sent it: a ping sent now, once reported, says that none is still on its way."""
        marker = await self.page.evaluate("() => t.client.send({ type: 'ping' })")
        deadline = time.monotonic() + 15
        while not any(f.get("id") == marker for f in self.frames) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return [(f["type"], f["data"]) for f in self.frames if f.get("type") in ("subscribe", "unsubscribe")]


async def reconnect(page: Page) -> None:
    """Close the socket under the client, as a network would: it reconnects after reconnectInterval (a
    drop and a connect more in the log: waiting for the drop itself could miss it, connected again)."""
    changes = await page.evaluate("() => { const n = t.log.status.length; t.client.ws.close(); return n; }")
    await wait_for(page, f"() => t.log.status.length >= {changes + 2} && t.client.connected")


# --- a connection is made at `connected` ----------------------------------------------------------------


async def test_a_token_refused_after_the_upgrade_backs_off_and_gives_up(system: System, page: Page):
    """getToken gives a stale token every time: the edge takes the upgrade, then closes 4001. One
    immediate retry with a fresh token, then the schedule to maxReconnectAttempts; never connected."""
    asked: list[int] = []

    def stale() -> str:
        asked.append(1)
        return token("stella", ttl=-60)

    await page.expose_function("mintToken", stale)
    await open_page(page, system, getToken=True, reconnectInterval=300, maxReconnectInterval=600,
                    maxReconnectAttempts=2)
    await page.evaluate("() => t.client.connect()")
    await wait_for(page, "() => t.log.events.some((e) => e.key === '$reconnect_failed')", 20_000)
    await asyncio.sleep(1.0)  # nothing more happens after giving up
    log = await events(page)
    closed = {"key": "$closed", "code": 4001, "reason": "token expired"}
    delays = [e["delay"] for e in log if e["key"] == "$reconnect"]
    assert len(delays) == 3 and 0 <= delays[2] <= 600, log
    assert log == [
        {"key": "$connecting", "attempt": 0}, closed,
        {"key": "$reconnect", "attempt": 0, "delay": 0, "reason": "token expired"},
        {"key": "$connecting", "attempt": 0}, closed,
        {"key": "$reconnect", "attempt": 1, "delay": 300},
        {"key": "$connecting", "attempt": 1}, closed,
        {"key": "$reconnect", "attempt": 2, "delay": delays[2]},
        {"key": "$connecting", "attempt": 2}, closed,
        {"key": "$reconnect_failed", "reason": "maxReconnectAttempts reached", "attempts": 2},
    ]
    assert len(asked) == 4
    assert await page.evaluate("() => [t.log.status, t.client.connected, t.client.reconnectAttempts]") == [[], False, 2]


@pytest.fixture(scope="module")
def one_connection_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    system = start_system(tmp_path_factory, "client-admission", edge_env={"EDGE_MAX_CONNECTIONS_PER_USER": "1"})
    yield system
    system.stop()


async def test_refused_at_admission_backs_off_and_keeps_what_was_queued(one_connection_system: System, page: Page):
    """4029 after the upgrade, each attempt: the jittered schedule to maxReconnectAttempts (not the first
    interval for ever), no connection change, and a frame queued meanwhile waits for a real connection;
    a request that an attempt's failure rejected is never sent."""
    system = one_connection_system
    user = token("lim")
    await open_page(page, system, token=user, reconnectInterval=200, maxReconnectInterval=400,
                    maxReconnectAttempts=3)
    refused = await page.evaluate("""async ([url, token]) => {
      window.holder = new t.WebSocketService({ url, token });
      await new Promise((resolve) => { holder.onConnectionChange((c) => c && resolve()); holder.connect(); });
      t.client.send({ type: 'ping', id: 'queued-ping' });
      const refused = t.client.request({ type: 'ping', id: 'refused-ping' }).then(() => 'resolved', (e) => e.message);
      t.client.connect();
      return await refused;
    }""", [system.ws_url + "/ws", user])
    assert refused == "connection closed (4029)"
    await wait_for(page, "() => t.log.events.some((e) => e.key === '$reconnect_failed')", 20_000)
    await asyncio.sleep(1.0)  # nothing more happens after giving up
    log = await events(page)
    closed = {"key": "$closed", "code": 4029, "reason": "too many connections"}
    delays = [e["delay"] for e in log if e["key"] == "$reconnect"]
    assert len(delays) == 3 and delays[0] == 200 and all(0 <= d <= 400 for d in delays[1:]), log
    assert log == [
        {"key": "$connecting", "attempt": 0}, closed,
        {"key": "$reconnect", "attempt": 1, "delay": delays[0]}, {"key": "$connecting", "attempt": 1}, closed,
        {"key": "$reconnect", "attempt": 2, "delay": delays[1]}, {"key": "$connecting", "attempt": 2}, closed,
        {"key": "$reconnect", "attempt": 3, "delay": delays[2]}, {"key": "$connecting", "attempt": 3}, closed,
        {"key": "$reconnect_failed", "reason": "maxReconnectAttempts reached", "attempts": 3},
    ]
    assert await page.evaluate("() => [t.log.status, t.log.pongs]") == [[], []]

    # The other connection goes: the next connect() is let in, and what was queued goes out on it. (Its
    # first attempts may still meet the held one, not yet released by the edge: more of them now.)
    await page.evaluate("() => { holder.disconnect(); t.client.config.maxReconnectAttempts = 50; t.client.connect(); }")
    await wait_for(page, CONNECTED)
    await page.evaluate("() => t.client.request({ type: 'ping', id: 'sync' })")
    assert await page.evaluate("() => t.log.pongs") == ["queued-ping", "sync"]
    assert await page.evaluate("() => t.log.status") == [True]


async def test_a_token_that_cannot_be_had_is_no_transports_fault(system: System, page: Page):
    """getToken fails before any transport is tried: each attempt fails whole, on the schedule, with
    no hand-over to the next transport."""

    def no_token() -> str:
        raise RuntimeError("the token server is down")

    await page.expose_function("mintToken", no_token)
    await open_page(page, system, getToken=True, reconnectInterval=100, maxReconnectInterval=200,
                    maxReconnectAttempts=2)
    await page.evaluate("() => t.client.connect()")
    await wait_for(page, "() => t.log.events.some((e) => e.key === '$reconnect_failed')")
    await asyncio.sleep(0.5)
    log = await events(page)
    assert [e["key"] for e in log] == ["$connecting", "$error", "$closed", "$reconnect",
                                       "$connecting", "$error", "$closed", "$reconnect",
                                       "$connecting", "$error", "$closed", "$reconnect_failed"]
    assert all(e["code"] == 1006 and e["reason"] == "getToken failed" for e in log if e["key"] == "$closed")
    assert [e["attempt"] for e in log if e["key"] == "$reconnect"] == [1, 2]
    assert await page.evaluate("() => t.client.transport") is None


async def test_a_slow_connected_is_waited_for_on_the_same_transport(system: System, page: Page):
    """The edge's `connected` after a recovering connect can take 2 x EDGE_SUBSCRIBE_CONFIRM_TIMEOUT
    (6 s): here the WebSocket's first frame is held 6.5 s, and the client still connects over it."""
    forwarding: list[asyncio.Task[None]] = []

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        frames: asyncio.Queue[str | bytes] = asyncio.Queue()
        server.on_message(lambda frame: frames.put_nowait(frame))

        async def forward() -> None:  # in order; only the first frame (`connected`) held back
            first = await frames.get()
            await asyncio.sleep(6.5)
            ws.send(first)
            while True:
                ws.send(await frames.get())

        forwarding.append(asyncio.create_task(forward()))

    await page.route_web_socket(re.compile(r"/ws(\?.*)?$"), route)
    try:
        await open_page(page, system)
        await page.evaluate("() => t.client.connect()")
        await wait_for(page, CONNECTED, 20_000)
        assert await events(page) == [{"key": "$connecting", "attempt": 0}]
        assert await page.evaluate("() => [t.client.transport, t.log.status]") == ["websocket", [True]]
    finally:
        for task in forwarding:
            task.cancel()


# --- the offline queue ----------------------------------------------------------------------------------


async def test_a_request_that_failed_offline_is_never_sent(system: System, page: Page):
    """A request timed out while offline, and a frame queued before disconnect(): neither goes out on
    the next connection (the app was told the first failed; disconnect() means drop what waits)."""
    await open_page(page, system)
    failed = await page.evaluate("""async () => {
      const failed = await t.client.request({ type: 'ping', id: 'given-up' }, { timeout: 200 })
        .then(() => 'resolved', (e) => e.message);
      t.client.send({ type: 'ping', id: 'before-disconnect' });
      t.client.disconnect();
      t.client.connect();
      await t.client.request({ type: 'ping', id: 'sync' });
      return failed;
    }""")
    assert failed == "request given-up timed out after 200 ms"
    assert await page.evaluate("() => t.log.pongs") == ["sync"]


async def test_the_offline_queue_keeps_the_newest_1000_frames(system: System, page: Page):
    await open_page(page, system)
    dropped = await page.evaluate("""async () => {
      const oldest = t.client.request({ type: 'ping', id: 'q0' }).then(() => 'resolved', (e) => e.message);
      for (let i = 1; i <= 1000; i++) t.client.send({ type: 'ping', id: `q${i}` });
      return await oldest;
    }""")
    assert dropped == "outbox full (1000 frames while offline): q0 dropped"
    assert await events(page) == [{"key": "$error", "message": dropped}]
    await page.evaluate("() => t.client.disconnect()")


# --- subscriptions --------------------------------------------------------------------------------------


async def test_subscribe_then_unsubscribe_in_one_tick_go_out_in_that_order(system: System, page: Page):
    sent = SentFrames(page)
    await open_page(page, system, topics=["order:sync"], listen=("order:x", "order:sync"))
    await page.evaluate("() => t.client.connect()")
    await wait_for(page, CONNECTED)
    acks = await page.evaluate("() => Promise.all([t.client.subscribe('order:x'), t.client.unsubscribe('order:x')])")
    assert acks == [{"type": "subscribe", "topics": ["order:x"]}, {"type": "unsubscribe", "topics": ["order:x"]}]
    assert await sent.subscriptions() == [("subscribe", {"topics": ["order:sync"]}),
                                         ("subscribe", {"topics": ["order:x"]}),
                                         ("unsubscribe", {"topics": ["order:x"]})]
    async with PushClient(system.push_address) as push:
        await push.publish("order:x", "m", {}, id="x1")
        await push.publish("order:sync", "m", {}, id="s1")
    await wait_for(page, "() => t.log.got.length >= 1")
    await asyncio.sleep(0.3)
    assert await page.evaluate("() => t.log.got") == ["s1"], "the edge must not be left subscribed to order:x"


async def test_a_refused_subscribe_forgets_the_topics_it_added(system: System, page: Page):
    sent = SentFrames(page)
    await open_page(page, system, listen=("keep:a",), reconnectInterval=200)
    await page.evaluate("() => t.client.connect()")
    await wait_for(page, CONNECTED)
    after = await page.evaluate("""async () => {
      await t.client.subscribe('keep:a');
      const refused = await t.client.subscribe(['keep:a', 'new:b', 'bad topic'], { joinLeave: true })
        .then(() => 'resolved', (e) => e.code);
      return { refused, topics: [...t.client.topics], joinLeave: [...t.client.joinLeave] };
    }""")
    # keep:a was subscribed before the refused call: it stays (without the join/leave that call asked).
    assert after == {"refused": "INVALID_TOPIC", "topics": ["keep:a"], "joinLeave": []}
    await reconnect(page)
    await wait_for(page, "() => t.log.acks.length === 2")
    assert await sent.subscriptions() == [("subscribe", {"topics": ["keep:a"]}),
                                         ("subscribe", {"topics": ["keep:a", "new:b", "bad topic"],
                                                        "join_leave": True}),
                                         ("subscribe", {"topics": ["keep:a"]})]
    async with PushClient(system.push_address) as push:
        await push.publish("keep:a", "m", {}, id="a1")
    await wait_for(page, "() => t.log.got.length === 1")
    assert await events(page, "$subscribe_failed", "$error") == []


RULES = [{"pattern": "secret:*", "subscribe": "none", "publish": "none"},
         {"pattern": "*", "subscribe": "public", "publish": "none"}]


@pytest.fixture(scope="module")
def ruled_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    # A burst of 4 frames, then one every 4 s: the resubscribe and the first three topics pass, the fourth
    # is RATE_LIMITED (it is retried after 1-2 s, until a token has come back).
    system = start_system(tmp_path_factory, "client-resubscribe", edge_env={
        "EDGE_TOPIC_RULES": json.dumps(RULES), "EDGE_RATE_LIMIT": "0.25", "EDGE_RATE_BURST": "4"})
    yield system
    system.stop()


async def test_a_refused_topic_does_not_keep_the_others_from_being_resubscribed(ruled_system: System, page: Page):
    """Topics subscribed offline are not checked until the next connection, whose resubscribe the edge
    refuses whole for one forbidden topic: then each topic goes alone, the forbidden one is dropped and
    told (`$subscribe_failed`), a RATE_LIMITED one is asked again on the same connection."""
    system = ruled_system
    sent = SentFrames(page)
    await open_page(page, system, topics=["fall:a", "fall:b"], listen=("fall:a", "fall:b", "fall:c"))
    queued = await page.evaluate("""async () => {
      const queued = [await t.client.subscribe('secret:x'), await t.client.subscribe('fall:c')];
      t.client.connect();
      return queued;
    }""")
    assert queued == [{"type": "subscribe", "topics": ["secret:x"], "queued": True},
                      {"type": "subscribe", "topics": ["fall:c"], "queued": True}]
    await wait_for(page, "() => t.log.acks.some((topics) => topics.includes('fall:c'))", 30_000)
    assert await events(page, "$subscribe_failed") == [
        {"key": "$subscribe_failed", "topic": "secret:x", "code": "FORBIDDEN",
         "message": "not allowed to subscribe to secret:x"}]
    assert await page.evaluate("() => [...t.client.topics]") == ["fall:a", "fall:b", "fall:c"]
    assert await page.evaluate("() => t.log.acks") == [["fall:a"], ["fall:b"], ["fall:c"]]
    frames = [data["topics"] for _, data in await sent.subscriptions()]
    assert frames[:5] == [["fall:a", "fall:b", "secret:x", "fall:c"], ["fall:a"], ["fall:b"], ["secret:x"], ["fall:c"]]
    assert len(frames) >= 6 and all(topics == ["fall:c"] for topics in frames[5:]), "fall:c is asked again"
    async with PushClient(system.push_address) as push:
        for topic in ("fall:a", "fall:b", "fall:c"):
            await push.publish(topic, "m", {}, id=topic[-1] + "1")
    await wait_for(page, "() => t.log.got.length === 3")
    assert await page.evaluate("() => t.log.got") == ["a1", "b1", "c1"]


@pytest.fixture(scope="module")
def presence_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    # No refresh notice: a subscription token runs out unrefreshed, and the edge says `unsubscribed`.
    system = start_system(tmp_path_factory, "client-joinleave",
                          push_env={"PUSH_PRESENCE_RULES": "room:*:presence+joinleave,private:*:presence+joinleave"},
                          edge_env={"EDGE_SUBSCRIPTION_TOKEN_TOPICS": "private:*", "EDGE_TOKEN_REFRESH_NOTICE": "0"})
    yield system
    system.stop()


async def test_join_leave_is_asked_by_the_recovering_resubscribe(presence_system: System, page: Page):
    """One subscribe for the join/leave topics (with their positions and join_leave), one for the others;
    a topic the backend unsubscribed is not asked for again."""
    system = presence_system
    sent = SentFrames(page)
    await open_page(page, system, listen=("room:r", "plain:p"), reconnectInterval=200)
    await page.evaluate("() => t.client.connect()")
    await wait_for(page, CONNECTED)
    await page.evaluate("async () => { await t.client.subscribe('room:r', { joinLeave: true }); "
                        "await t.client.subscribe('plain:p'); }")
    async with PushClient(system.push_address, token=system.grpc_token) as push:
        await push.publish("room:r", "m", {}, id="r1")
        await push.publish("plain:p", "m", {}, id="p1")
        await wait_for(page, "() => t.log.got.length === 2")
        positions = await page.evaluate("() => Object.fromEntries(t.client.positions)")
        assert set(positions) == {"room:r", "plain:p"}

        await reconnect(page)
        await wait_for(page, "() => t.log.events.filter((e) => e.key === '$recovered').length === 2")
        assert (await sent.subscriptions())[2:] == [
            ("subscribe", {"topics": ["room:r"], "since": {"room:r": positions["room:r"]}, "join_leave": True}),
            ("subscribe", {"topics": ["plain:p"], "since": {"plain:p": positions["plain:p"]}}),
        ]
        await push.publish("room:r", "m", {}, id="r2")
        await push.publish("plain:p", "m", {}, id="p2")
        await wait_for(page, "() => t.log.got.length === 4")
        assert await page.evaluate("() => t.log.got") == ["r1", "p1", "r2", "p2"]

        client_id = await page.evaluate("() => t.client.clientId")
        assert await push.server.unsubscribe("room:r", client_id=client_id)
        await wait_for(page, "() => t.log.events.some((e) => e.key === '$server_unsubscribe')")
        assert await page.evaluate("() => [[...t.client.topics], [...t.client.joinLeave]]") == [["plain:p"], []]
        positions = await page.evaluate("() => Object.fromEntries(t.client.positions)")
        await reconnect(page)
        await wait_for(page, "() => t.log.events.filter((e) => e.key === '$recovered').length === 3")
        assert (await sent.subscriptions())[4:] == [
            ("subscribe", {"topics": ["plain:p"], "since": {"plain:p": positions["plain:p"]}})]


async def test_a_topic_whose_subscription_token_ran_out_is_subscribed_again_from_its_position(
        presence_system: System, page: Page):
    system = presence_system
    minted: list[str] = []

    def subscription_token(topic: str) -> str:
        # The first token (made when first asked: the page's set-up may take seconds on a loaded machine)
        # runs out unrefreshed; the one asked after the edge's `unsubscribed` lasts.
        short = minted[0] if minted else token("vic", ttl=6, topic=topic)
        fresh = short if time.time() < exp_of(short) else token("vic", topic=topic)
        minted.append(fresh)
        return fresh

    await page.expose_function("mintToken", lambda: token("vic"))
    await page.expose_function("subscriptionToken", subscription_token)
    sent = SentFrames(page)
    await open_page(page, system, listen=("private:c",), getToken=True, getSubscriptionToken=True)
    await page.evaluate("() => t.client.connect()")
    await wait_for(page, CONNECTED)
    await page.evaluate("() => t.client.subscribe('private:c', { joinLeave: true })")
    async with PushClient(system.push_address) as push:
        await push.publish("private:c", "m", {}, id="c1")
        await wait_for(page, "() => t.log.got.length === 1")
        position = await page.evaluate("() => t.client.positions.get('private:c')")
        await wait_for(page, "() => t.log.events.some((e) => e.key === '$recovered')", 30_000)
        assert await events(page, "$unsubscribed", "$recovered") == [
            {"key": "$unsubscribed", "topic": "private:c", "code": "TOKEN_EXPIRED",
             "reason": "the subscription token expired"},
            {"key": "$recovered", "topic": "private:c", "recovered": True, **position}]
        short = minted[0]
        assert minted[-1] != short
        assert await sent.subscriptions() == [
            ("subscribe", {"topics": ["private:c"], "join_leave": True, "tokens": {"private:c": short}}),
            ("subscribe", {"topics": ["private:c"], "since": {"private:c": position}, "join_leave": True,
                           "tokens": {"private:c": minted[-1]}}),
        ]
        await push.publish("private:c", "m", {}, id="c2")
        await wait_for(page, "() => t.log.got.length === 2")
    assert await page.evaluate("() => t.log.got") == ["c1", "c2"]


# --- positions ------------------------------------------------------------------------------------------


async def test_a_retained_state_replayed_after_a_recovery_does_not_move_the_position_back(system: System,
                                                                                         page: Page):
    """Another subscriber keeps the topic on the edge, which hands each new subscriber the retained state
    it holds, after the ack: after a recovering resubscribe, that is older than what was delivered."""
    sent = SentFrames(page)
    async with PushClient(system.push_address) as push:
        await push.publish("state:r", "state", {"v": 1}, id="s1", retain=True)
        await open_page(page, system, topics=["state:r"], listen=("state:r",), reconnectInterval=200)
        await page.evaluate("""async (url) => {
          window.holder = new t.WebSocketService({ url });
          await new Promise((resolve) => { holder.on('state:r', resolve); holder.connect(); });
        }""", system.ws_url + "/ws?topics=state:r")  # (by the URL: no subscribe frame of its own)
        await page.evaluate("() => t.client.connect()")
        await wait_for(page, "() => t.log.got.length === 1")  # the retained state, after the subscribe's ack
        await push.publish("state:r", "m", {}, id="m2")
        await push.publish("state:r", "m", {}, id="m3")
        await wait_for(page, "() => t.log.got.length === 3")
    latest = await page.evaluate("() => t.client.positions.get('state:r')")
    assert latest["offset"] == 3

    await reconnect(page)
    await wait_for(page, "() => t.log.got.length === 4")  # recovered (nothing missed), then the state again
    assert await page.evaluate("() => t.client.positions.get('state:r')") == latest
    await reconnect(page)
    await wait_for(page, "() => t.log.got.length === 5")
    await asyncio.sleep(0.3)
    assert await page.evaluate("() => t.log.got") == ["s1", "m2", "m3", "s1", "s1"]
    assert await sent.subscriptions() == [("subscribe", {"topics": ["state:r"]}),
                                         ("subscribe", {"topics": ["state:r"], "since": {"state:r": latest}}),
                                         ("subscribe", {"topics": ["state:r"], "since": {"state:r": latest}})]
    assert [e["key"] for e in await events(page, "$recovered", "$recovery_failed")] == ["$recovered", "$recovered"]


async def test_a_recovery_notice_without_an_epoch_keeps_the_position(system: System, page: Page):
    """The edge's `recovery` notice when history could not be asked ("history unavailable", epoch "")
    is told, and says nothing of where the topic is: the next reconnect recovers from the position held."""
    routes: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        ws.connect_to_server()
        routes.append(ws)

    await page.route_web_socket(re.compile(r"/ws(\?.*)?$"), route)
    await open_page(page, system, topics=["hist:h"], listen=("hist:h",), reconnectInterval=200,
                    transports=["websocket"])
    await page.evaluate("() => t.client.connect()")
    await wait_for(page, "() => t.log.acks.length === 1")
    async with PushClient(system.push_address) as push:
        await push.publish("hist:h", "m", {}, id="h1")
    await wait_for(page, "() => t.log.got.length === 1")
    held = await page.evaluate("() => t.client.positions.get('hist:h')")

    notice = {"topic": "hist:h", "recovered": False, "offset": 0, "epoch": "", "reason": "history unavailable"}
    routes[-1].send(json.dumps({"type": "recovery", "id": "recovery_1", "timestamp": int(time.time() * 1000),
                                "data": notice}))
    await wait_for(page, "() => t.log.events.some((e) => e.key === '$recovery_failed')")
    assert await events(page, "$recovery_failed") == [{"key": "$recovery_failed", **notice}]
    assert await page.evaluate("() => t.client.positions.get('hist:h')") == held

    await reconnect(page)
    await wait_for(page, "() => t.log.events.some((e) => e.key === '$recovered')")
    assert await events(page, "$recovered") == [{"key": "$recovered", "topic": "hist:h", "recovered": True, **held}]
