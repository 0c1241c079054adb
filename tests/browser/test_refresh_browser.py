"""push-client.js in real Chromium keeps a session alive by in-band refresh: one connection from start
to end (no reconnect, no recovery), every message in order, refreshes ahead of expiry with jitter;
a client that does not refresh is closed 4001. Publish and RPC through the client library's Promises
are in test_hooks_browser.py.

Token lifetime is a parameter: 15 s tokens over 35 s show several refreshes; the literal case (30 s
tokens kept alive 3 minutes, the default refresh window) is marked `long`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from playwright.async_api import Page

from pushclient import PushClient
from tests.conftest import start_system
from tests.support.processes import System
from tests.support.tokens import token

pytestmark = pytest.mark.browser
TOPIC = "page:ticks"

SETUP = """async ([url, topic, config]) => {
  const { WebSocketService } = await import('/static/push-client.js');
  const log = { events: [], ticks: [], refreshed: [], mints: [] };
  // When each token was asked for and came back (through Playwright, from this test's process): a
  // late refresh then shows whether the time went in the page's timer or in the round trip.
  const getToken = async () => {
    const asked = Date.now() / 1000;
    const token = await window.mintToken();
    log.mints.push({ asked, got: Date.now() / 1000 });
    return token;
  };
  const client = new WebSocketService({ url, getToken, ...config });
  for (const key of ['$connecting', '$closed', '$reconnect', '$recovered', '$recovery_failed', '$error']) {
    client.on(key, (data) => log.events.push({ key, ...(data || {}) }));
  }
  client.on('$refreshed', (data) => log.refreshed.push({ at: Date.now() / 1000, ...data }));
  client.on(topic, (data) => log.ticks.push(data.n));
  window.t = { client, log };
  const welcome = new Promise((resolve) => { const off = client.on('connected', () => { off(); resolve(); }); });
  client.connect();
  await welcome;
  // Acknowledged only once the push service has applied it: what the test publishes next reaches the
  // page. (`connected` comes before the subscribe that a `topics` option sends on open is applied, and
  // a tick published in between was lost once, beside a CPU hog.)
  await client.subscribe(topic);
  return client.expiresAt;
}"""


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    system = start_system(tmp_path_factory, "refresh-browser", edge_env={
        "EDGE_TOKEN_REFRESH_NOTICE": "2", "EDGE_ALLOW_ANONYMOUS": "false"})
    yield system
    system.stop()


async def open_client(page: Page, system: System, ttl: float, **config) -> int:
    await page.expose_function("mintToken", lambda: token("pia", ttl=ttl))
    await page.goto(system.http_url + "/healthz")
    return await page.evaluate(SETUP, [system.ws_url + "/ws", TOPIC, config])


async def kept_alive(page: Page, system: System, ttl: float, duration: float, **config) -> None:
    first_exp = await open_client(page, system, ttl, **config)
    assert abs(first_exp - (time.time() + ttl)) < 2
    for key, value in config.items():  # the margin this test relies on is the client's, as given
        assert await page.evaluate(f"() => t.client.config.{key}") == value
    published = 0
    async with PushClient(system.push_address) as push:
        started = time.monotonic()
        while time.monotonic() - started < duration:
            await push.queue_message({"type": "tick", "data": {"n": published}}, topic=TOPIC)
            published += 1
            await asyncio.sleep(0.5)
    try:
        await page.wait_for_function(f"() => t.log.ticks.length >= {published}", timeout=15_000)
    finally:
        log = await page.evaluate("() => t.log")
        print(f"published {published}; first exp {first_exp}; page log {log}")
    assert log["ticks"] == list(range(published))
    # one connection throughout: connected once, never closed, no recovery
    assert log["events"] == [{"key": "$connecting", "attempt": 0}]
    assert await page.evaluate("() => t.client.connected")
    refreshed = log["refreshed"]
    assert len(refreshed) >= int(duration / ttl), refreshed
    expiries = [r["expires_at"] for r in refreshed]
    assert expiries == sorted(expiries) and expiries[-1] >= first_exp + duration - ttl
    # each refresh came ahead of the expiry it replaced
    previous = first_exp
    for r in refreshed:
        assert r["at"] < previous, (r, previous, log["mints"])
        previous = r["expires_at"]


async def test_a_short_token_is_refreshed_in_band_with_no_reconnect(system: System, page: Page):
    # By default the client refreshes at 0.6-0.85 of the time left. A short token leaves little of it
    # for the round trip (timer, a token minted through Playwright's bridge in this process, the
    # edge's answer): 6 s tokens left 0.9 s, 15 s tokens 2.25 s, and with three workers beside a CPU
    # hog each failed once, ticks lost (a stall past that margin closes 4001; the reconnect cannot
    # recover a topic without history). The window is the client's `refreshWindow` setting: 0.3-0.5 leaves 7.5 s, and 35 s
    # still see four or more refreshes on one connection. The default window is the long case's
    # (30 s tokens: 4.5 s) and test_the_refresh_jitter_spreads_a_fleet's.
    await kept_alive(page, system, ttl=15, duration=35, refreshWindow=[0.3, 0.5])


@pytest.mark.long
@pytest.mark.timeout(300)
async def test_a_30_s_token_kept_alive_for_3_minutes_in_chromium(system: System, page: Page):
    await kept_alive(page, system, ttl=30, duration=180)


async def test_a_client_that_does_not_refresh_is_closed_4001(system: System, page: Page):
    await page.goto(system.http_url + "/healthz")
    short = token("quinn", ttl=4)
    await page.evaluate("""async ([url, token]) => {
      const { WebSocketService } = await import('/static/push-client.js');
      const client = new WebSocketService({ url, token, maxReconnectAttempts: 0 });  // no getToken: no refresh
      window.closes = [];
      client.on('$closed', (data) => window.closes.push(data));
      client.connect();
    }""", [system.ws_url + "/ws", short])
    started = time.monotonic()
    await page.wait_for_function("() => window.closes.length >= 1", timeout=15_000)
    closes = await page.evaluate("() => window.closes")
    assert closes[0] == {"code": 4001, "reason": "token expired"}
    assert time.monotonic() - started >= 2  # at exp, not at once


async def test_the_refresh_jitter_spreads_a_fleet(system: System, page: Page):
    """The client's own schedule: 1,000 clients with 1-hour tokens from the same minute refresh over
    a quarter of an hour, not in the same second (bench/refresh_spread.py prints the histogram)."""
    await page.goto(system.http_url + "/healthz")
    delays = await page.evaluate("""async () => {
      const { refreshDelay } = await import('/static/push-client.js');
      return Array.from({ length: 1000 }, (_, i) => refreshDelay(3600_000 - (i % 60) * 1000) / 1000);
    }""")
    assert min(delays) >= 0.6 * 3540 and max(delays) <= 0.85 * 3600
    per_second = {}
    for delay in delays:
        per_second[int(delay)] = per_second.get(int(delay), 0) + 1
    # Uniform over ~900 s: ~1.1 a second. The busiest second of a run holds 9 or more in 1 run of 400
    # (a simulation of 20,000 runs: this asserted at most 8, and failed so once beside a CPU hog), 13 or
    # more in about 1 of 10 million; the same fleet with no jitter puts 16-17 in each second.
    assert max(per_second.values()) <= 12, max(per_second.values())
