import logging

import pytest

from ws_edge.wire import Asgi, FastPath, choose_frame_writer, fast_path_protocol


def test_the_fast_path_is_chosen_with_the_pinned_uvicorn():
    """Pins which writer runs: uvicorn's fast path, with the uvicorn in requirements.txt."""
    protocol_class, why = fast_path_protocol()
    assert protocol_class is not None, why
    assert isinstance(choose_frame_writer(), FastPath)


def test_without_the_fast_path_the_edge_says_so_and_uses_asgi(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="ws_edge.wire"):
        writer = choose_frame_writer((None, "uvicorn's websockets-sansio protocol no longer sets writable"))
    assert type(writer) is Asgi and writer.name == "asgi"
    assert [r.getMessage() for r in caplog.records] == [
        "fan-out without the fast path (every frame through the ASGI send, slower): "
        "uvicorn's websockets-sansio protocol no longer sets writable"]
    scope: dict = {}
    writer.capture(scope, object())  # type: ignore[arg-type]
    assert (writer.writer_for(scope), writer.aborter_for(scope), scope) == (None, None, {})


def test_the_fast_path_ignores_a_socket_served_by_another_protocol():
    writer = FastPath(int)
    scope: dict = {}

    async def send(message):  # type: ignore[no-untyped-def]
        pass

    writer.capture(scope, send)
    assert writer.writer_for(scope) is None and writer.aborter_for(scope) is None
