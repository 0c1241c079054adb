"""The edge's join/leave summaries are sent on the first run of their timer under uvloop, whose clock
moves in whole milliseconds and runs a timer with `loop.time()` up to one short of its deadline."""

from __future__ import annotations

import asyncio

import orjson
import uvloop
from push.v1 import push_service_pb2 as pb

from tests.support.counting import CallCounter
from tests.support.timing import timeout
from ws_edge.core.routing import DeliveryRouter
from ws_edge.presence import EdgePresence


class Subscriber:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes, wire: bytes | None = None) -> None:
        self.frames.append(frame)


def _join(client: str) -> pb.Delivery:
    return pb.Delivery(kind=pb.JOIN_LEAVE, topic="room:1",
                       frame=orjson.dumps({"type": "join", "topic": "room:1", "data": {"client_id": client}}))


def test_a_summary_leaves_on_the_first_run_of_its_timer_under_uvloop():
    async def one_summary() -> int:
        # 2.3 ms: a deadline between two ticks of uvloop's clock. Rate 1: the second join is summarised.
        presence = EdgePresence("e", DeliveryRouter(), {}, address="", join_leave_rate=1, summary_interval=0.0023,
                                report_max_topics=10)
        subscriber = Subscriber()
        presence.join_leave.add("room:1", subscriber)
        timer = CallCounter(presence, "_send_summaries")
        presence.take([_join("a"), _join("b")])
        assert [orjson.loads(f)["type"] for f in subscriber.frames] == ["join"]
        async with asyncio.timeout(timeout(5)):
            while len(subscriber.frames) < 2:
                await asyncio.sleep(0)
        assert orjson.loads(subscriber.frames[1])["type"] == "presence_summary"
        if presence._summaries is not None:
            presence._summaries.cancel()
        return timer.calls

    async def main() -> list[int]:
        return [await one_summary() for _ in range(20)]

    assert uvloop.run(main()) == [1] * 20
