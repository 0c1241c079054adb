from push_service.core.batching import BatchWindow


def test_items_accumulate_until_taken():
    window: BatchWindow[int] = BatchWindow(max_size=10, interval=0.1)
    assert window.add(1, now=100.0) is None
    assert window.add(2, now=100.01) is None
    assert window.take() == [1, 2]
    assert window.take() is None
    assert window.deadline is None


def test_deadline_counts_from_the_first_item_of_the_open_batch():
    window: BatchWindow[int] = BatchWindow(max_size=10, interval=0.1)
    window.add(1, now=0.0)
    window.add(2, now=0.05)
    assert window.deadline == 0.1
    assert window.flush_due(now=0.09) is None
    assert window.flush_due(now=0.1) == [1, 2]
    window.add(3, now=0.5)
    assert window.deadline == 0.6


def test_full_batch_leaves_without_waiting():
    window: BatchWindow[int] = BatchWindow(max_size=3, interval=10.0)
    assert window.add(1, now=0.0) is None
    assert window.add(2, now=0.0) is None
    assert window.add(3, now=0.0) == [1, 2, 3]
    assert window.add(4, now=0.0) is None
    assert len(window) == 1


def test_burst_of_25_while_busy_then_idle():
    window: BatchWindow[int] = BatchWindow(max_size=10, interval=0.1)
    flushed = [b for i in range(25) if (b := window.add(i, now=5.0)) is not None]
    assert flushed == [list(range(10)), list(range(10, 20))]
    assert window.take() == [20, 21, 22, 23, 24]


def test_a_batch_also_closes_at_its_byte_budget():
    window: BatchWindow[str] = BatchWindow(max_size=100, interval=10.0, max_bytes=1000)
    assert window.add("a", now=0.0, size=600) is None
    assert window.add("b", now=0.0, size=400) == ["a", "b"]  # 1,000 bytes: full
    assert window.add("c", now=0.0, size=5000) == ["c"]  # one item over the budget still goes, alone
    assert window.add("d", now=0.0, size=10) is None and window.take() == ["d"]
