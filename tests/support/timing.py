"""A shared time unit a slow machine can scale: TIMEOUT_FACTOR=3 triples every wait."""

import os

FACTOR = float(os.environ.get("TIMEOUT_FACTOR", "1"))


def timeout(seconds: float) -> float:
    return seconds * FACTOR
