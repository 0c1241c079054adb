"""Running a service process until SIGINT/SIGTERM, then stopping it gracefully."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Protocol, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class Stoppable(Protocol):
    async def stop(self, grace: float | None = ...) -> None: ...


async def run_until_signalled(running: Stoppable, grace: float = 2.0) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop(grace)


def load_settings(cls: type[SettingsT], service: str, argv: list[str] | None = None) -> SettingsT:
    """The service's settings from its environment, overridden by command-line flags (`--port 1234`,
    `--broker-url ...`; `--help` lists them); a bad value stops it with a clear message."""
    try:
        return cls(  # type: ignore[call-arg]
            _cli_parse_args=sys.argv[1:] if argv is None else argv,
            _cli_prog_name=f"python -m {service}",
            _cli_kebab_case=True,
        )
    except ValidationError as exc:
        print(f"{service}: invalid configuration:\n{exc}", file=sys.stderr)
        sys.exit(2)
