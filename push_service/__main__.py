"""`python -m push_service`: run the push service until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from .config import PushSettings
from .server import start_push_server

log = logging.getLogger("push_service")


async def main() -> None:
    settings = PushSettings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    running = await start_push_server(settings)
    log.info("push service listening on %s:%d (broker %s)", settings.host, running.port, settings.broker_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("push service stopping")
    await running.stop(grace=2.0)


if __name__ == "__main__":
    asyncio.run(main())
