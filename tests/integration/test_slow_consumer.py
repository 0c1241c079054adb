"""One client stops reading while 50 others read 20,000 messages."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import urllib.request
from pathlib import Path

import orjson
import pytest
import websockets

from pushclient import PushClient
from pushclient.client import outgoing
from tests.conftest import start_system
from tests.support.processes import System
from tests.support.timing import timeout

TOTAL = 20_000
PAD = "x" * 200
SEQ = re.compile(rb'"seq":(\d+)')


@pytest.fixture
def slow_system(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "slow", edge_env={
        "EDGE_CONFLATE_TOPICS": "feed:progress", "EDGE_COALESCE_MARK": "100", "EDGE_SEND_QUEUE_FRAMES": "1000",
        "EDGE_SEND_QUEUE_BYTES": "1048576", "EDGE_LOG_LEVEL": "WARNING",
    })
    yield system
    system.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def health(system: System) -> dict:
    with urllib.request.urlopen(system.http_url + "/healthz") as response:
        return json.loads(response.read())


async def read_all(url: str, ready: asyncio.Event, counter: list[int]) -> list[int]:
    seqs: list[int] = []
    # No client keepalive: on a loaded machine its 20 s ping timeout is not what this test is about.
    async with websockets.connect(url, max_size=None, ping_interval=None) as connection:
        assert orjson.loads(await connection.recv())["type"] == "connected"
        counter[0] += 1
        if counter[0] == 50:
            ready.set()
        while len(seqs) < TOTAL:  # counted without parsing: 50 readers share this one process
            frame = await asyncio.wait_for(connection.recv(decode=False), timeout(60))
            seqs.extend(int(n) for n in SEQ.findall(frame))
    return seqs


async def test_slow_client_is_coalesced_then_disconnected_and_the_others_get_everything(slow_system: System):
    system = slow_system
    url = system.ws_url + "/ws?topics=feed:progress,feed:events"
    edge_pid = system.edge.proc.pid  # type: ignore[union-attr]
    before = rss_kib(edge_pid)

    # The slow client: a tiny receive buffer, and a WebSocket client that stops reading at once.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", system.edge_port))
    slow = await websockets.connect(url, sock=sock, max_queue=1, max_size=None)
    assert orjson.loads(await slow.recv())["type"] == "connected"

    ready, counter = asyncio.Event(), [0]
    readers = [asyncio.create_task(read_all(url, ready, counter)) for _ in range(50)]
    await asyncio.wait_for(ready.wait(), timeout(30))
    peak = before
    async with PushClient(system.push_address) as push:
        publisher = push.stream_publisher(max_buffer=TOTAL)
        publisher.start()
        for seq in range(TOTAL):
            topic = "feed:progress" if seq % 2 else "feed:events"
            publisher.submit(outgoing(topic, "tick", {"seq": seq, "pad": PAD}, conflation_key=f"job{seq % 20}"))
            if seq % 100 == 99:  # ~2,000 messages/s: 100,000 deliveries/s to the 50 readers
                await asyncio.sleep(0.05)
                peak = max(peak, rss_kib(edge_pid))
        await publisher.flush()
        await publisher.close()
    results = await asyncio.gather(*readers)
    peak = max(peak, rss_kib(edge_pid))
    for seqs in results:
        assert seqs == list(range(TOTAL))

    # The slow one: what it holds, then the documented close code.
    received = 0
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            frame = orjson.loads(await asyncio.wait_for(slow.recv(), timeout(30)))
            received += len(frame["messages"]) if frame["type"] == "batch" else 1
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        4008, "slow consumer")
    assert received < TOTAL
    stats = health(system)
    assert stats["slow_consumer_disconnects"] == 1 and stats["coalesced_messages"] > 0
    print(f"\nedge RSS before {before} KiB, peak {peak} KiB; slow client got {received} of {TOTAL}; "
          f"{stats['coalesced_messages']} coalesced")
    assert peak - before < 32 * 1024, "bounded: the slow client's queue is capped at 1 MiB"
