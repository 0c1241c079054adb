from ws_edge.core.ratelimit import TokenBucket


def test_token_bucket_allows_burst_then_rate():
    bucket = TokenBucket(rate=100, burst=100, now=0.0)
    assert sum(bucket.allow(0.0) for _ in range(150)) == 100
    assert bucket.allow(0.0) is False
    assert sum(bucket.allow(0.1) for _ in range(20)) == 10


def test_an_expensive_request_costs_several_tokens():
    bucket = TokenBucket(rate=10, burst=10, now=0.0)
    assert bucket.allow(0.0, cost=8) is True
    assert bucket.allow(0.0, cost=3) is False  # two left: refused whole, nothing taken
    assert bucket.allow(0.0, cost=2) is True
    assert bucket.allow(0.0) is False
