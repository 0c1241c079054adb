import pytest

from tests.support.deliveries import D
from ws_edge.core.frames import ClientMessage, ProtocolError
from ws_edge.core.recovery import Position, in_frames, positions_field, stitch


def test_stitch_skips_what_history_already_gave_and_keeps_order():
    missed = [D(3), D(4), D(5)]
    live = [D(5), D(6), D(7)]  # 5 arrived live while history was being read
    assert stitch(missed, live, Position(2, "e")) == [b'{"o":3}', b'{"o":4}', b'{"o":5}', b'{"o":6}', b'{"o":7}']


def test_stitch_when_not_recovered_sends_the_live_ones():
    assert stitch([], [D(8), D(9)], Position(2, "e")) == [b'{"o":8}', b'{"o":9}']
    assert stitch([], [D(1, epoch="new")], Position(5, "old")) == [b'{"o":1}']


def test_in_frames_batches_at_most_ten():
    frames = in_frames([b"{}"] * 23)
    assert len(frames) == 3 and frames[-1].count(b"{}") == 3


def test_in_frames_keeps_a_notice_out_of_batches_in_its_place():
    notice = b'{"type":"recovery"}'
    frames = in_frames([b'{"o":1}', b'{"o":2}', notice, b'{"o":3}'], {notice})
    assert frames == [b'{"type":"batch","messages":[{"o":1},{"o":2}]}', notice, b'{"o":3}']
    assert in_frames([notice], {notice}) == [notice]
    frames = in_frames([b"{}"] * 12 + [notice] + [b"{}"] * 3, {notice})  # the cap of ten on either side
    assert [f.count(b"{}") for f in frames] == [10, 2, 0, 3] and frames[2] == notice


def test_positions_field():
    message = ClientMessage("subscribe", "s", {"since": {"a": {"offset": 3, "epoch": "e"}, "z": {}}}, None)
    assert positions_field(message, ["a"]) == {"a": Position(3, "e")}
    with pytest.raises(ProtocolError):
        positions_field(ClientMessage("subscribe", "s", {"since": {"a": {"offset": "3", "epoch": "e"}}}, None), ["a"])


def test_stitch_gives_a_client_that_did_not_recover_the_replayed_state():
    """Its position is told as where the topic is now (9): the replay of the state 4, held while history
    was read, is the state its own is not, and goes; a live repeat does not."""
    live = [D(4, retained=True, replay=True), D(9), D(10)]
    assert stitch([], live, Position(9, "e"), recovered=False) == [b'{"o":4}', b'{"o":10}']
    assert stitch([], live, Position(9, "e")) == [b'{"o":10}']  # recovered: it had that state
