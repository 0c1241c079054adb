"""The admin page (/admin, issue 20.4) in real headless Chromium over a real system with two edges:
signed in with the admin token on one edge, it shows the nodes (both edges with their connections), a
topic's subscribers and presence across the edges, tails a topic (a message published with PushClient
appears), unsubscribes a client and disconnects a user (that user's WebSockets on both edges are
closed 4010, the others stay); screenshots in test-artifacts/. A wrong token is refused on the page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.async_api import Page, expect

from pushclient import PushClient
from tests.browser.conftest import ARTIFACTS, ConsoleWatch
from tests.conftest import start_system
from tests.integration.test_admin_api import ADMIN_ENV, ADMIN_TOKEN, PRESENCE_ENV
from tests.integration.test_presence import next_of
from tests.support.processes import System, another_edge
from tests.support.tokens import token
from tests.support.wsclient import Closed, WsClient

pytestmark = pytest.mark.browser
TOPIC = "room:lobby"


@pytest.fixture(scope="module")
def admin_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    system = start_system(tmp_path_factory, "admin-browser", edge_env=ADMIN_ENV, push_env=PRESENCE_ENV)
    yield system
    system.stop()


@pytest.fixture(scope="module")
def second_edge(admin_system: System) -> Iterator[str]:
    with another_edge(admin_system, "edge-b") as address:
        yield f"ws://{address}"


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


async def test_the_admin_page_shows_tails_unsubscribes_and_disconnects(admin_system: System, second_edge: str,
                                                                      page: Page):
    console = ConsoleWatch(page)
    url = admin_system.ws_url
    alice = await WsClient.connect(url, token=token("alice", info={"name": "Alice"}), topics=TOPIC)
    bob = await WsClient.connect(url, token=token("bob"), topics=TOPIC)
    carol = await WsClient.connect(url, topics=TOPIC)  # anonymous
    alice_b = await WsClient.connect(second_edge, token=token("alice", info={"name": "Alice"}), topics=TOPIC)
    dave = await WsClient.connect(second_edge, token=token("dave"), topics=TOPIC)
    everyone = [alice, bob, carol, alice_b, dave]
    try:
        await sign_in(page, admin_system, ADMIN_TOKEN)
        await expect(page.locator("#session")).to_have_attribute("data-state", "signed-in")
        await _sees_the_cluster(page)
        await screenshot(page, "admin-overview.png")
        async with PushClient(admin_system.push_address) as push:
            await _tails(page, push, everyone)
            await screenshot(page, "admin-tail.png")
            await _unsubscribes_and_disconnects(page, push, everyone)
        await screenshot(page, "admin-after-disconnect.png")
    finally:
        for client in everyone:
            await client.close()
    assert console.errors == []


async def _sees_the_cluster(page: Page) -> None:
    """Nodes (one push replica; this edge with three connections, the other with two), the topic with
    5 subscribers, its presence across both edges (users, info), and this edge's counters."""
    await expect(page.locator("#nodes tbody tr[data-kind=push]")).to_have_count(1)
    await expect(page.locator("#nodes tbody tr[data-kind=edge]")).to_have_count(2)
    this_edge = page.locator("#nodes tbody tr.this-edge")
    await expect(this_edge.locator(".connections")).to_have_text("3")
    await expect(this_edge.locator(".subscriptions")).to_have_text("3")
    other_edge = page.locator("#nodes tbody tr[data-kind=edge]:not(.this-edge)")
    await expect(other_edge.locator(".connections")).to_have_text("2")
    row = page.locator(f'#channels tbody tr[data-topic="{TOPIC}"]')
    await expect(row.locator(".subscribers")).to_have_text("5")
    await row.get_by_role("button", name="Presence").click()
    await expect(page.locator("#presence-stats")).to_have_text("5 clients, 3 users")
    users = page.locator("#presence tbody tr .user")
    await expect(users).to_have_count(5)
    assert sorted(await users.all_text_contents()) == ["(anonymous)", "alice", "alice", "bob", "dave"]
    await expect(page.locator("#presence tbody tr").filter(has_text="alice")).to_contain_text(
        ['{"name":"Alice"}', '{"name":"Alice"}'])
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


async def _unsubscribes_and_disconnects(page: Page, push: PushClient, everyone: list[WsClient]) -> None:
    """Carol unsubscribed from the topic (told so, still connected); then alice disconnected: her
    sockets on both edges closed 4010, bob's, carol's and dave's open (bob and dave still get the
    topic's messages, carol does not)."""
    alice, bob, carol, alice_b, dave = everyone
    clients = page.locator("#presence tbody tr")
    await clients.filter(has_text="(anonymous)").get_by_role("button", name="Unsubscribe").click()
    told = await next_of(carol, "ack")
    assert told["data"] == {"type": "unsubscribe", "topics": [TOPIC], "server": True}
    await expect(page.locator("#presence-stats")).to_have_text("4 clients, 3 users")
    await clients.filter(has_text="alice").first.get_by_role("button", name="Disconnect user").click()
    await expect(page.locator("#action-result")).to_have_text("disconnect: user alice — sent to the edges")
    for closed_client in (alice, alice_b):
        with pytest.raises(Closed) as closed:
            await next_of(closed_client, "never")
        assert closed.value.code == 4010
    await expect(page.locator("#presence tbody tr .user")).to_have_text(["bob", "dave"])
    await expect(page.locator("#presence-stats")).to_have_text("2 clients, 2 users")
    await expect(page.locator("#nodes tbody tr.this-edge .connections")).to_have_text("2")
    await expect(page.locator("#nodes tbody tr[data-kind=edge]:not(.this-edge) .connections")).to_have_text("1")
    await push.publish(TOPIC, "chat", {"text": "still here?"}, id="m2")
    for client in (bob, dave):
        assert (await next_of(client, "chat"))["id"] == "m2"
    await expect(page.locator("#tail li").last).to_contain_text("still here?")
    pong = await carol.request({"type": "ping", "id": "p1"})
    assert pong["type"] == "pong"
    await carol.expect_silence(0.3)  # unsubscribed: m2 did not reach carol
