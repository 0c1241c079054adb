"""The dashboard where WebSocket is blocked: it falls back to SSE and does everything over it."""

from __future__ import annotations

import re
import signal

import orjson
import pytest
from playwright.async_api import Page, WebSocketRoute, expect

from tests.browser.conftest import ConsoleWatch
from tests.browser.test_dashboard import start_task, task_row
from tests.conftest import start_system
from tests.support.asyncapi import check_server_frame
from tests.support.processes import System

pytestmark = pytest.mark.browser
STEPS = 60
KILL_ERRORS = re.compile(r"console\.error: Failed to load resource: net::ERR_(INCOMPLETE_CHUNKED_ENCODING|CONNECTION_REFUSED"
                         r"|CONNECTION_RESET|EMPTY_RESPONSE)")

# Every SSE event the page receives, recorded for the AsyncAPI check (EventSource as the page has it).
RECORD_SSE = """
(() => {
  const Original = window.EventSource;
  window.__sse = [];
  window.EventSource = class extends Original {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => window.__sse.push(event.data));
    }
  };
})();
"""


@pytest.fixture
def own_system(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "sse-browser")
    yield system
    system.stop()


async def refuse_upgrade(route: WebSocketRoute) -> None:
    """What a proxy that breaks WebSocket does: the upgrade never reaches the edge."""
    await route.close(code=1011, reason="blocked by a proxy")


async def test_dashboard_over_sse_where_websocket_is_blocked(own_system: System, page: Page):
    system = own_system
    console = ConsoleWatch(page)
    await page.route_web_socket(re.compile(r".*"), refuse_upgrade)
    await page.add_init_script(RECORD_SSE)
    websocket_frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: websocket_frames.append(f)))
    await page.goto(system.http_url + "/")
    indicator = page.locator("#connection")
    await expect(indicator).to_have_attribute("data-state", "connected")
    await expect(indicator).to_have_attribute("data-transport", "sse")
    assert await page.evaluate("() => dashboard.client.transport") == "sse"

    # Every progress step of the task, as the page's handlers see it.
    await page.evaluate("""() => {
      window.steps = {};
      dashboard.client.on('task:progress', (data) => {
        (window.steps[data.task_id] = window.steps[data.task_id] || []).push(data.progress.completed);
      });
    }""")
    task_id = await start_task(page, ",".join(f"S{i}" for i in range(STEPS)), "0.25")  # an ack over SSE
    row = task_row(page, task_id)
    await expect(row.locator(".count")).to_have_text(re.compile(rf"^[1-9]/{STEPS}$"))

    # Acknowledgement promises, resolved by acks that come on the stream.
    acks = await page.evaluate("""async () => [
      await dashboard.client.subscribe(['extra:sse']),
      await dashboard.client.request({ type: 'ping' }).then((pong) => pong.type),
      await dashboard.client.unsubscribe(['extra:sse']),
    ]""")
    assert acks == [{"type": "subscribe", "topics": ["extra:sse"]}, "pong",
                    {"type": "unsubscribe", "topics": ["extra:sse"]}]

    system.edge.kill(signal.SIGKILL)
    await expect(indicator).to_have_attribute("data-state", "disconnected")
    system.edge.start()
    await system.wait_edge_ready()
    await expect(indicator).to_have_attribute("data-state", "connected", timeout=30_000)
    assert await page.evaluate("() => dashboard.client.transport") == "sse"
    assert await row.locator(".status").inner_text() == "running", "the edge must come back mid-task"

    await expect(row.locator(".status")).to_have_text("completed", timeout=40_000)
    await expect(row.locator(".pct")).to_have_text("100%")
    await expect(row.locator(".count")).to_have_text(f"{STEPS}/{STEPS}")
    steps = await page.evaluate(f"() => window.steps[{orjson.dumps(task_id).decode()}]")
    assert steps == list(range(steps[0], STEPS + 1)) and steps[0] <= 1, steps  # no step missing or twice

    assert websocket_frames == []
    received = await page.evaluate("() => window.__sse")
    for raw in received:
        check_server_frame(orjson.loads(raw))
    kinds = {orjson.loads(raw)["type"] for raw in received}
    assert {"connected", "ack", "pong", "task_progress"} <= kinds | {m["type"] for raw in received
                                                                     for m in orjson.loads(raw).get("messages", [])}
    # The kill cuts the stream (and reconnects may find the edge not yet up): Chromium logs those.
    assert [e for e in console.errors if not KILL_ERRORS.fullmatch(e)] == []


HAND_WRITTEN = """async (url) => {
  // The README's example: no library, a plain EventSource following a topic.
  window.got = [];
  const source = new EventSource(url);
  source.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === "close") return source.close();                  // the edge said goodbye
    for (const m of frame.type === "batch" ? frame.messages : [frame])   // a batch holds up to 10
      if (m.topic === "news") window.got.push({ id: m.id, data: m.data, lastEventId: event.lastEventId });
  };
  await new Promise((resolve) => { source.onopen = resolve; });
  window.source = source;
}"""


async def test_a_hand_written_event_source_follows_a_topic(system: System, page: Page, push):
    await page.add_init_script(RECORD_SSE)
    await page.goto(system.http_url + "/healthz")
    await page.evaluate(HAND_WRITTEN, "/sse?topics=news")
    # `connected` comes once the push service holds the topic: from then on nothing published is missed.
    await page.wait_for_function("() => window.__sse.some((raw) => JSON.parse(raw).type === 'connected')")
    replies = [await push.publish("news", "headline", {"n": n}, id=f"hand{n}") for n in range(3)]
    await page.wait_for_function("() => window.got.length === 3")
    got = await page.evaluate("() => window.got")
    assert [(g["id"], g["data"]) for g in got] == [(f"hand{n}", {"n": n}) for n in range(3)]
    # Each event's id is where the page is: what a reconnecting EventSource sends as Last-Event-ID.
    assert orjson.loads(got[-1]["lastEventId"]) == {"news": {"offset": replies[-1].offset, "epoch": replies[-1].epoch}}
    for raw in await page.evaluate("() => window.__sse"):
        check_server_frame(orjson.loads(raw))


async def test_the_client_library_over_http_streaming(system: System, page: Page, push):
    await page.goto(system.http_url + "/healthz")
    result = await page.evaluate("""async (url) => {
      const { WebSocketService } = await import('/static/push-client.js');
      const client = new WebSocketService({ url, transports: ['http_stream'], topics: ['lines'] });
      window.lines = [];
      client.on('lines', (data) => window.lines.push(data.n));
      const transports = [];
      client.on('$transport', ({ transport }) => transports.push(transport));
      await new Promise((resolve) => { client.onConnectionChange((c) => c && resolve()); client.connect(); });
      const pong = await client.request({ type: 'ping' });
      const ack = await client.subscribe(['lines:2']);
      let refused = null;
      try { await client.subscribe(['bad topic']); } catch (err) { refused = err.code; }
      window.client = client;
      return { pong: pong.type, ack, refused, transports, transport: client.transport };
    }""", system.ws_url + "/ws")
    assert result == {"pong": "pong", "ack": {"type": "subscribe", "topics": ["lines:2"]}, "refused": "INVALID_TOPIC",
                      "transports": ["http_stream"], "transport": "http_stream"}
    for n in range(3):
        await push.publish("lines", "t", {"n": n})
    await page.wait_for_function("() => window.lines.length === 3")
    assert await page.evaluate("() => window.lines") == [0, 1, 2]
