"""push-client.js's publish(), rpc() and getSubscriptionToken() in real Chromium, against an edge whose
Publish and RPC hooks go to the example backend (a real process)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from playwright.async_api import Page

from pushclient import PushClient
from tests.conftest import start_system
from tests.support.hooks_backend import hooks_backend
from tests.support.processes import System
from tests.support.tokens import exp_of, token

pytestmark = pytest.mark.browser
RULES = [{"pattern": "chat:*", "subscribe": "authenticated", "publish": "authenticated"},
         {"pattern": "*", "subscribe": "public", "publish": "none"}]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with hooks_backend(tmp_path_factory.mktemp("hooks-browser")) as (_, address):
        system = start_system(tmp_path_factory, "hooks-browser", edge_env={
            "EDGE_HOOKS_ADDRESS": address, "EDGE_HOOK_RPC": "true", "EDGE_HOOK_PUBLISH_TOPICS": "chat:*",
            "EDGE_SUBSCRIPTION_TOKEN_TOPICS": "private:*", "EDGE_TOPIC_RULES": json.dumps(RULES)})
        yield system
        system.stop()


async def test_publish_rpc_and_subscription_tokens_from_the_page(system: System, page: Page):
    asked: list[str] = []

    def subscription_token(topic: str) -> str | None:
        asked.append(topic)
        return token("olga", topic=topic) if topic.startswith("private:") else None

    await page.expose_function("mintToken", lambda: token("olga"))
    await page.expose_function("subscriptionToken", subscription_token)
    await page.goto(system.http_url + "/healthz")
    await page.evaluate("""async (url) => {
      const { WebSocketService, ProtocolError } = await import('/static/push-client.js');
      const client = new WebSocketService({ url, topics: ['private:a'], getToken: () => window.mintToken(),
                                            getSubscriptionToken: (topic) => window.subscriptionToken(topic) });
      window.t = { client, ProtocolError, got: [] };
      client.on('private:a', (data) => window.t.got.push(['private:a', data]));
      client.on('chat:1', (data) => window.t.got.push(['chat:1', data]));
      const ready = new Promise((resolve) => { client.on('connected', resolve); });
      client.connect();
      await ready;
    }""", system.ws_url + "/ws")
    # the URL cannot carry a subscription token: the client's subscribe on open does
    await page.wait_for_function("() => t.client.connected")
    assert await page.evaluate("() => t.client.subscribe(['chat:1'])") == {"type": "subscribe", "topics": ["chat:1"]}
    assert asked[:2] == ["private:a", "chat:1"]
    async with PushClient(system.push_address) as push:
        await push.queue_message({"type": "secret", "data": {"n": 1}}, topic="private:a")
    await page.wait_for_function("() => t.got.length === 1")

    ack = await page.evaluate("() => t.client.publish('chat:1', {text: 'oh darn'})")
    assert ack["type"] == "publish" and ack["topic"] == "chat:1" and ack["message_id"]
    await page.wait_for_function("() => t.got.length === 2")
    assert await page.evaluate("() => t.got") == [["private:a", {"n": 1}], ["chat:1", {"text": "oh d**n"}]]
    refusal = await page.evaluate("""() => t.client.publish('chat:1', 'spam').then(
      () => 'allowed', (err) => [err instanceof t.ProtocolError, err.code, err.message])""")
    assert refusal == [True, "FORBIDDEN", "FORBIDDEN: looks like spam"]
    assert await page.evaluate("() => t.client.rpc('echo', {x: [1, 2]})") == {"x": [1, 2]}
    missing = await page.evaluate("() => t.client.rpc('nope').then(() => 'ok', (err) => err.code)")
    assert missing == "NOT_FOUND"


async def test_a_subscription_token_is_refreshed_before_it_runs_out(system: System, page: Page):
    """15 s subscription tokens, the edge's notice 10 s before: the client answers `refresh_required`
    with getSubscriptionToken's new token, and the topic is still subscribed after the first expired."""
    minted: list[int] = []

    def subscription_token(topic: str) -> str:
        minted.append(exp_of(fresh := token("olga", ttl=15, topic=topic)))
        return fresh

    await page.expose_function("mintToken", lambda: token("olga"))
    await page.expose_function("subscriptionToken", subscription_token)
    await page.goto(system.http_url + "/healthz")
    await page.evaluate("""async (url) => {
      const { WebSocketService } = await import('/static/push-client.js');
      const client = new WebSocketService({ url, getToken: () => window.mintToken(),
                                            getSubscriptionToken: (topic) => window.subscriptionToken(topic) });
      window.t = { client, got: [], events: [] };
      client.on('private:b', (data) => window.t.got.push(data));
      for (const key of ['$refreshed', '$unsubscribed', '$closed']) client.on(key, (d) => window.t.events.push([key, d]));
      const ready = new Promise((resolve) => { client.on('connected', resolve); });
      client.connect();
      await ready;
      await client.subscribe(['private:b']);
    }""", system.ws_url + "/ws")
    first_exp = minted[0]
    while time.time() < first_exp + 1:
        await asyncio.sleep(0.5)
    async with PushClient(system.push_address) as push:
        await push.queue_message({"type": "secret", "data": {"n": 2}}, topic="private:b")
    await page.wait_for_function("() => t.got.length === 1")
    events = await page.evaluate("() => t.events")
    # every token after the first came by refresh (no `$unsubscribed`, no reconnect), each later than the last
    # (the newest token may still be on its way when the events are read)
    acked = [data["expires_at"] for _, data in events]
    assert events == [["$refreshed", {"type": "refresh", "topic": "private:b", "expires_at": exp}] for exp in acked]
    assert len(acked) >= 1 and acked == minted[1:len(acked) + 1] and len(minted) - 1 - len(acked) in (0, 1)
    assert minted == sorted(minted)
