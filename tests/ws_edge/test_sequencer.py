import gc
import weakref

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


def test_the_live_copy_of_a_replayed_state_places_the_topic_and_is_no_news():
    """On Redis the push service's read of the retained state can see a state whose live copy reaches
    it (and the edge) after the replay: that copy places the topic, and goes to no one again. A message
    without state that was published before it still goes; an older state does not."""
    sequencer = TopicSequencer()
    assert sequencer.accept(D(5, retained=True, replay=True)) is True
    assert sequencer.accept(D(3)) is True  # live, after the subscription
    assert sequencer.accept(D(4, retained=True)) is False  # older than the state that went out
    assert sequencer.accept(D(5, retained=True)) is False  # the replay's live copy
    assert sequencer.positions == {"t": (5, "e")} and sequencer.retained_frame("t") == b'{"o":5}'
    assert sequencer.accept(D(6, retained=True)) is True
    assert sequencer.take_gaps() == {}


def test_a_replay_from_an_epoch_history_let_go_opens_no_gap():
    """The retained state outlives the history of its epoch (its key is kept longer): replayed to a topic
    placed in the new epoch, it goes if no state went out since the subscription, and is no gap."""
    sequencer = TopicSequencer()
    sequencer.start_at("t", (7, "new"))
    assert sequencer.accept(D(3, epoch="old", retained=True, replay=True)) is True
    assert sequencer.positions == {"t": (7, "new")} and sequencer.take_gaps() == {} and not sequencer.is_held("t")
    assert sequencer.accept(D(3, epoch="old", retained=True, replay=True)) is False  # the same state
    assert sequencer.accept(D(8, epoch="new", retained=True)) is True


def test_an_older_epochs_replay_held_in_a_gap_puts_no_state_back():
    """A stream loss holds the topic; the new stream's replay is of a state of an epoch history let go,
    and a newer state was published after it. The fill gives the newer state; the replay, routed after
    it, is older (by when each was accepted), and the held live copy is a repeat."""
    sequencer = TopicSequencer()
    sequencer.start_at("t", (7, "new"))
    sequencer.hold("t")
    sequencer.accept(D(3, epoch="old", retained=True, replay=True, timestamp_ms=10))
    sequencer.accept(D(8, epoch="new", retained=True, timestamp_ms=20))
    held = sequencer.resume("t", (7, "new"))
    missed = D(8, epoch="new", retained=True, timestamp_ms=20)
    assert [sequencer.accept(d) for d in [missed, *held]] == [True, False, False]
    assert sequencer.retained_frame("t") == b'{"o":8}' and sequencer.take_gaps() == {}


def test_a_replay_held_in_a_gap_goes_back_through_accept_as_a_replay():
    """A stream's loss holds the topic; the new stream's replay is held with the live messages. The fill
    resumes the topic where history says: the replay neither opens a gap nor counts as where the stream
    went, and it is no news to the subscribers who had that state."""
    sequencer = TopicSequencer()
    assert sequencer.accept(D(4, retained=True)) is True
    sequencer.hold("t")
    assert sequencer.accept(D(4, retained=True, replay=True)) is False  # held
    assert sequencer.first_held("t") is None
    assert sequencer.accept(D(6)) is False
    assert sequencer.first_held("t") == (6, "e")
    held = sequencer.resume("t", (5, "e"))  # history gave 5
    assert [sequencer.accept(d) for d in held] == [False, True]
    assert sequencer.positions == {"t": (6, "e")} and sequencer.take_gaps() == {}


def test_a_state_without_history_is_no_news_when_replayed():
    """A topic that keeps no history (offset 0): its replayed state is told apart by its frame, never by
    its timestamp (each push replica stamps with its own clock: a later state may carry an earlier time)."""
    sequencer = TopicSequencer()
    assert sequencer.accept(D(retained=True, frame=b'{"s":1}', timestamp_ms=5)) is True
    assert sequencer.accept(D(retained=True, frame=b'{"s":1}', timestamp_ms=5, replay=True)) is False
    assert sequencer.accept(D(retained=True, frame=b'{"s":2}', timestamp_ms=3)) is True  # another replica's clock
    assert sequencer.retained_frame("t") == b'{"s":2}'


def test_states_without_history_published_just_before_a_replays_read_come_after_it_and_are_older():
    """On Redis, S1 and S2 were published after the subscription and before the retained read, which
    gave S2: their live copies come after the replay. S1 is older than the replay (by when each was
    accepted), S2 is its copy; a state after them goes."""
    sequencer = TopicSequencer()
    assert sequencer.accept(D(retained=True, frame=b'{"s":2}', timestamp_ms=20, replay=True)) is True
    assert sequencer.accept(D(retained=True, frame=b'{"s":1}', timestamp_ms=10)) is False
    assert sequencer.accept(D(retained=True, frame=b'{"s":2}', timestamp_ms=20)) is False
    assert sequencer.accept(D(retained=True, frame=b'{"s":3}', timestamp_ms=30)) is True
    assert sequencer.retained_frame("t") == b'{"s":3}'


def test_messages_the_told_positions_read_saw_go_when_their_copies_come_late():
    """The push service told 7, read after the topic was routed here; 6 and 7 were published after the
    subscription and their copies come after the answer (Redis's pub/sub is a connection of its own):
    each goes once, in order. Once the stream passes 7 nothing before it goes any more."""
    sequencer = TopicSequencer()
    sequencer.tell("t", (7, "e"))
    sequencer.start_told()
    assert [sequencer.accept(D(n)) for n in (6, 6, 7, 7)] == [True, False, True, False]
    assert sequencer.positions == {"t": (7, "e")}
    assert sequencer.accept(D(8)) is True
    assert sequencer.accept(D(5)) is False
    assert sequencer.positions == {"t": (8, "e")} and sequencer.take_gaps() == {}


def test_a_late_copy_of_a_replayed_state_is_no_news():
    sequencer = TopicSequencer()
    assert sequencer.accept(D(7, retained=True, replay=True)) is True
    sequencer.tell("t", (7, "e"))
    sequencer.start_told()
    assert sequencer.accept(D(7, retained=True)) is False
    assert sequencer.accept(D(8)) is True


def test_the_kept_state_holds_no_delivery():
    """A parsed delivery keeps alive the whole response it came in (up to a MiB of a batch, or a history
    page): the state is kept as plain values."""
    sequencer = TopicSequencer()
    delivery = D(3, retained=True)
    gone = weakref.ref(delivery)
    assert sequencer.accept(delivery) is True
    del delivery
    gc.collect()
    assert gone() is None and sequencer.retained_frame("t") == b'{"o":3}'


def test_a_state_past_where_history_went_back_to_is_ordered_by_arrival():
    """A Redis failover lost the last writes: history is at 5, behind the state 7 that went out, and the
    offsets 6 and 7 are used again by other messages. Their states go."""
    sequencer = TopicSequencer()
    sequencer.start_at("t", (6, "e"))
    assert sequencer.accept(D(7, retained=True, frame=b'{"s":"old 7"}')) is True
    sequencer.hold("t")
    sequencer.history_at("t", (5, "e"))
    assert sequencer.resume("t", None) == []
    assert sequencer.accept(D(6, retained=True, frame=b'{"s":"new 6"}')) is True
    assert sequencer.accept(D(7, retained=True, frame=b'{"s":"new 7"}')) is True
    assert sequencer.accept(D(7, retained=True, frame=b'{"s":"new 7"}')) is False
    assert sequencer.retained_frame("t") == b'{"s":"new 7"}'
