import time


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch: the envelope's `timestamp`."""
    return time.time_ns() // 1_000_000
