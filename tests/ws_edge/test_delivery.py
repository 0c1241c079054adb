"""The fan-out round: one write per socket that takes it, frames of at most the cap; the others queue."""

from __future__ import annotations

from typing import Any

from tests.support.deliveries import D
from ws_edge.core.frames import batch_frame, websocket_text_frame
from ws_edge.core.routing import DeliveryRouter
from ws_edge.delivery import DeliveryPump


class FakeConnection:
    def __init__(self, ready: bool) -> None:
        self.wires: list[bytes] = []
        self.queued: list[Any] = []
        self.direct = self._write if ready else None

    def _write(self, wire: bytes) -> bool:
        self.wires.append(wire)
        return True

    def send_frames(self, frames: list[bytes], wire: bytes, messages: list[Any], key: Any) -> None:
        self.queued.extend(messages)


def test_a_round_of_several_batches_goes_in_full_frames_to_ready_sockets_and_queues_for_the_others():
    router = DeliveryRouter()
    ready, behind = FakeConnection(True), FakeConnection(False)
    router.topics.add("t", ready)
    router.topics.add("t", behind)
    pump = DeliveryPump(router, read_history=None, conflated=[], batch_max=3)  # type: ignore[arg-type]
    deliveries = [D(topic="t", frame=f'{{"n":{n}}}'.encode()) for n in range(5)]
    pump.fan_out([[d] for d in deliveries])  # five batches of one, as a quiet push service sends them
    frames = [batch_frame([d.frame for d in deliveries[:3]]), batch_frame([d.frame for d in deliveries[3:]])]
    assert ready.wires == [b"".join(websocket_text_frame(f) for f in frames)]
    assert behind.queued == deliveries and behind.wires == []


def test_sockets_behind_get_each_message_with_its_conflation_key():
    router = DeliveryRouter()
    behind = FakeConnection(False)
    keys: list[Any] = []
    behind.send_frames = lambda frames, wire, messages, key: keys.extend(key(m) for m in messages)  # type: ignore[method-assign]
    router.topics.add("feed:1", behind)
    router.topics.add("other", behind)
    pump = DeliveryPump(router, read_history=None, conflated=["feed:*"])  # type: ignore[arg-type]
    pump.fan_out([[D(topic="feed:1", frame=b"1", conflation_key="a"), D(topic="other", frame=b"2", conflation_key="b")]])
    assert keys == ["feed:1\x00a", None]
