from tests.support.deliveries import D
from ws_edge.core.frames import websocket_text_frame
from ws_edge.core.recovery import GapNotice
from ws_edge.core.routing import DeliveryRouter


def test_one_frame_per_distinct_selection():
    router = DeliveryRouter()
    for conn in ("a", "b"):
        router.topics.add("x", conn)
    router.topics.add("y", "c")
    router.topics.add("x", "c")
    router.client_ids.add("cid", "a")
    batch = [D(topic="x", frame=b'{"n":1}'), D(topic="y", frame=b'{"n":2}'),
             D(topic="", frame=b'{"n":3}', client_id="cid")]
    routed = {frames[0]: sorted(conns) for frames, wire, conns, _ in router.route([batch])}
    assert routed == {
        b'{"type":"batch","messages":[{"n":1},{"n":3}]}': ["a"],
        b'{"n":1}': ["b"],
        b'{"type":"batch","messages":[{"n":1},{"n":2}]}': ["c"],
    }


def test_several_batches_keep_their_frames_apart_and_join_the_wire():
    router = DeliveryRouter()
    router.topics.add("x", "a")
    router.topics.add("x", "b")
    router.topics.add("y", "b")
    batches = [[D(topic="x", frame=b'{"n":1}'), D(topic="x", frame=b'{"n":2}')], [D(topic="y", frame=b'{"n":3}')],
               [D(topic="x", frame=b'{"n":4}')]]
    routed = {tuple(conns): (frames, wire) for frames, wire, conns, _ in router.route(batches)}
    first = b'{"type":"batch","messages":[{"n":1},{"n":2}]}'
    assert routed[("a",)] == ([first, b'{"n":4}'], websocket_text_frame(first) + websocket_text_frame(b'{"n":4}'))
    assert routed[("b",)][0] == [first, b'{"n":3}', b'{"n":4}']
    assert routed[("b",)][1] == b"".join(websocket_text_frame(f) for f in routed[("b",)][0])


def test_retained_state_is_kept_per_topic_while_subscribed():
    router = DeliveryRouter()
    router.topics.add("list", "a")
    router.route([[D(topic="list", frame=b"1", retained=True), D(topic="list", frame=b"2", retained=True)]])
    assert router.sequencer.retained_frame("list") == b"2"
    assert router.remove_connection("a") == ["list"]
    assert router.sequencer.retained_frame("list") is None


def test_deliveries_for_a_topic_nobody_here_wants_move_no_position():
    """The seam's first cause: after the last local subscriber left, late deliveries still moved the
    topic's position, so the next live message after a resubscribe looked like a gap."""
    router = DeliveryRouter()
    router.topics.add("t", "a")
    router.route([[D(1)]])
    router.remove_connection("a")
    assert router.route([[D(2)]]) == []
    assert router.route([[D(3), D(4)]]) == []  # the flood path too
    assert router.sequencer.positions == {}
    router.topics.add("t", "b")
    assert [conns for _, _, conns, _ in router.route([[D(9)]])] == [["b"]]
    assert router.sequencer.take_gaps() == {}


def test_a_guarded_topic_goes_through_the_sessions_admit_and_skips_the_flood_path():
    router = DeliveryRouter()
    router.topics.add("t", "a")
    router.topics.add("t", "b")
    admitted = []

    def admit(delivery):  # type: ignore[no-untyped-def]
        admitted.append(delivery.offset)
        return delivery.offset > 2

    router.guard("t", "a", admit)
    routed = router.route([[D(1), D(2), D(3)]])
    assert {tuple(sorted(c)): [m.offset for m in ms] for _, _, c, ms in routed} == {("a",): [3], ("b",): [1, 2, 3]}
    assert admitted == [1, 2, 3]
    router.unguard("t", "a")
    assert [sorted(c) for _, _, c, _ in router.route([[D(4)]])] == [["a", "b"]]
    assert admitted == [1, 2, 3]


def test_a_gap_notice_reaches_each_subscriber_that_its_session_lets_take_it_now():
    router = DeliveryRouter()
    for connection in ("a", "b", "c"):
        router.topics.add("t", connection)
    router.topics.add("u", "d")
    asked = []
    router.guard("t", "a", lambda notice: asked.append(notice) or False)  # holds it behind an answer
    router.guard("t", "b", lambda notice: True)
    notice = GapNotice("t", b"{}")
    assert sorted(router.notice_targets(notice)) == ["b", "c"]
    assert asked == [notice]


def test_a_gap_holds_the_topic_for_every_subscriber():
    router = DeliveryRouter()
    router.topics.add("t", "a")
    router.route([[D(1)]])
    assert router.route([[D(3)]]) == []
    assert router.sequencer.take_gaps() == {"t": (1, "e")}
    held = router.sequencer.resume("t", (1, "e"))
    routed = router.route([[D(2), *held, D(3)]])  # history's 2, the held 3, and 3 again from history
    assert [[m.offset for m in ms] for _, _, _, ms in routed] == [[2, 3]]


def test_a_replay_on_a_topic_with_no_position_goes_to_all_without_placing_it():
    """The flood path (one topic, every subscriber) places a topic by what it routes; a replay must not."""
    router = DeliveryRouter()
    router.topics.add("t", "a")
    router.topics.add("t", "b")
    [(frames, _, connections, _)] = router.route([[D(3, retained=True, replay=True)]])
    assert frames == [b'{"o":3}'] and sorted(connections) == ["a", "b"]
    assert router.sequencer.positions == {} and router.sequencer.retained_frame("t") == b'{"o":3}'
    [(frames, _, _, _)] = router.route([[D(6)]])  # the told position not here yet: 6 places the topic
    assert frames == [b'{"o":6}'] and router.sequencer.positions == {"t": (6, "e")}


def test_the_flood_path_leaves_a_state_that_went_out_already_to_the_sequencer():
    """The replay of 5 went out before its live copy; 4 (no state) and 5 continue the position, but 5
    is no news: one frame of 4 alone."""
    router = DeliveryRouter()
    router.topics.add("t", "a")
    router.route([[D(5, retained=True, replay=True)]])
    router.sequencer.start_at("t", (3, "e"))
    [(frames, _, connections, _)] = router.route([[D(4), D(5, retained=True)]])
    assert frames == [b'{"o":4}'] and connections == ["a"]
    assert router.sequencer.positions == {"t": (5, "e")}
