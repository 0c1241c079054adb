"""When the fan-out loop rests after a round, so that what arrives meanwhile leaves in the same writes.

Every write to a socket is a system call, and at 1,000 sockets they are what the edge's core is spent
on: an edge that falls behind saturates, and its queue (not a short wait) is what makes the tail
latency. So after a long round (many sockets), an edge that is busy nearly all the time rests about as
long before the next round, and several messages then go out in one write per socket. An edge that
keeps up never rests: a rest would only delay the next message.

"Nearly all": 90 % of its time in rounds, a moving average that about four rounds in a row with work
waiting at their end bring there from 70 % (seven from idle). At 1,000 sockets and 100 messages a
second a round takes ~7 ms of every 10, and now and then a message arrives while one runs; at 75 %
that alone brought a 5-ms rest for the messages of the next round or two, and those were the slowest
tenth (issue 18: p99 1.56× the limit's against 1.86×, the median of twelve paired rounds;
docs/PERFORMANCE.md). No clock: durations are passed in.
"""

from __future__ import annotations


class FanoutPacing:
    def __init__(self, long_round: float = 0.001, max_rest: float = 0.005, busy_share: float = 0.9,
                 smoothing: float = 0.3) -> None:
        self.long_round = long_round  # a round shorter than this never leads to a rest
        self.max_rest = max_rest
        self.busy_share = busy_share
        self.smoothing = smoothing
        self.busy = 0.0  # the share of time spent in rounds, rests aside (moving average over rounds)

    def after_round(self, took: float, cycle: float) -> float:
        """`took`: how long the round lasted; `cycle`: the time since the previous round and its rest
        ended, this round included. Returns the rest it is worth if more arrived meanwhile (the
        caller checks that), or 0."""
        self.busy += self.smoothing * (took / max(cycle, took, 1e-9) - self.busy)
        if took > self.long_round and self.busy > self.busy_share:
            return min(took, self.max_rest)
        return 0.0
