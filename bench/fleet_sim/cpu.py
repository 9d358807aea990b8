"""The local stack's cores as a resource: its moto server, its one API process and the
emulator's machines all run on the same few cores (2 on the benchmark host), so under a
large pool a request waits for a core as well as for its own server's lock or GIL.

Only the `stack` profile uses it (profiles.py): DynamoDB and Lambda have no such limit.
"""

from __future__ import annotations


class Cores:
    """`count` cores, each free from some time on; a piece of work takes the earliest free
    one, no sooner than its own server is free (moto's lock, the API's GIL)."""

    def __init__(self, count: int) -> None:
        self.free = [0.0] * max(1, count)
        self.busy_s = 0.0

    def run(self, now: float, cost_s: float, server_free: float = 0.0) -> float:
        """When work of `cost_s` arriving at `now` ends."""
        core = min(range(len(self.free)), key=lambda i: (self.free[i], i))
        start = max(now, server_free, self.free[core])
        self.free[core] = start + cost_s
        self.busy_s += cost_s
        return start + cost_s
