"""A stream session's inbox (`POST /emulation`'s frames waiting for the session): bounded in frames and
in characters, so that a session that reads nothing meanwhile holds little."""

from __future__ import annotations

from ws_edge.http_stream import INBOX_CHARS, INBOX_FRAMES, Inbox


async def test_frames_wait_up_to_the_bound_in_number_and_in_size():
    inbox = Inbox()
    big = "x" * (INBOX_CHARS // 4)
    assert inbox.put([big] * 4)  # one request's frames are taken whatever their size, if none wait
    assert not inbox.put(["{}"])  # then nothing more until some are read
    assert await inbox.receive() == big
    assert inbox.put(["{}"]) and not inbox.put([big])
    small = Inbox()
    assert small.put(["{}"] * INBOX_FRAMES) and not small.put(["{}"])
    inbox.end()
    assert [await inbox.receive() for _ in range(5)] == [big, big, big, "{}", None]
