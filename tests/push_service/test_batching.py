from push_service.core.batching import BatchWindow


def test_lone_item_on_idle_stream_leaves_at_once():
    window: BatchWindow[int] = BatchWindow(max_size=10, interval=0.1)
    assert window.add(1, now=100.0) == [1]
    assert window.deadline is None


def test_items_within_the_window_wait_for_its_end():
    window: BatchWindow[int] = BatchWindow(max_size=10, interval=0.1)
    assert window.add(1, now=0.0) == [1]
    assert window.add(2, now=0.01) is None
    assert window.add(3, now=0.05) is None
    assert window.deadline == 0.1
    assert window.flush_due(now=0.09) is None
    assert window.flush_due(now=0.1) == [2, 3]
    assert window.deadline is None


def test_full_batch_leaves_without_waiting():
    window: BatchWindow[int] = BatchWindow(max_size=3, interval=10.0)
    assert window.add(0, now=0.0) == [0]
    assert window.add(1, now=0.0) is None
    assert window.add(2, now=0.0) is None
    assert window.add(3, now=0.0) == [1, 2, 3]
    assert window.add(4, now=0.0) is None
    assert len(window) == 1


def test_burst_of_25_in_one_instant():
    window: BatchWindow[int] = BatchWindow(max_size=10, interval=0.1)
    flushed = [b for i in range(25) if (b := window.add(i, now=5.0)) is not None]
    assert flushed == [[0], list(range(1, 11)), list(range(11, 21))]
    assert window.flush_due(now=5.1) == [21, 22, 23, 24]


def test_quiet_period_longer_than_window_resets_to_immediate():
    window: BatchWindow[int] = BatchWindow(max_size=10, interval=2.0)
    assert window.add(1, now=0.0) == [1]
    assert window.add(2, now=2.5) == [2]
    assert window.add(3, now=2.6) is None
    assert window.deadline == 4.5
