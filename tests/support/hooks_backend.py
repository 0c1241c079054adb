"""The example hooks backend (examples/hooks_backend.py) as a real process on a free port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

from .processes import ServiceProcess, free_port, wait_grpc_serving


@contextlib.contextmanager
def hooks_backend(workdir: Path, **env: str) -> Iterator[tuple[ServiceProcess, str]]:
    """Started and serving (gRPC health); yields (the process, its host:port); stopped after."""
    port = free_port()
    backend = ServiceProcess("hooks_backend", "examples.hooks_backend", {"EXAMPLE_HOOKS_PORT": str(port), **env},
                             workdir / "hooks_backend.log")
    backend.start()
    try:
        asyncio.run(wait_grpc_serving(f"127.0.0.1:{port}", backend))
        yield backend, f"127.0.0.1:{port}"
    finally:
        backend.stop()
