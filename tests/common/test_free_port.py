"""The test harness's own port picking (tests/support/processes.py): a port another test process on the
machine holds is never handed out, whatever that process's own record says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import processes


def test_a_port_another_test_process_holds_is_not_handed_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Three ports claimed for this test on the machine-wide record first, so that no other test process
    # (another xdist worker) binds them meanwhile; the case itself plays out on a record of its own.
    ports = [processes.free_port() for _ in range(3)]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from tests.support import processes as p; "
         f"p.PORT_CLAIMS = Path({str(tmp_path)!r}); p.SERVICE_PORTS = {ports[:2]!r}; "
         "print(sorted(p.free_port() for _ in range(2)), flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=processes.ROOT, text=True)
    claims: list[int] = []
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == str(sorted(ports[:2]))  # the other process holds both
        monkeypatch.setattr(processes, "PORT_CLAIMS", tmp_path, raising=False)
        monkeypatch.setattr(processes, "_handed_out", set())
        monkeypatch.setattr(processes, "_claims", claims, raising=False)
        drawn = iter(ports)  # the held ones are drawn first
        monkeypatch.setattr(processes.random, "choice", lambda _: next(drawn))
        assert processes.free_port() == ports[2]
    finally:
        holder.communicate("")
        for claim in claims:
            os.close(claim)
