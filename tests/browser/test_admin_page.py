"""The admin page (/admin, issue 20.4) in real headless Chromium over a real system: signed in with the
admin token it shows the nodes, a topic's subscribers and presence, tails a topic (a message published
with PushClient appears), unsubscribes a client and disconnects a user (that user's WebSocket is closed
4010, the others stay); screenshots in test-artifacts/. A wrong token is refused on the page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.async_api import Page, expect

from pushclient import PushClient
from tests.browser.conftest import ARTIFACTS, ConsoleWatch
from tests.conftest import start_system
from tests.integration.test_admin_api import ADMIN_ENV, ADMIN_TOKEN, PRESENCE_ENV
from tests.integration.test_presence import next_of
from tests.support.processes import System
from tests.support.tokens import token
from tests.support.wsclient import Closed, WsClient

pytestmark = pytest.mark.browser
TOPIC = "room:lobby"


@pytest.fixture(scope="module")
def admin_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    system = start_system(tmp_path_factory, "admin-browser", edge_env=ADMIN_ENV, push_env=PRESENCE_ENV)
    yield system
    system.stop()


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    await page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot: {shot}")


async def sign_in(page: Page, system: System, secret: str) -> None:
    await page.goto(system.http_url + "/admin")
    await page.fill("#admin-token", secret)
    await page.click("#sign-in button[type=submit]")


async def test_a_wrong_token_is_refused_on_the_page(admin_system: System, page: Page):
    await sign_in(page, admin_system, token("alice", roles=["admin"]))
    await expect(page.locator("#sign-in-error")).to_contain_text("does not open the admin API")
    await expect(page.locator("#console")).to_be_hidden()
    await expect(page.locator("#session")).to_have_attribute("data-state", "signed-out")


async def test_the_admin_page_shows_tails_unsubscribes_and_disconnects(admin_system: System, page: Page):
    console = ConsoleWatch(page)
    url = admin_system.ws_url
    alice = await WsClient.connect(url, token=token("alice", info={"name": "Alice"}), topics=TOPIC)
    bob = await WsClient.connect(url, token=token("bob"), topics=TOPIC)
    carol = await WsClient.connect(url, topics=TOPIC)  # anonymous
    try:
        await sign_in(page, admin_system, ADMIN_TOKEN)
        await expect(page.locator("#session")).to_have_attribute("data-state", "signed-in")
        await _sees_the_cluster(page)
        await screenshot(page, "admin-overview.png")
        async with PushClient(admin_system.push_address) as push:
            await _tails(page, push, [alice, bob, carol])
            await screenshot(page, "admin-tail.png")
            await _unsubscribes_and_disconnects(page, push, alice, bob, carol)
        await screenshot(page, "admin-after-disconnect.png")
    finally:
        for client in (alice, bob, carol):
            await client.close()
    assert console.errors == []


async def _sees_the_cluster(page: Page) -> None:
    """Nodes (one push replica, one edge with the three connections), the topic with 3 subscribers,
    its presence (join order, users, info), and this edge's counters."""
    await expect(page.locator("#nodes tbody tr[data-kind=push]")).to_have_count(1)
    edge = page.locator("#nodes tbody tr[data-kind=edge]")
    await expect(edge).to_have_count(1)
    await expect(edge.locator(".connections")).to_have_text("3")
    await expect(edge.locator(".subscriptions")).to_have_text("3")
    await expect(edge).to_have_class("this-edge")
    row = page.locator(f'#channels tbody tr[data-topic="{TOPIC}"]')
    await expect(row.locator(".subscribers")).to_have_text("3")
    await row.get_by_role("button", name="Presence").click()
    await expect(page.locator("#presence-stats")).to_have_text("3 clients, 2 users")
    await expect(page.locator("#presence tbody tr .user")).to_have_text(["alice", "bob", "(anonymous)"])
    await expect(page.locator("#presence tbody tr").first).to_contain_text('{"name":"Alice"}')
    await expect(page.locator("#rates tr[data-series=ws_edge_connections] .value")).to_have_text("3")
    await expect(page.locator("#rates tr[data-series=ws_edge_connections_opened_total] .value")).to_have_text("3")


async def _tails(page: Page, push: PushClient, clients: list[WsClient]) -> None:
    row = page.locator(f'#channels tbody tr[data-topic="{TOPIC}"]')
    await row.get_by_role("button", name="Tail").click()
    await expect(page.locator("#tail-state")).to_have_text("live")
    await push.publish(TOPIC, "chat", {"text": "hello from PushClient"}, id="m1")
    await expect(page.locator("#tail li").last).to_contain_text(f'{TOPIC} chat {{"text":"hello from PushClient"}}')
    for client in clients:
        assert (await next_of(client, "chat"))["id"] == "m1"
    rate = page.locator("#rates tr[data-series=ws_edge_messages_received_total]")
    await expect(rate.locator(".value")).not_to_have_text("0")
    await expect(rate.locator(".rate")).not_to_have_text("")


async def _unsubscribes_and_disconnects(page: Page, push: PushClient, alice: WsClient, bob: WsClient,
                                        carol: WsClient) -> None:
    """Carol unsubscribed from the topic (told so, still connected); then alice disconnected: her
    socket closed 4010, bob's and carol's open (bob still gets the topic's messages)."""
    clients = page.locator("#presence tbody tr")
    await clients.filter(has_text="(anonymous)").get_by_role("button", name="Unsubscribe").click()
    told = await next_of(carol, "ack")
    assert told["data"] == {"type": "unsubscribe", "topics": [TOPIC], "server": True}
    await expect(page.locator("#presence tbody tr .user")).to_have_text(["alice", "bob"])
    await clients.filter(has_text="alice").get_by_role("button", name="Disconnect user").click()
    await expect(page.locator("#action-result")).to_have_text("disconnect: user alice — sent to the edges")
    with pytest.raises(Closed) as closed:
        await next_of(alice, "never")
    assert closed.value.code == 4010
    await expect(page.locator("#presence tbody tr .user")).to_have_text(["bob"])
    await expect(page.locator("#presence-stats")).to_have_text("1 clients, 1 users")
    await expect(page.locator("#nodes tbody tr[data-kind=edge] .connections")).to_have_text("2")
    await push.publish(TOPIC, "chat", {"text": "still here?"}, id="m2")
    assert (await next_of(bob, "chat"))["id"] == "m2"
    await expect(page.locator("#tail li").last).to_contain_text("still here?")
    pong = await carol.request({"type": "ping", "id": "p1"})
    assert pong["type"] == "pong"
    await carol.expect_silence(0.3)  # unsubscribed: m2 did not reach carol
