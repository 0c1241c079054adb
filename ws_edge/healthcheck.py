"""`python -m ws_edge.healthcheck`: exit 0 when the ws_edge beside it (same environment) is healthy."""

from __future__ import annotations

import sys

from common.healthcheck import http_ok, local_host, probe_exit_code

from .config import EdgeSettings


def main() -> int:
    settings = EdgeSettings()
    return probe_exit_code(http_ok(f"http://{local_host(settings.host)}:{settings.port}/readyz"))


if __name__ == "__main__":
    sys.exit(main())
