"""common/scheduling.py: every thread of the process at the asked slice, threads started later too,
nice, policy and reset-on-fork kept; and the push service's threads at its setting (PUSH_SCHED_SLICE_US)."""

from __future__ import annotations

import asyncio
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT, System
from tests.support.sched import slice_in, thread_slices


def kernel_has_custom_slices() -> bool:
    """Linux 6.12+ (EEVDF with custom slices: its /proc files show `se.slice`) takes a normal thread's
    `sched_runtime` as its slice. Decided from the kernel alone, never by the function under test (a
    broken `request_slice` would otherwise skip the tests that should catch it)."""
    sched = Path("/proc/self/sched")
    release = re.match(r"(\d+)\.(\d+)", platform.release())
    return (sched.exists() and "se.slice" in sched.read_text() and release is not None
            and (int(release[1]), int(release[2])) >= (6, 12))


pytestmark = pytest.mark.skipif(not kernel_has_custom_slices(), reason="no custom time slices on this kernel")


def default_slice() -> int:
    """A new process's slice: the kernel's default."""
    out = subprocess.run([sys.executable, "-c", "print(open('/proc/self/sched').read())"], capture_output=True,
                         text=True, check=True).stdout
    return slice_in(out)


SCRIPT = """
import json, os, threading
from common.scheduling import request_slice
from tests.support.sched import thread_slices

os.nice(3)
hold = threading.Event()
early = [threading.Thread(target=hold.wait) for _ in range(3)]
for thread in early:
    thread.start()
batch = early[0].native_id
os.sched_setscheduler(batch, os.SCHED_BATCH | os.SCHED_RESET_ON_FORK, os.sched_param(0))
taken = request_slice(0.00025)
late = threading.Thread(target=hold.wait)
late.start()
after = thread_slices()
nice = {tid: os.getpriority(os.PRIO_PROCESS, tid) for tid in after}
policies = {tid: os.sched_getscheduler(tid) for tid in after}
back = request_slice(0)
reset = thread_slices()
hold.set()
print(json.dumps({"taken": taken, "after": sorted(after.values()), "nice": sorted(nice.values()),
                  "batch": policies[batch] == os.SCHED_BATCH | os.SCHED_RESET_ON_FORK,
                  "others": sorted(p for tid, p in policies.items() if tid != batch),
                  "back": back, "reset": sorted(reset.values())}))
"""


def test_every_thread_takes_the_slice_threads_started_later_inherit_it_and_nice_and_policy_stay():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["taken"] == 4  # the main thread and the three started before
    assert seen["after"] == [250_000] * 5  # the one started after inherits it
    assert seen["nice"] == [3] * 5
    assert seen["batch"] is True and seen["others"] == [0] * 4  # SCHED_BATCH and reset-on-fork kept; the rest SCHED_OTHER
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
        found = thread_slices(system.push.proc.pid)
        assert len(found) > 1  # the loop's thread and gRPC's
        assert set(found.values()) == {default_slice() if expected is None else expected}, found
    finally:
        system.push.stop()
