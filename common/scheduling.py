"""Asking Linux for a short time slice for every thread of this process (`sched_setattr`).

Why a relay asks for one: each message the push service relays is a few short runs of several threads
(gRPC's poller and event engine, the loop's thread), each woken by the one before. On a core it
shares with a busy process (an edge writing one round to 1,000 sockets takes ~7 ms without a pause),
every one of those wake-ups can wait for the other's slice to end (1.4 ms by default on a 2-core
machine, more on bigger ones). Linux's EEVDF scheduler (6.12+) lets a normal task ask for a shorter
slice (`sched_runtime`, 0.1–100 ms): its virtual deadline comes sooner, so a woken thread runs soon
after it wakes, in shorter turns. Its share of the core is its weight's, as before: no privilege is
needed, and the nice value and policy are kept. Threads started later inherit the slice.

A kernel without custom slices takes the call and ignores the value (`request_slice` then says 0
threads took it). Where the call is refused (not Linux, an architecture not listed here, a seccomp
profile), `request_slice` raises OSError; the caller logs it and runs on with the kernel's default.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from pathlib import Path

# (sched_setattr, sched_getattr) system call numbers, per architecture.
SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}
FAIR_POLICIES = {0, 3, 5}  # SCHED_OTHER, SCHED_BATCH, SCHED_IDLE: the slice applies to these only
MIN_SLICE_NS, MAX_SLICE_NS = 100_000, 100_000_000  # the kernel clamps to this range
SCHED_FLAG_RESET_ON_FORK = 0x01


class SchedAttr(ctypes.Structure):  # struct sched_attr (include/uapi/linux/sched/types.h)
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64), ("sched_util_min", ctypes.c_uint32),
                ("sched_util_max", ctypes.c_uint32)]


def request_slice(seconds: float) -> int:
    """Every thread of this process at a slice of `seconds` (0: the kernel's default again); returns
    how many threads have it now (0 on a kernel without custom slices, which ignores the value).
    Threads that end meanwhile are passed over; any other refusal raises OSError."""
    syscall_numbers = SYSCALLS.get(platform.machine())
    if (not Path("/proc/self/task").is_dir() or syscall_numbers is None
            or ctypes.sizeof(ctypes.c_void_p) != 8):  # a 32-bit Python would call other syscalls by these numbers
        raise OSError(errno.ENOSYS, f"no sched_setattr here ({platform.system()} {platform.machine()})")
    set_number, get_number = syscall_numbers
    libc = ctypes.CDLL(None, use_errno=True)
    runtime = 0 if seconds == 0 else min(max(round(seconds * 1e9), MIN_SLICE_NS), MAX_SLICE_NS)
    taken = 0
    for task in Path("/proc/self/task").iterdir():
        tid, attr = int(task.name), SchedAttr()
        if not _called(libc, "sched_getattr", get_number, tid, ctypes.byref(attr), ctypes.sizeof(attr), 0):
            continue  # the thread ended
        if attr.sched_policy not in FAIR_POLICIES:
            continue  # a real-time thread (someone chose that): its slice is not this
        # Policy and nice as they are, and reset-on-fork if a launcher set it (threads started later then
        # start at the default slice: the launcher asked for that); the clamp values stay.
        attr.size, attr.sched_flags = ctypes.sizeof(attr), attr.sched_flags & SCHED_FLAG_RESET_ON_FORK
        attr.sched_runtime = runtime
        if not _called(libc, "sched_setattr", set_number, tid, ctypes.byref(attr), 0):
            continue
        # Read back: 6.12+ reports a normal thread's slice here (the default one after a 0), older kernels 0.
        if (_called(libc, "sched_getattr", get_number, tid, ctypes.byref(attr), ctypes.sizeof(attr), 0)
                and (attr.sched_runtime == runtime if runtime else attr.sched_runtime != 0)):
            taken += 1
    return taken


def _called(libc: ctypes.CDLL, name: str, number: int, *args: object) -> bool:
    """The system call's success; False if the thread ended meanwhile (ESRCH); OSError for the rest."""
    if libc.syscall(number, *args) == 0:
        return True
    if (code := ctypes.get_errno()) == errno.ESRCH:
        return False
    raise OSError(code, f"{name}: {os.strerror(code)}")
