"""common/scheduling.py: every thread of the process at the asked slice, threads started later too,
nice and policy kept; and the push service's threads at its setting (PUSH_SCHED_SLICE_US)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT, System


def kernel_has_custom_slices() -> bool:
    """Linux 6.12+ takes a normal task's `sched_runtime` as its slice (earlier ones ignore it)."""
    if sys.platform != "linux":
        return False
    major, minor = (int(part) for part in os.uname().release.split(".")[:2])
    return (major, minor) >= (6, 12)


pytestmark = pytest.mark.skipif(not kernel_has_custom_slices(), reason="no custom time slices on this kernel")


def slices(task_dir: Path) -> dict[int, int]:
    """Each thread's slice in ns (`se.slice` in /proc/<pid>/task/<tid>/sched)."""
    found = {}
    for task in task_dir.iterdir():
        for line in (task / "sched").read_text().splitlines():
            if line.startswith("se.slice"):
                found[int(task.name)] = int(line.split(":")[1])
    return found


def default_slice() -> int:
    """A new process's slice: the kernel's default."""
    out = subprocess.run([sys.executable, "-c", "print(open('/proc/self/sched').read())"], capture_output=True,
                         text=True, check=True).stdout
    return int(next(line for line in out.splitlines() if line.startswith("se.slice")).split(":")[1])


SCRIPT = """
import json, os, threading
from pathlib import Path
from common.scheduling import request_slice
from tests.common.test_scheduling import slices

os.nice(3)
hold = threading.Event()
early = [threading.Thread(target=hold.wait) for _ in range(3)]
for thread in early:
    thread.start()
taken = request_slice(0.00025)
late = threading.Thread(target=hold.wait)
late.start()
after = slices(Path("/proc/self/task"))
nice = {tid: os.getpriority(os.PRIO_PROCESS, tid) for tid in after}
back = request_slice(0)
reset = slices(Path("/proc/self/task"))
hold.set()
print(json.dumps({"taken": taken, "after": list(after.values()), "nice": list(nice.values()),
                  "back": back, "reset": list(reset.values())}))
"""


def test_every_thread_takes_the_slice_threads_started_later_inherit_it_and_nice_stays():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["taken"] == 4  # the main thread and the three started before
    assert seen["after"] == [250_000] * 5  # the one started after inherits it
    assert seen["nice"] == [3] * 5
    assert seen["back"] == 5
    assert seen["reset"] == [default_slice()] * 5
    assert default_slice() != 250_000


@pytest.mark.parametrize(("setting", "expected"), [(None, 100_000), ("2000", 2_000_000), ("0", None)])
def test_the_push_service_runs_every_thread_at_its_slice(tmp_path: Path, setting: str | None, expected: int | None):
    system = System(tmp_path, push_env={} if setting is None else {"PUSH_SCHED_SLICE_US": setting})
    system.push.start()
    try:
        asyncio.run(system.wait_push())
        assert system.push.proc is not None
        found = slices(Path(f"/proc/{system.push.proc.pid}/task"))
        assert len(found) > 1  # the loop's thread and gRPC's
        assert set(found.values()) == {default_slice() if expected is None else expected}, found
    finally:
        system.push.stop()
