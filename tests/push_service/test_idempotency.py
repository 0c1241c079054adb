import tracemalloc

import orjson

from push_service.broker.memory import MemoryBroker
from push_service.core.history import HistoryPolicy, HistoryRule
from push_service.core.idempotency import ENTRY_OVERHEAD, IdempotencyCache
from push_service.core.publication import Ack, make_publication


def ack(n: int) -> Ack:
    return Ack(f"m{n}", 1000 + n, n, "e1")


def test_a_key_is_remembered_for_the_window():
    cache = IdempotencyCache(window=10, max_keys=100)
    cache.remember("k", ack(1), now=0)
    assert cache.get("k", now=9.9) == ack(1)
    assert cache.get("k", now=10) is None
    assert (len(cache), cache.bytes) == (0, 0)


def test_at_most_max_keys_the_oldest_forgotten_first():
    cache = IdempotencyCache(window=100, max_keys=2)
    for i in range(3):
        cache.remember(f"k{i}", ack(i), now=i)
    assert cache.get("k0", now=3) is None
    assert cache.get("k1", now=3) == ack(1)


def test_at_most_max_bytes_the_oldest_forgotten_first():
    one = ENTRY_OVERHEAD + len("k0") + len("m0") + len("e1")  # what each of these entries counts
    cache = IdempotencyCache(window=100, max_keys=1000, max_bytes=3 * one)
    for i in range(3):
        cache.remember(f"k{i}", ack(i), now=i)
    assert (len(cache), cache.bytes) == (3, 3 * one)
    cache.remember("k3", ack(3), now=3)
    assert (len(cache), cache.bytes) == (3, 3 * one)
    assert [cache.get(f"k{i}", now=4) for i in range(4)] == [None, ack(1), ack(2), ack(3)]
    cache.remember("k3", ack(3), now=5)  # remembered again: counted once
    assert cache.bytes == 3 * one
    cache.expire(now=104)  # the periodic sweep: k1 (at 1), k2 (at 2) are past the window
    assert (len(cache), cache.bytes) == (1, one)


async def test_keyed_large_messages_keep_only_their_acks():
    """1,000 keyed 60 KB messages used to keep 60 MB alive in the cache (their publications)."""
    broker = MemoryBroker(HistoryPolicy((HistoryRule("*", 0, 0),)), IdempotencyCache(window=300))
    data = orjson.dumps({"pad": "x" * 60_000})
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(1000):
            publication = make_publication(topic="nohistory", type_="t", data=data, id_=f"m{n}", client_id="",
                                           retain=False, now_ms=n, max_data_bytes=65536)
            assert await broker.publish(publication, f"key-{n}") == Ack(f"m{n}", n)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, f"{grown} bytes kept for 1,000 keys"
    assert await broker.publish(publication, "key-0") == Ack("m0", 0)  # a repeat is still answered
