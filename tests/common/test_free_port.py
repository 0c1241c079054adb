"""The test harness's own port picking (tests/support/processes.py): a port another test process on the
machine holds is never handed out, whatever that process's own record says."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import processes


def test_a_port_another_test_process_holds_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    ports = range(processes.SERVICE_PORTS.start + 4000, processes.SERVICE_PORTS.start + 4003)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tests.support import processes as p; "
         f"p.SERVICE_PORTS = range({ports.start}, {ports.stop - 1}); "
         "print(sorted(p.free_port() for _ in range(2)), flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=processes.ROOT, text=True)
    try:
        assert holder.stdout is not None
        held = holder.stdout.readline().strip()
        assert held == str([ports[0], ports[1]])  # nothing listens on them: the other process has both
        monkeypatch.setattr(processes, "_handed_out", set())
        drawn = iter([ports[0], ports[1], ports[2]])  # the held ones are drawn first
        monkeypatch.setattr(processes.random, "choice", lambda _: next(drawn))
        assert processes.free_port() == ports[2]
    finally:
        holder.communicate("")
