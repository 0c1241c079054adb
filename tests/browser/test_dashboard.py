"""The dashboard in real headless Chromium: tasks to completed, cancel, an edge restart mid-task."""

from __future__ import annotations

import re
import signal

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import ARTIFACTS, ConsoleWatch
from tests.conftest import start_system
from tests.support.processes import System

pytestmark = pytest.mark.browser


def row(page: Page, nth: int = 0):
    return page.locator("#tasks tbody tr").nth(nth)


async def start_task(page: Page, symbols: str, interval: str) -> str:
    await page.fill("#symbols", symbols)
    await page.fill("#interval", interval)
    before = await page.locator("#tasks tbody tr").count()
    await page.click("#start")
    await expect(page.locator("#tasks tbody tr")).to_have_count(before + 1)
    return await row(page).get_attribute("data-task-id")


def task_row(page: Page, task_id: str):
    return page.locator(f'#tasks tbody tr[data-task-id="{task_id}"]')


async def percentage(page: Page, task_id: str) -> float:
    return float((await task_row(page, task_id).locator(".pct").inner_text()).rstrip("%"))


async def test_dashboard_runs_a_task_to_completed_and_cancels_another(system: System, page: Page):
    console = ConsoleWatch(page)
    await page.goto(system.http_url + "/")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "connected")

    task_id = await start_task(page, "BTCUSDT,ETHUSDT,BNBUSDT,SOLUSDT,XRPUSDT,ADAUSDT", "0.4")
    row_ = task_row(page, task_id)
    await expect(row_.locator(".status")).to_have_text("running")
    await expect(row_.locator(".count")).to_have_text(re.compile(r"^[2-4]/6$"), timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard-mid-task.png"
    await page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot of the dashboard mid-task: {shot}")
    assert 0 < await percentage(page, task_id) < 100

    await expect(row_.locator(".status")).to_have_text("completed", timeout=15_000)
    await expect(row_.locator(".pct")).to_have_text("100%")
    await expect(row_.locator(".count")).to_have_text("6/6")
    await expect(row_.locator(".current")).to_have_text("ADAUSDT")
    assert await row_.locator(".bar > span").evaluate("e => e.style.width") == "100%"

    other = await start_task(page, ",".join(f"S{i}" for i in range(30)), "0.5")
    other_row = task_row(page, other)
    await expect(other_row.locator(".status")).to_have_text("running")
    await other_row.locator("button.cancel").click()
    await expect(other_row.locator(".status")).to_have_text("cancelled")
    await expect(other_row.locator("button.cancel")).to_be_disabled()
    assert await percentage(page, other) < 100
    await expect(row_.locator(".status")).to_have_text("completed")

    # Notifications: a message to myself arrives in the panel.
    await page.fill("#message", "hello from the test")
    await page.click("#send")
    await expect(page.locator("#notifications li").first).to_contain_text("hello from the test")
    assert console.errors == []


@pytest.fixture
def own_system(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "edge-restart")
    yield system
    system.stop()


async def test_edge_restart_mid_task_reconnects_resubscribes_and_the_bar_reaches_100(own_system: System, page: Page):
    system = own_system
    sockets: list[list[str]] = []  # frames sent, per WebSocket the page opened
    page.on("websocket", lambda ws: (sockets.append([]), ws.on("framesent", lambda f: sockets[-1].append(f))))
    await page.goto(system.http_url + "/")
    indicator = page.locator("#connection")
    await expect(indicator).to_have_attribute("data-state", "connected")

    # 20 s of task: room for the restart even on a loaded machine.
    task_id = await start_task(page, ",".join(f"S{i}" for i in range(80)), "0.25")
    row_ = task_row(page, task_id)
    await expect(row_.locator(".count")).to_have_text(re.compile(r"^[1-9]/80$"))

    system.edge.kill(signal.SIGKILL)
    await expect(indicator).to_have_attribute("data-state", "disconnected")
    system.edge.start()
    await system.wait_edge_ready()
    await expect(indicator).to_have_attribute("data-state", "connected", timeout=20_000)
    reconnected_at = await percentage(page, task_id)
    assert reconnected_at < 100, "the edge must come back while the task still runs"

    # The client resubscribed by itself on its new socket.
    assert len(sockets) >= 2
    resubscribe = [f for f in sockets[-1] if '"subscribe"' in f]
    assert resubscribe and all(t in resubscribe[0] for t in ("task:progress", "task:status", "task:list"))

    await expect(row_.locator(".status")).to_have_text("completed", timeout=40_000)
    await expect(row_.locator(".pct")).to_have_text("100%")
    await expect(row_.locator(".count")).to_have_text("80/80")
