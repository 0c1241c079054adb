"""A live fuzz test: 10,000 malformed frames at a running edge, each answered as the protocol says,
while another client's deliveries go on untouched and the edge's memory stays where it was."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import orjson
import pytest
import websockets

from pushclient import PushClient
from pushclient.client import outgoing
from tests.conftest import start_system
from tests.support.processes import System
from tests.support.timing import timeout
from tests.support.wsclient import WsClient

LIMIT = 65536


def malformed(rng: random.Random, i: int) -> tuple[str | bytes, str]:
    """One bad frame and the error code the protocol answers it with."""
    kind = rng.randrange(12)
    letters = "".join(rng.choice("abcxyz:{[\"'\\ 0123") for _ in range(rng.randrange(1, 200)))
    if kind == 0:
        return "{" + letters, "INVALID_JSON"
    if kind == 1:
        return b"\xff\xfe" + rng.randbytes(rng.randrange(0, 100)), "INVALID_JSON"
    if kind == 2:
        return rng.choice(['[1, 2]', '"text"', "123", "null", "true", "[]", "-0.5"]), "INVALID_MESSAGE"
    if kind == 3:
        return orjson.dumps({"id": f"f{i}", "data": {"x": letters}}), "INVALID_MESSAGE"
    if kind == 4:
        return orjson.dumps({"type": rng.choice([5, [], {}, None, True, ""]), "id": f"f{i}"}), "INVALID_MESSAGE"
    if kind == 5:
        bad_id = rng.choice(["1.5", "true", '""', '"' + "i" * 200 + '"', "1" + "0" * 30, "[1]"])
        return '{"type": "ping", "id": ' + bad_id + "}", "INVALID_MESSAGE"
    if kind == 6:
        depth = rng.choice([50, 500])
        return '{"type": "ping", "id": "d", "data": ' + "[" * depth + "]" * depth + "}", "INVALID_MESSAGE"
    if kind == 7:
        depth = rng.choice([1500, 3000])
        return '{"type": "ping", "id": "d", "data": ' + "[" * depth + "]" * depth + "}", "INVALID_JSON"
    if kind == 8:
        return '{"type": "ping", "id": "n", "data": {"n": 1e400}}', "INVALID_JSON"
    if kind == 9:
        return orjson.dumps({"type": f"zz_{letters[:20]}", "id": f"f{i}", "unknown": [1, {"a": None}]}), \
            "UNKNOWN_MESSAGE_TYPE"
    if kind == 10:
        topics = rng.choice([["bad topic"], ["x" * 200], ["ok", "no/slash"], [1], ["a", None]])
        return orjson.dumps({"type": "subscribe", "id": f"f{i}", "data": {"topics": topics}}), "INVALID_TOPIC"
    if rng.random() < 0.2:  # oversize, within what the WebSocket layer still reads
        return '{"type": "ping", "id": "big", "pad": "' + "p" * rng.randrange(LIMIT, 3 * LIMIT) + '"}', \
            "MESSAGE_TOO_LARGE"
    return orjson.dumps({"type": "subscribe", "id": f"f{i}", "data": {"topics": 5}}), "INVALID_MESSAGE"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def fuzz_system(tmp_path_factory: pytest.TempPathFactory):
    system = start_system(tmp_path_factory, "fuzz", edge_env={
        "EDGE_RATE_LIMIT": "1000000", "EDGE_RATE_BURST": "1000000", "EDGE_SEND_QUEUE_FRAMES": "100000",
        "EDGE_LOG_LEVEL": "WARNING",
    })
    yield system
    system.stop()


async def fuzz(url: str, frames: list[tuple[str | bytes, str]]) -> list[dict]:
    async with websockets.connect(url, max_size=None) as connection:
        welcome = orjson.loads(await connection.recv())
        assert welcome["type"] == "connected"

        async def send_all() -> None:
            for frame, _ in frames:
                await connection.send(frame)

        sender = asyncio.create_task(send_all())
        answers = [orjson.loads(await asyncio.wait_for(connection.recv(), timeout(30))) for _ in frames]
        await sender
        await connection.send('{"type": "ping", "id": "alive"}')
        assert orjson.loads(await asyncio.wait_for(connection.recv(), timeout(10)))["type"] == "pong"
    return answers


async def test_ten_thousand_malformed_frames(fuzz_system: System):
    system = fuzz_system
    rng = random.Random(20261129)
    edge_pid = system.edge.proc.pid  # type: ignore[union-attr]
    watcher = await WsClient.connect(system.ws_url, topics="fuzz:live")
    try:
        warm_up = [malformed(rng, i) for i in range(2000)]
        answers = await fuzz(system.ws_url + "/ws", warm_up)
        assert [a["error"]["code"] for a in answers] == [code for _, code in warm_up]
        before = rss_kib(edge_pid)

        frames = [malformed(rng, i) for i in range(10_000)]
        async with PushClient(system.push_address) as push:
            publisher = push.stream_publisher()
            publisher.start()

            async def publish_meanwhile() -> None:
                for n in range(500):
                    publisher.submit(outgoing("fuzz:live", "tick", {"n": n}, id=f"live{n}"))
                    await asyncio.sleep(0.002)

            publishing = asyncio.create_task(publish_meanwhile())
            answers = await fuzz(system.ws_url + "/ws", frames)
            await publishing
            await publisher.flush()
            await publisher.close()

        assert len(answers) == 10_000
        assert all(a["type"] == "error" and set(a) == {"type", "id", "timestamp", "error"} for a in answers)
        assert [a["error"]["code"] for a in answers] == [code for _, code in frames]
        assert {code for _, code in frames} >= {"INVALID_JSON", "INVALID_MESSAGE", "UNKNOWN_MESSAGE_TYPE",
                                                 "INVALID_TOPIC", "MESSAGE_TOO_LARGE"}
        # The other client got every message published meanwhile, in order.
        received = await watcher.messages(500, wait=30)
        assert [m["id"] for m in received] == [f"live{n}" for n in range(500)]
        after = rss_kib(edge_pid)
        print(f"\nedge RSS before {before} KiB, after 10,000 malformed frames {after} KiB")
        assert after - before < 4 * 1024, (before, after)
        assert system.edge.proc.poll() is None  # type: ignore[union-attr]
    finally:
        await watcher.close()
