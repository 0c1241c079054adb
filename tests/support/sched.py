"""Threads' CPU time slices, as Linux shows them (`se.slice` in /proc/<pid>/task/<tid>/sched)."""

from __future__ import annotations

from pathlib import Path


def thread_slices(pid: int | str = "self") -> dict[int, int]:
    """Each thread's slice in ns (threads that end while this reads are left out)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "sched").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found[int(task.name)] = slice_in(text)
    return found


def slice_in(sched_text: str) -> int:
    return int(next(line for line in sched_text.splitlines() if line.startswith("se.slice")).split(":")[1])
