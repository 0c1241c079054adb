from push_service.core.idempotency import IdempotencyCache


def test_a_key_is_remembered_for_the_window():
    cache = IdempotencyCache(window=10, max_keys=100)
    cache.remember("k", "first", now=0)
    assert cache.get("k", now=9.9) == "first"
    assert cache.get("k", now=10) is None
    assert len(cache) == 0


def test_at_most_max_keys_the_oldest_forgotten_first():
    cache = IdempotencyCache(window=100, max_keys=2)
    for i in range(3):
        cache.remember(f"k{i}", f"first{i}", now=i)
    assert cache.get("k0", now=3) is None
    assert cache.get("k1", now=3) == "first1"
