"""`python -m single_process`: the push service and the edge in one process, until SIGINT/SIGTERM.

Configured as the two are alone, by their environments (PUSH_*, EDGE_*; EDGE_PUSH_ADDRESS is not used:
the edge's link stays in the process). Logging and tracing are the process's: the edge's settings
(EDGE_LOG_LEVEL, EDGE_TRACING, …) decide them. A signal stops the edge as `python -m ws_edge` does (readiness
off, clients' queued frames flushed, close 1001), then the push service.
"""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn
import uvloop

from common.inprocess_grpc import PEER
from common.lifecycle import load_settings
from common.logs import configure_logging
from common.tracing import configure_from
from push_service.config import PushSettings
from push_service.server import RunningPushServer, start_push_server
from ws_edge.__main__ import EdgeServer, server_config
from ws_edge.app import create_app
from ws_edge.config import EdgeSettings

log = logging.getLogger("single_process")
USAGE = "python -m single_process takes no arguments: it is configured by PUSH_* and EDGE_* variables"


class SingleProcessServer(EdgeServer):
    """The edge's server, which stops the push service once the edge has closed (its link first): before
    uvicorn re-raises the signal that stopped it, which ends the process."""

    def __init__(self, config: uvicorn.Config, push: RunningPushServer) -> None:
        super().__init__(config)
        self.push: RunningPushServer | None = push

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            # Its lifespan closed the edge's link, unless a second signal forced the exit: then here,
            # so that the link does not reconnect into a push service that is stopping.
            await self.config.app.state.edge.push.close()  # type: ignore[attr-defined]
            await self.stop_push()

    async def stop_push(self) -> None:
        push, self.push = self.push, None
        if push is not None:
            await push.stop()
            log.info("push service stopped")


async def serve(push_settings: PushSettings, edge_settings: EdgeSettings) -> None:
    running = await start_push_server(push_settings)
    log.info("push service listening on %s:%d (broker %s); the edge's link to it is in-process",
             push_settings.host, running.port, push_settings.broker_url)
    server: SingleProcessServer | None = None
    try:
        edge_settings = edge_settings.model_copy(update={"push_address": PEER})
        app = create_app(edge_settings, push_channel=running.local.channel)
        server = SingleProcessServer(server_config(app, edge_settings), running)
        await server.serve()
    finally:  # when the edge did not start, or failed (a clean shutdown has stopped it already)
        await (server.stop_push() if server is not None else running.stop())


def main() -> None:
    if sys.argv[1:]:
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    push_settings = load_settings(PushSettings, "push_service", argv=[])
    edge_settings = load_settings(EdgeSettings, "ws_edge", argv=[])
    configure_logging(edge_settings.log_level, edge_settings.log_format)
    configure_from(edge_settings, "ws_edge")
    uvloop.run(serve(push_settings, edge_settings))


if __name__ == "__main__":
    main()
