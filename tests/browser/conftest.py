"""Real headless Chromium (Debian's), driven by Playwright through executable_path."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.support.asyncapi import check_server_frame

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The closed network: no background services, no component updates, no QUIC probing.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# `expect(...)` assertions wait 5 s by default, and the page's default timeout does not reach them: a page
# that shows what several processes did (edges' reports, a presence change) gets as long as any wait here.
expect.set_options(timeout=15_000)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not await asyncio.to_thread(Path(CHROMIUM).exists):
        pytest.fail(f"Chromium not found at {CHROMIUM}: `make system-deps` installs Debian's chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


class ConsoleWatch:
    """Collects console errors and uncaught page errors; a test asserts there were none."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))


class FrameWatch:
    """Every WebSocket frame the page receives, checked against docs/asyncapi.yaml after the test."""

    def __init__(self, page: Page) -> None:
        self.frames: list[str | bytes] = []
        # Playwright wants Python functions as listeners (not builtins such as list.append).
        page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: self.frames.append(payload)))

    def check(self) -> int:
        for raw in self.frames:
            check_server_frame(orjson.loads(raw))
        return len(self.frames)


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    frames = FrameWatch(page)
    yield page
    await context.close()
    frames.check()
