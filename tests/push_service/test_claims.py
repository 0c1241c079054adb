from push_service.core.claims import ANONYMOUS_OWNER, ClientIdClaims


def test_the_first_owner_keeps_the_id_for_the_hold_others_are_refused():
    claims = ClientIdClaims()
    assert claims.claim("shared", "alice", now=0, hold=10) is True
    assert claims.claim("shared", "bob", now=5, hold=10) is False
    assert claims.claim("shared", "alice", now=6, hold=10) is True  # the hold starts over: until 16
    assert claims.claim("shared", "bob", now=15.9, hold=10) is False
    assert claims.owner("shared", now=15.9) == "alice"
    assert claims.claim("shared", "bob", now=16, hold=10) is True
    assert claims.owner("shared", now=16) == "bob"


def test_anonymous_connections_share_one_owner_apart_from_users():
    claims = ClientIdClaims()
    assert claims.claim("anon-id", ANONYMOUS_OWNER, now=0, hold=10) is True
    assert claims.claim("anon-id", ANONYMOUS_OWNER, now=1, hold=10) is True
    assert claims.claim("anon-id", "alice", now=2, hold=10) is False
    assert claims.claim("alice-id", "alice", now=2, hold=10) is True
    assert claims.claim("alice-id", ANONYMOUS_OWNER, now=3, hold=10) is False


def test_refresh_extends_bound_ids_only():
    claims = ClientIdClaims()
    claims.claim("a", "alice", now=0, hold=10)
    claims.refresh(["a", "never-claimed"], now=8, hold=10, anonymous_hold=1)
    assert claims.owner("a", now=17.9) == "alice"
    assert claims.owner("never-claimed", now=8) is None
    assert claims.claim("never-claimed", "bob", now=9, hold=10) is True


def test_expired_bindings_are_forgotten():
    claims = ClientIdClaims()
    for n in range(3):
        claims.claim(f"id{n}", "alice", now=n, hold=10)
    claims.refresh(["id0"], now=5, hold=10, anonymous_hold=1)  # id0 now expires last
    assert claims.claim("other", "bob", now=12, hold=10) is True
    assert len(claims) == 2  # id1, id2 gone; id0 (until 15) and other remain
    assert claims.owner("id0", now=12) == "alice"


def test_anonymous_ids_are_held_briefly_and_forgotten_behind_users_long_holds():
    """Connecting anonymously with new ids must not make the table grow for a day."""
    claims = ClientIdClaims()
    claims.claim("alice-id", "alice", now=0, hold=86_400)
    for n in range(1000):
        claims.claim(f"anon{n}", ANONYMOUS_OWNER, now=0, hold=60)
    claims.refresh(["anon0", "alice-id"], now=30, hold=86_400, anonymous_hold=60)  # anon0 still in use
    assert claims.claim("late", ANONYMOUS_OWNER, now=61, hold=60) is True
    assert len(claims) == 3  # alice-id, anon0 (until 90), late
    assert (claims.owner("anon0", now=89), claims.owner("anon5", now=61)) == (ANONYMOUS_OWNER, None)
    assert claims.claim("anon5", "bob", now=61, hold=86_400) is True  # a squat lasts a minute, not a day
