"""The admin API's decisions without I/O (ws_edge/admin_core.py)."""

from __future__ import annotations

import hmac

import pytest

from ws_edge.admin_core import MISSING, WRONG, RateMeter, credential_refusal, tail_events

SECRET = "admin-secret-of-at-least-thirty-two-bytes"


@pytest.mark.parametrize(("header", "expected"), [
    (None, MISSING), ("", MISSING), ("Bearer", MISSING), ("Bearer   ", MISSING), (f"Basic {SECRET}", MISSING),
    (SECRET, MISSING), ("Bearer wrong", WRONG), (f"Bearer {SECRET}x", WRONG), (f"Bearer {SECRET[:-1]}", WRONG),
    (f"Bearer {SECRET}", None), (f"bearer {SECRET}", None), (f"  Bearer  {SECRET} ", None),
])
def test_only_the_admin_secret_as_a_bearer_credential_passes(header, expected):
    assert credential_refusal(header, SECRET, hmac.compare_digest) == expected


def test_refusals_say_what_is_missing_and_what_is_wrong():
    assert (MISSING.status, MISSING.code) == (401, "admin_credential_required")
    assert (WRONG.status, WRONG.code) == (403, "not_admin")


def test_rates_are_per_second_between_reads_at_least_a_second_apart():
    meter = RateMeter()
    assert meter.rates(10.0, {"a": 100, "b": 5}) is None
    assert meter.rates(10.5, {"a": 150, "b": 5}) is None  # too soon: no rate yet
    assert meter.rates(12.0, {"a": 300, "b": 9}) == {"a": 100.0, "b": 2.0}
    assert meter.rates(12.4, {"a": 310, "b": 9}) == {"a": 100.0, "b": 2.0}  # the last one, until a second passed
    assert meter.rates(14.0, {"a": 310, "b": 9}) == {"a": 5.0, "b": 0.0}


def test_a_counter_that_went_back_counts_as_no_rate_and_a_new_one_as_zero():
    meter = RateMeter()
    meter.rates(0.0, {"a": 100})
    assert meter.rates(1.0, {"a": 40, "new": 7}) == {"a": 0.0, "new": 0.0}


def test_tail_events_are_server_sent_events():
    assert tail_events("ready", {"topic": "room:a", "edge": "e1"}) == (
        b'event: ready\ndata: {"topic":"room:a","edge":"e1"}\n\n')
    assert tail_events("frame", b'{"type":"message"}') == b'event: frame\ndata: {"type":"message"}\n\n'
    assert tail_events("frame", b"x\ny", 3) == b"event: frame\nid: dropped-3\ndata: x\ndata: y\n\n"


def test_a_short_admin_token_stops_the_edge_at_start():
    from pydantic import ValidationError

    from ws_edge.config import EdgeSettings

    with pytest.raises(ValidationError, match="EDGE_ADMIN_TOKEN must be at least 32 bytes"):
        EdgeSettings(admin_token="too-short")
    assert EdgeSettings(admin_token=SECRET).admin_token.get_secret_value() == SECRET


async def test_a_tail_keeps_at_most_its_limit_and_counts_what_it_dropped():
    from ws_edge.admin import TailSubscriber

    tail = TailSubscriber(limit=3)
    assert tail.direct is None  # never a socket's fast path: the fan-out calls send_frames
    tail.send_frames([b"1", b"2"], b"", [], None)
    tail.send(b"3")
    tail.send_frames([b"4", b"5"], b"", [], None)
    assert tail.dropped == 2
    assert [tail.frames.get_nowait() for _ in range(3)] == [b"1", b"2", b"3"]
    tail.send(b"6")
    assert (tail.frames.get_nowait(), tail.dropped) == (b"6", 2)
