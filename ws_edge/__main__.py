"""`python -m ws_edge`: run the edge under uvicorn (uvloop + httptools)."""

from __future__ import annotations

from common.lifecycle import configure_logging

import uvicorn

from .app import create_app
from .config import EdgeSettings


def main() -> None:
    settings = EdgeSettings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        # Frames a little over our own limit still get a MESSAGE_TOO_LARGE answer; far larger ones
        # are refused by the WebSocket layer (close 1009) before they are buffered.
        ws_max_size=settings.max_frame_bytes * 4,
        ws_per_message_deflate=False,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()
