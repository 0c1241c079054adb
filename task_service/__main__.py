"""`python -m task_service`: run the task service until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from common.lifecycle import load_settings, run_until_signalled
from common.logs import configure_logging
from common.tracing import configure_from

from .config import TaskSettings
from .server import start_task_server

log = logging.getLogger("task_service")


async def main() -> None:
    settings = load_settings(TaskSettings, "task_service")
    configure_logging(settings.log_level, settings.log_format)
    configure_from(settings, "task_service")
    running = await start_task_server(settings)
    log.info("task service listening on %s:%d, publishing to %s", settings.host, running.port, settings.push_address)
    await run_until_signalled(running)


if __name__ == "__main__":
    asyncio.run(main())
