from ws_edge.core.limits import AttemptLimiter, ConnectionCounter, PendingConnections, origin_allowed


def test_connection_counter_and_attempt_limiter():
    counter = ConnectionCounter()
    assert counter.acquire("u", 2) and counter.acquire("u", 2) and not counter.acquire("u", 2)
    counter.release("u")
    assert counter["u"] == 1 and counter.acquire("u", 2)
    limiter = AttemptLimiter(rate=1, burst=2, max_addresses=2)
    assert limiter.allow("a", 0) and limiter.allow("a", 0) and not limiter.allow("a", 0)
    assert limiter.allow("b", 0) and limiter.allow("c", 10)
    assert len(limiter) <= 2


def test_origin_check():
    allowed = frozenset({"https://app.example"})
    assert origin_allowed(None, "edge:8000", allowed)
    assert origin_allowed("https://app.example", "edge:8000", allowed)
    assert not origin_allowed("https://evil.example", "edge:8000", allowed)
    # With a list, only the list counts: the Host header is the attacker's own under DNS rebinding.
    assert not origin_allowed("http://edge:8000", "edge:8000", allowed)
    assert not origin_allowed("http://evil:18000", "evil:18000", allowed)
    # Without one, the page's own origin (same host) is the only one allowed.
    assert origin_allowed("http://edge:8000", "edge:8000", frozenset())
    assert not origin_allowed("https://evil.example", "edge:8000", frozenset())
    assert not origin_allowed("http://edge:8000", None, frozenset())
    assert not origin_allowed("null", "edge:8000", allowed)
    assert origin_allowed("https://evil.example", "edge:8000", frozenset({"*"}))


def test_pending_connections_are_bounded_per_address_and_in_total():
    pending = PendingConnections(per_address=2, total=3)
    assert pending.admit("a") is None and pending.admit("a") is None
    assert pending.admit("a") == "address"
    assert (pending["a"], pending.total) == (2, 2)
    assert pending.admit("b") is None
    assert pending.admit("c") == "total" and pending.admit("a") == "total"
    pending.release("a")
    assert pending.admit("c") is None
    for address in ("a", "b", "c"):
        pending.release(address)
    assert (pending.total, pending["a"], pending["b"], pending["c"]) == (0, 0, 0, 0)
    assert pending.admit("a") is None and pending.admit("a") is None
