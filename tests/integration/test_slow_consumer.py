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
from pushclient.streams import StreamConnection
from tests.conftest import start_system
from tests.support.processes import System
from tests.support.timing import timeout
from tests.support.wsclient import parse_server_frame

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


TOPICS = "feed:progress,feed:events"


async def read_all(system: System, transport: str, ready: asyncio.Event, counter: list[int]) -> list[int]:
    seqs: list[int] = []
    if transport == "websocket":
        # No client keepalive: on a loaded machine its 20 s ping timeout is not what this test is about.
        async with websockets.connect(f"{system.ws_url}/ws?topics={TOPICS}", max_size=None,
                                      ping_interval=None) as connection:
            assert orjson.loads(await connection.recv())["type"] == "connected"
            counter[0] += 1
            if counter[0] == 50:
                ready.set()
            while len(seqs) < TOTAL:  # counted without parsing: 50 readers share this one process
                frame = await asyncio.wait_for(connection.recv(decode=False), timeout(60))
                seqs.extend(int(n) for n in SEQ.findall(frame))
        return seqs
    stream = await StreamConnection.open(system.http_url, "/sse", topics=TOPICS)
    try:
        assert orjson.loads(await stream.recv_raw() or b"")["type"] == "connected"
        counter[0] += 1
        if counter[0] == 50:
            ready.set()
        while len(seqs) < TOTAL:
            frame = await asyncio.wait_for(stream.recv_raw(), timeout(60))
            assert frame is not None, "the stream ended early"
            seqs.extend(int(n) for n in SEQ.findall(frame))
    finally:
        await stream.close()
    return seqs


class SlowReader:
    """A client that stops reading at once, behind a tiny receive buffer; then reads what it holds."""

    def __init__(self, system: System, transport: str) -> None:
        self.system, self.transport = system, transport
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", system.edge_port))

    async def open(self) -> None:
        if self.transport == "websocket":
            self.ws = await websockets.connect(f"{self.system.ws_url}/ws?topics={TOPICS}", sock=self.sock,
                                               max_queue=1, max_size=None)
            assert orjson.loads(await self.ws.recv())["type"] == "connected"
        else:  # reads ahead at most 64 KiB, then leaves the rest in the socket
            self.stream = await StreamConnection.open(self.system.http_url, "/sse", sock=self.sock, limit=65536,
                                                      topics=TOPICS)
            assert orjson.loads(await self.stream.recv_raw() or b"")["type"] == "connected"

    async def read_to_the_close(self) -> tuple[int, tuple[int, str]]:
        """Messages received, and the close code and reason."""
        received = 0
        if self.transport == "websocket":
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    frame = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout(30)))
                    received += len(frame["messages"]) if frame["type"] == "batch" else 1
            assert closed.value.rcvd is not None
            return received, (closed.value.rcvd.code, closed.value.rcvd.reason)
        try:
            while (raw := await asyncio.wait_for(self.stream.recv_raw(), timeout(30))) is not None:
                frame = parse_server_frame(raw)
                if frame["type"] == "close":
                    assert await self.stream.recv_raw() is None, "nothing after the close frame"
                    return received, (frame["data"]["code"], frame["data"]["reason"])
                received += len(frame["messages"]) if frame["type"] == "batch" else 1
        finally:
            await self.stream.close()
        raise AssertionError("the stream ended without a close frame")


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_slow_client_is_coalesced_then_disconnected_and_the_others_get_everything(slow_system: System,
                                                                                        transport: str):
    system = slow_system
    edge_pid = system.edge.proc.pid  # type: ignore[union-attr]
    before = rss_kib(edge_pid)

    slow = SlowReader(system, transport)
    await slow.open()

    ready, counter = asyncio.Event(), [0]
    readers = [asyncio.create_task(read_all(system, transport, ready, counter)) for _ in range(50)]
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
    received, close = await slow.read_to_the_close()
    assert close == (4008, "slow consumer")
    assert received < TOTAL
    stats = health(system)
    assert stats["slow_consumer_disconnects"] == 1 and stats["coalesced_messages"] > 0
    print(f"\nedge RSS before {before} KiB, peak {peak} KiB; slow client got {received} of {TOTAL}; "
          f"{stats['coalesced_messages']} coalesced")
    assert peak - before < 32 * 1024, "bounded: the slow client's queue is capped at 1 MiB"
