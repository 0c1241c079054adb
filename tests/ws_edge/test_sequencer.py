from tests.support.deliveries import D
from ws_edge.core.sequencer import TopicSequencer


def test_the_next_offset_goes_on_and_a_repeat_is_dropped():
    sequencer = TopicSequencer()
    assert [sequencer.accept(D(n)) for n in (1, 2, 2, 1, 3)] == [True, True, False, False, True]
    assert sequencer.positions == {"t": (3, "e")}


def test_a_skipped_offset_holds_the_topic_until_resumed():
    sequencer = TopicSequencer()
    sequencer.accept(D(1))
    assert sequencer.accept(D(4)) is False
    assert sequencer.accept(D(5)) is False
    assert sequencer.take_gaps() == {"t": (1, "e")}
    assert sequencer.take_gaps() == {}
    assert [d.offset for d in sequencer.resume("t", (1, "e"))] == [4, 5]
    assert [sequencer.accept(D(n)) for n in (2, 3, 4, 5)] == [True, True, True, True]


def test_a_new_epoch_is_a_gap_and_resume_without_a_position_takes_what_comes():
    sequencer = TopicSequencer()
    sequencer.accept(D(7))
    assert sequencer.accept(D(1, epoch="new")) is False
    assert sequencer.take_gaps() == {"t": (7, "e")}
    held = sequencer.resume("t", None)
    assert [sequencer.accept(d) for d in held] == [True]
    assert sequencer.positions == {"t": (1, "new")}


def test_a_replayed_retained_state_goes_only_when_no_subscriber_has_it():
    """The push service replays a topic's retained state when an edge declares it (a first subscriber, or
    every topic on a new stream). The state that went out last reached every subscriber then, and each
    that came later was handed it (`FirstInterests.route`): its replay is a repeat, and never goes. An
    older state's replay would put every subscriber's state back, and never goes either. It never moves
    the position."""
    sequencer = TopicSequencer()
    sequencer.start_at("t", (2, "e"))
    assert sequencer.accept(D(3, retained=True)) is True  # live
    assert sequencer.accept(D(3, retained=True)) is False  # its replay
    assert sequencer.accept(D(4)) is True
    assert sequencer.accept(D(3, retained=True)) is False  # still the current state: sent already
    assert sequencer.positions == {"t": (4, "e")} and sequencer.retained_frame("t") == b'{"o":3}'
    assert sequencer.accept(D(5, retained=True)) is True
    assert sequencer.accept(D(3, retained=True)) is False
    assert sequencer.positions == {"t": (5, "e")} and sequencer.retained_frame("t") == b'{"o":5}'
    assert sequencer.take_gaps() == {}


def test_a_replayed_state_that_no_subscriber_has_goes_behind_the_position():
    """Placed by the position the push service told (4), no state went out here yet: the replay of
    the state 3 goes, and is kept."""
    sequencer = TopicSequencer()
    sequencer.start_at("t", (4, "e"))
    assert sequencer.accept(D(3, retained=True)) is True
    assert sequencer.accept(D(3, retained=True)) is False
    assert sequencer.positions == {"t": (4, "e")} and sequencer.retained_frame("t") == b'{"o":3}'


def test_a_replay_behind_a_message_that_set_no_state_is_kept_as_the_topics_state():
    """Subscribed here, 6 (no state) came before the replay of the state 5 (the push service reads it
    after the subscription): the replay goes, and is what a later subscriber is handed."""
    sequencer = TopicSequencer()
    assert sequencer.accept(D(6)) is True
    assert sequencer.accept(D(5, retained=True)) is True
    assert sequencer.positions == {"t": (6, "e")} and sequencer.retained_frame("t") == b'{"o":5}'


def test_a_topic_whose_every_message_is_retained_is_placed_again_by_the_first_after_a_resume_from_nowhere():
    sequencer = TopicSequencer()
    sequencer.accept(D(7, retained=True))
    sequencer.hold("t")
    sequencer.resume("t", None)  # history could not say (a new epoch): from whatever comes next
    assert sequencer.accept(D(1, epoch="new", retained=True)) is True
    assert sequencer.positions == {"t": (1, "new")}
    assert sequencer.accept(D(3, epoch="new", retained=True)) is False  # a skipped offset is a gap again
    assert sequencer.take_gaps() == {"t": (1, "new")}


def test_forget_drops_position_retained_state_and_hold():
    sequencer = TopicSequencer()
    sequencer.accept(D(1, retained=True))
    sequencer.hold("t")
    sequencer.forget("t")
    assert (sequencer.positions, sequencer.retained_frame("t"), sequencer.is_held("t")) == ({}, None, False)
    assert sequencer.accept(D(9)) is True  # no position to continue: the first one starts it


def test_a_topic_starts_where_it_was_told_only_if_nothing_placed_or_held_it():
    sequencer = TopicSequencer()
    sequencer.start_at("t", (4, "e"))
    assert sequencer.accept(D(5)) and not sequencer.accept(D(4))  # goes on from 4: 4 is a repeat
    sequencer.start_at("t", (9, "e"))  # placed already: no move
    assert sequencer.positions["t"] == (5, "e")
    sequencer.hold("u")
    sequencer.start_at("u", (2, "e"))  # held: its fill decides where it goes on
    assert "u" not in sequencer.positions
    assert sequencer.unplaced(["t", "u", "v", "w"]) == ["v", "w"]  # what a new stream's snapshot asks positions for
    sequencer.start_at("v", (2, "e"))
    assert not sequencer.accept(D(4, topic="v")) and sequencer.take_gaps() == {"v": (2, "e")}  # 3 is missing


def test_a_topic_with_nothing_published_when_it_was_subscribed_goes_on_from_offset_1_of_any_epoch():
    """(0, ""): the push service said nothing was published on it yet, and an epoch is named by its first
    message: offset 1 of whatever epoch comes goes on; a later offset is a gap from (0, "")."""
    sequencer = TopicSequencer()
    sequencer.start_at("t", (0, ""))
    assert sequencer.accept(D(1, epoch="new")) and sequencer.positions["t"] == (1, "new")
    assert not sequencer.accept(D(1, epoch="new"))  # a repeat now
    sequencer.start_at("u", (0, ""))
    assert not sequencer.accept(D(3, topic="u")) and sequencer.take_gaps() == {"u": (0, "")}  # 1 and 2 are missing
    assert sequencer.is_held("u")


def test_a_replay_does_not_place_a_topic_the_position_told_with_the_answer_does():
    """Subscribed here, the replay of the state 3 comes before the answer that tells 5 (4 and 5 set no
    state, and were published before the subscription): the replay goes, and 6 continues the told
    position; placed by the replay, 6 would have been a gap, filled with 4 and 5."""
    sequencer = TopicSequencer()
    assert sequencer.accept(D(3, retained=True, replay=True)) is True
    assert sequencer.positions == {} and sequencer.retained_frame("t") == b'{"o":3}'
    sequencer.tell("t", (5, "e"))
    sequencer.start_told()
    assert sequencer.accept(D(6)) is True
    assert sequencer.positions == {"t": (6, "e")} and sequencer.take_gaps() == {}


def test_a_live_retained_message_places_a_topic_a_replay_does_not():
    sequencer = TopicSequencer()
    assert sequencer.accept(D(3, retained=True, replay=True)) is True
    assert sequencer.accept(D(3, retained=True, replay=True)) is False  # the same state again
    assert sequencer.accept(D(7, retained=True)) is True
    assert sequencer.positions == {"t": (7, "e")}
