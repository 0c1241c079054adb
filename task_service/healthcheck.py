"""`python -m task_service.healthcheck`: exit 0 when the task_service beside it (same environment) is healthy."""

from __future__ import annotations

import sys

from common.healthcheck import grpc_serving, probe_exit_code

from .config import TaskSettings


def main() -> int:
    settings = TaskSettings()
    return probe_exit_code(grpc_serving(settings.host, settings.port, settings.tls_cert_file is not None))


if __name__ == "__main__":
    sys.exit(main())
