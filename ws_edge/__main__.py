"""`python -m ws_edge`: run the edge under uvicorn (uvloop + httptools).

SIGTERM / SIGINT: the edge first goes away gracefully (readiness off, every client's queued frames
flushed, then close 1001 "going away", which tells clients to reconnect and recover), and only then
lets uvicorn stop. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn

from common.lifecycle import load_settings
from common.logs import configure_logging
from common.tracing import configure_from

from .app import EdgeApp, create_app
from .config import EdgeSettings
from .http_guard import guarded_http_protocol
from .wire import edge_websocket_protocol

GO_AWAY_TIMEOUT = 5.0  # clients' queued frames flushed (Edge.go_away waits this, and a second more)
GRACEFUL_SHUTDOWN_TIMEOUT = 3  # then uvicorn's own: open requests and sockets
# The longest a SIGTERM'd edge takes to exit on its own; a container's stop grace period must exceed it
# (docker-compose.yml's stop_grace_period, checked by tests/deploy/test_compose.py).
DRAIN_SECONDS = GO_AWAY_TIMEOUT + 1 + GRACEFUL_SHUTDOWN_TIMEOUT


class EdgeServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._going_away = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._going_away:
            return super().handle_exit(sig, frame)
        self._going_away = True
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._go_away(sig, frame)))

    async def _go_away(self, sig: int, frame: FrameType | None) -> None:
        try:
            await self.config.app.state.edge.go_away(GO_AWAY_TIMEOUT)  # type: ignore[attr-defined]
        finally:
            super().handle_exit(sig, frame)


def server_config(app: EdgeApp, settings: EdgeSettings) -> uvicorn.Config:
    """How uvicorn serves the edge (also single_process's, in the loop it shares with the push service)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # uvicorn's httptools protocol with the bounds it lacks before a request is in: a handshake
        # timeout, pending connections per address and in all, URL and header sizes (http_guard.py).
        http=guarded_http_protocol(app.state.pending, settings.handshake_timeout),
        # uvicorn's sans-I/O protocol, telling fan-out when a socket stops taking writes (wire.py).
        ws=edge_websocket_protocol() or "websockets-sansio",
        # Frames a little over our own limit still get a MESSAGE_TOO_LARGE answer; far larger ones
        # are refused by the WebSocket layer (close 1009) before they are buffered.
        ws_max_size=settings.max_frame_bytes * 4,
        ws_per_message_deflate=settings.permessage_deflate,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through ours (one format, connection ids, redaction)
        access_log=False,
        # The client's address from X-Forwarded-For only behind proxies named in EDGE_TRUSTED_PROXIES.
        proxy_headers=bool(settings.trusted_proxies.strip()),
        forwarded_allow_ips=settings.trusted_proxies.strip() or None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_TIMEOUT,
    )


def main() -> None:
    settings = load_settings(EdgeSettings, "ws_edge")
    configure_logging(settings.log_level, settings.log_format)
    configure_from(settings, "ws_edge")
    EdgeServer(server_config(create_app(settings), settings)).run()


if __name__ == "__main__":
    main()
