"""The push link's interest bookkeeping, without a network: what travels in one request, under which
sequence, and which futures its acknowledgement resolves."""

from __future__ import annotations

import asyncio

from ws_edge.push_link import PushLink

# Longer than the edge's 5 ms, so that "not yet sent" holds on a loaded machine too (a process
# descheduled for 5 ms between two lines would see the interval already over).
INTERVAL = 0.2


def connected_link() -> tuple[PushLink, asyncio.Queue]:
    link = PushLink("unused:1", lambda address: None, lambda deliveries: None, lambda: ([], []),  # type: ignore[arg-type, return-value]
                    flush_interval=INTERVAL)
    requests: asyncio.Queue = asyncio.Queue()
    link._changes = requests  # as while its stream is up
    return link, requests


async def test_changes_until_the_flush_travel_as_one_request_and_share_one_future():
    link, requests = connected_link()
    first = link.change(add_client_ids=["a"])
    second = link.change(add_client_ids=["b"], add_topics=["t"])
    assert first is second
    await asyncio.sleep(0)  # after a quiet spell: sent at the end of the turn
    request = requests.get_nowait()
    assert (list(request.add_client_ids), list(request.add_topics), request.sequence) == (["a", "b"], ["t"], 1)
    assert requests.empty()
    later = link.change(add_client_ids=["c"])  # the next turn: a new request, a new sequence
    assert later is not first
    await asyncio.sleep(0)
    assert requests.empty()  # within the interval after the last request: it waits, gathering more
    also = link.change(add_client_ids=["d"])
    assert also is later
    await asyncio.sleep(INTERVAL * 2)
    request = requests.get_nowait()
    assert (list(request.add_client_ids), request.sequence) == (["c", "d"], 2)
    assert requests.empty()
    link._confirm(1)
    assert first.done() and not later.done()
    link._confirm(2)
    assert later.done()
    await asyncio.sleep(INTERVAL * 2)
    link.change(remove_client_ids=["a"])  # quiet again: no wait
    await asyncio.sleep(0)
    assert requests.get_nowait().sequence == 3


async def test_a_key_changing_direction_within_a_turn_splits_the_request_and_the_futures():
    link, requests = connected_link()
    added = link.change(add_topics=["t"])
    removed = link.change(remove_topics=["t"])
    assert removed is not added
    await asyncio.sleep(INTERVAL * 2)
    first, second = requests.get_nowait(), requests.get_nowait()
    assert (list(first.add_topics), first.sequence) == (["t"], 1)
    assert (list(second.remove_topics), second.sequence) == (["t"], 2)
    link._confirm(1)
    assert added.done() and not removed.done()  # the removal is not applied before its own answer
