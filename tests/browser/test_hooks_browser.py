"""push-client.js's publish(), rpc() and getSubscriptionToken() in real Chromium, against an edge whose
Publish and RPC hooks go to the example backend (a real process)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.async_api import Page

from pushclient import PushClient
from tests.conftest import start_system
from tests.support.hooks_backend import hooks_backend
from tests.support.processes import System
from tests.support.tokens import token

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
