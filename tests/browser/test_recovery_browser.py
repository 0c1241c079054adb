"""Recovery in the browser client: an edge killed mid-stream, a push service restarted mid-task."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal

import pytest
from playwright.async_api import Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeout

from pushclient import PushClient
from pushclient.client import outgoing
from tests.browser.test_dashboard import start_task, task_row
from tests.conftest import start_system
from tests.support.processes import System
from tests.support.timing import timeout

pytestmark = pytest.mark.browser
HISTORY = '[{"pattern": "stream:*", "size": 10000, "ttl": 600}, {"pattern": "*", "size": 1000, "ttl": 600}]'


@pytest.fixture
def history_system(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "browser-recovery", push_env={"PUSH_HISTORY_RULES": HISTORY},
                          edge_env={"EDGE_PUSH_RECONNECT_MAX": "0.3"})
    yield system
    system.stop()


async def test_browser_client_ends_with_all_5000_exactly_once_across_an_edge_kill(history_system: System,
                                                                                page: Page):
    system = history_system
    await page.goto(system.http_url + "/healthz")
    await page.evaluate("""async (url) => {
      const { WebSocketService } = await import('/static/push-client.js');
      window.t = { ids: [], recovered: [], failed: [], events: [] };
      const client = new WebSocketService({ url, topics: ['stream:page'], reconnectInterval: 200,
                                            maxReconnectInterval: 1000, maxReconnectAttempts: Infinity });
      client.on('stream:page', (data, m) => window.t.ids.push(m.id));
      client.on('$recovered', (r) => window.t.recovered.push(r.topic));
      client.on('$recovery_failed', (r) => window.t.failed.push(r));
      // What the connection went through, for the failure's account (the last 60 events).
      for (const name of ['$closed', '$transport', '$recovered', '$recovery_failed', '$reconnect_failed', '$error']) {
        client.on(name, (e) => {
          const what = JSON.stringify(e && e.message ? e.message : e);
          window.t.events.push(`${performance.now().toFixed(0)} ms ${name} ${what} ids=${window.t.ids.length}`);
          if (window.t.events.length > 60) window.t.events.shift();
        });
      }
      window.t.client = client;
      await new Promise((resolve) => { client.onConnectionChange((c) => c && resolve()); client.connect(); });
      await client.request({ type: 'ping' });
    }""", system.ws_url + "/ws")
    async with PushClient(system.push_address) as push:
        publisher = push.stream_publisher(idempotent=True)
        publisher.start()

        async def publish_all() -> None:
            for n in range(5000):
                publisher.submit(outgoing("stream:page", "tick", {"n": n}, id=f"p{n}"))
                if n % 100 == 99:
                    await asyncio.sleep(0.03)
            await publisher.flush()

        publishing = asyncio.create_task(publish_all())
        await page.wait_for_function("() => t.ids.length >= 1000", timeout=15_000)
        system.edge.kill(signal.SIGKILL)
        await page.wait_for_function("() => !t.client.connected", timeout=10_000)
        system.edge.start()
        await system.wait_edge_ready()
        await publishing
        await publisher.close()
    # On a timeout the assertions below say what is missing, with the page's and the edge's account.
    with contextlib.suppress(PlaywrightTimeout):
        await page.wait_for_function("() => t.ids.length >= 5000", timeout=int(timeout(30) * 1000))
    await asyncio.sleep(0.5)
    seen = await page.evaluate("() => ({ids: t.ids, recovered: t.recovered, failed: t.failed, events: t.events,"
                               " connected: t.client.connected, transport: t.client.transport})")
    account = (f"connected {seen['connected']} over {seen['transport']}, {len(seen['ids'])} ids; "
               f"events:\n" + "\n".join(seen["events"]) + f"\nedge log (its push stream and history):\n{edge_account(system)}")
    assert seen["failed"] == [], account
    assert seen["ids"] == [f"p{n}" for n in range(5000)], account
    assert seen["recovered"] == ["stream:page"], account


def edge_account(system: System) -> str:
    """The edge's log lines on its push stream, recoveries and history reads, the last 60 (the whole
    log is searched: a tail can have scrolled past them)."""
    lines = system.edge.log_path.read_text(errors="replace").splitlines()
    return "\n".join([line for line in lines if any(w in line for w in ("push stream", "recover", "history"))][-60:])


async def test_push_restart_mid_task_dashboard_resyncs_and_finishes(history_system: System, page: Page):
    system = history_system
    task_list_fetches: list[str] = []
    page.on("request", lambda r: task_list_fetches.append(r.url) if r.url.endswith("/api/tasks") else None)
    await page.goto(system.http_url + "/")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    task_id = await start_task(page, ",".join(f"S{i}" for i in range(30)), "0.25")
    row = task_row(page, task_id)
    await expect(row.locator(".count")).to_have_text(re.compile(r"^[1-9]/30$"))

    system.push.kill(signal.SIGKILL)
    await asyncio.sleep(1.0)
    system.push.start()
    await system.wait_push()
    # Told recovered: false (a new epoch): the page fetched the task list again.
    for _ in range(100):
        if task_list_fetches:
            break
        await asyncio.sleep(0.1)
    assert task_list_fetches, "the dashboard must re-sync its task list"
    # The task service kept what it produced while the push service was down, and sent it after.
    await expect(row.locator(".status")).to_have_text("completed", timeout=20_000)
    await expect(row.locator(".count")).to_have_text("30/30")
