"""Presence in real headless Chromium (issue 15): the dashboard's watcher count of a task follows a
second page opening and closing; the client library's presence, presenceStats and join/leave."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import ConsoleWatch, FrameWatch
from tests.browser.test_dashboard import start_task, task_row
from tests.conftest import start_system
from tests.support.processes import System

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def presence_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    system = start_system(tmp_path_factory, "presence-browser",
                          push_env={"PUSH_PRESENCE_RULES": "task:watch:*:presence+joinleave,room:*:presence+joinleave"})
    yield system
    system.stop()


async def test_the_watcher_count_of_a_task_follows_a_second_page(presence_system: System, page: Page, browser: Browser):
    console = ConsoleWatch(page)
    await page.goto(presence_system.http_url + "/")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    task_id = await start_task(page, "A,B,C,D,E,F,G,H,I,J,K,L,M,N,O,P,Q,R,S,T", "2")
    watchers = task_row(page, task_id).locator(".watchers")
    await expect(watchers).to_have_text("1")

    context = await browser.new_context()
    second = await context.new_page()
    frames = FrameWatch(second)
    await second.goto(presence_system.http_url + "/")
    await expect(task_row(second, task_id).locator(".watchers")).to_have_text("2")
    await expect(watchers).to_have_text("2")  # told by the join event, counted again
    await context.close()
    await expect(watchers).to_have_text("1")
    assert frames.check() > 0
    assert console.errors == []


async def test_the_client_library_reads_presence_and_hears_joins_and_leaves(presence_system: System, page: Page,
                                                                            browser: Browser):
    await page.goto(presence_system.http_url + "/static/index.html")
    result = await page.evaluate("""async () => {
        const { WebSocketService } = await import("/static/push-client.js");
        const url = location.origin.replace("http", "ws") + "/ws";
        const watcher = new WebSocketService({ url, maxReconnectAttempts: 0 });
        const events = [];
        const topicHandler = [];
        watcher.on("join", (data, m) => events.push(["join", m.topic, data.client_id]));
        watcher.on("leave", (data, m) => events.push(["leave", m.topic, data.client_id]));
        watcher.on("room:lib", (data) => topicHandler.push(data));
        const connected = new Promise((r) => watcher.onConnectionChange((up) => up && r()));
        watcher.connect();
        await connected;
        const ack = await watcher.subscribe("room:lib", { joinLeave: true });
        const guest = new WebSocketService({ url, topics: ["room:lib"], maxReconnectAttempts: 0 });
        const guestUp = new Promise((r) => guest.onConnectionChange((up) => up && r()));
        guest.connect();
        await guestUp;
        const until = async (n) => { for (let i = 0; i < 200 && events.length < n; i++) await new Promise((r) => setTimeout(r, 25)); };
        await until(2);
        const clients = await watcher.presence("room:lib");
        const stats = await watcher.presenceStats("room:lib");
        guest.disconnect();
        await until(3);
        let refused = null;
        try { await watcher.presence("news"); } catch (err) { refused = err.code; }
        watcher.disconnect();
        return { ack, events, ids: clients.map((c) => c.client_id), stats, watcherId: watcher.clientId,
                 guestId: guest.clientId, topicHandler, refused };
    }""")
    assert result["ack"] == {"type": "subscribe", "topics": ["room:lib"], "join_leave": True}
    me, guest = result["watcherId"], result["guestId"]
    assert result["events"] == [["join", "room:lib", me], ["join", "room:lib", guest], ["leave", "room:lib", guest]]
    assert result["ids"] == [me, guest] and result["stats"] == {"clients": 2, "users": 0}
    assert result["topicHandler"] == []  # join/leave are not the topic's messages
    assert result["refused"] == "PRESENCE_DISABLED"
