import orjson

from ws_edge.core.sendqueue import SendQueue


def test_frames_and_envelopes_come_out_in_order_envelopes_batched_by_ten():
    queue = SendQueue(coalesce_mark=1000, max_messages=1000)
    queue.push(b'{"type":"ack"}')
    for n in range(12):
        queue.push(orjson.dumps({"n": n}), envelope=True)
    assert queue.pop_frame() == b'{"type":"ack"}'
    first = orjson.loads(queue.pop_frame())
    assert first["type"] == "batch" and [m["n"] for m in first["messages"]] == list(range(10))
    assert orjson.loads(queue.pop_frame())["messages"] == [{"n": 10}, {"n": 11}]
    assert queue.pop_frame() is None and queue.bytes == 0


def test_past_the_mark_a_newer_message_replaces_the_queued_one_with_its_key():
    queue = SendQueue(coalesce_mark=2, max_messages=10)
    assert queue.push(b"a1", key="a", envelope=True)
    assert queue.push(b"a2", key="a", envelope=True)  # below the mark: both kept
    assert queue.push(b"a3", key="a", envelope=True)  # at the mark: replaces the latest queued `a`
    assert len(queue) == 2 and queue.coalesced == 1
    assert queue.pop_frame() == b'{"type":"batch","messages":[a1,a3]}'


def test_bounds_in_messages_and_bytes():
    by_count = SendQueue(coalesce_mark=100, max_messages=3)
    assert all(by_count.push(b"x") for _ in range(3))
    assert not by_count.push(b"x")
    by_bytes = SendQueue(coalesce_mark=100, max_messages=100, max_bytes=10)
    assert by_bytes.push(b"12345")
    assert not by_bytes.push(b"123456")


def test_push_first_goes_before_everything():
    queue = SendQueue()
    queue.push(b"later")
    queue.push_first(b"first")
    assert [queue.pop_frame(), queue.pop_frame()] == [b"first", b"later"]


def test_envelopes_leave_in_frames_of_the_cap():
    queue = SendQueue(coalesce_mark=1000, max_messages=1000, batch_max=3)
    for n in range(7):
        queue.push(orjson.dumps({"n": n}), envelope=True)
    frames = [orjson.loads(queue.pop_frame()) for _ in range(3)]
    assert [[m["n"] for m in f["messages"]] for f in frames[:2]] == [[0, 1, 2], [3, 4, 5]]
    assert frames[2] == {"n": 6} and queue.pop_frame() is None


def test_pop_wire_is_everything_queued_as_websocket_frames_in_order():
    from ws_edge.core.frames import batch_frame, websocket_text_frame

    queue = SendQueue(coalesce_mark=1000, max_messages=1000, batch_max=2)
    queue.push(b'{"type":"ack"}')
    envelopes = [orjson.dumps({"n": n}) for n in range(3)]
    for envelope in envelopes:
        queue.push(envelope, envelope=True)
    expected = [b'{"type":"ack"}', batch_frame(envelopes[:2]), envelopes[2]]
    assert queue.pop_wire() == b"".join(websocket_text_frame(f) for f in expected)
    assert not queue and queue.bytes == 0 and queue.pop_wire() == b""


def test_pop_wire_stops_near_its_byte_bound():
    queue = SendQueue(coalesce_mark=1000, max_messages=1000, batch_max=1)
    for n in range(5):
        queue.push(b"x" * 100 + str(n).encode(), envelope=True)
    first = queue.pop_wire(max_bytes=150)  # two frames: the bound is reached after the second
    assert first.count(b"x" * 100) == 2 and len(queue) == 3


def test_sockets_in_the_same_state_share_one_frame_built_once():
    from ws_edge.core.sendqueue import SharedFrames

    shared = SharedFrames()
    envelopes = [orjson.dumps({"n": n}) for n in range(4)]  # fan-out hands every queue the same bytes objects
    queues = [SendQueue(batch_max=4, shared=shared) for _ in range(3)]
    for queue in queues:
        for envelope in envelopes:
            queue.push(envelope, envelope=True)
    wires = [queue.pop_wire() for queue in queues]
    assert wires[0] is wires[1] is wires[2] and shared.built == 1


def test_shared_frames_are_bounded():
    from ws_edge.core.sendqueue import SharedFrames

    shared = SharedFrames(max_entries=2)
    for n in range(3):
        shared.get((orjson.dumps({"n": n}),))
    assert len(shared) == 1 and shared.built == 3  # forgotten all at once when full, then the new one


def test_nothing_is_held_while_empty():
    queue = SendQueue()
    assert not queue.allocated
    queue.push(b"a", key="k", envelope=True)
    queue.push(b"b", envelope=True)
    assert queue.allocated
    queue.pop_wire()
    assert not queue.allocated and len(queue) == 0
    queue.push_first(b"c")
    assert queue.pop_frame() == b"c" and not queue.allocated
