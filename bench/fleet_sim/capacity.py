"""DynamoDB's throughput per partition, in virtual time: 1,000 write units and 3,000 read
units a second per partition key, as a token bucket per key that may run into debt.

A request's units (from the real items: bench/item_size.py) are taken from its partitions'
buckets when it is applied; a bucket in debt delays the answer until the debt is paid at
the partition's rate. That is DynamoDB's throttling seen from the client as a wait (the SDK
retries a throttled request with backoff; the real wait is that or longer). The units a
partition took in each whole second are kept, so the report can say which partition was
hottest and how close it came to its limit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

WCU_PER_PARTITION = 1000.0
RCU_PER_PARTITION = 3000.0

Partition = tuple[str, str, str]  # (table, index or "", partition key value)


@dataclass
class _Bucket:
    rate: float
    tokens: float
    stamp: float

    def take(self, units: float, now: float) -> float:
        """Take `units` at `now`; the seconds until the bucket is out of debt again."""
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= units
        return max(0.0, -self.tokens / self.rate)


@dataclass
class PartitionStats:
    """Units per partition and second: the peak second of each, and the throttled requests."""

    peak: dict[Partition, float] = field(default_factory=dict)
    total: Counter = field(default_factory=Counter)
    throttled: int = 0
    throttle_wait_s: float = 0.0
    _second: int = -1
    _this_second: Counter = field(default_factory=Counter)

    def add(self, partition: Partition, units: float, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._roll()
            self._second = second
        self._this_second[partition] += units
        self.total[partition] += units

    def _roll(self) -> None:
        for partition, units in self._this_second.items():
            if units > self.peak.get(partition, 0.0):
                self.peak[partition] = units
        self._this_second.clear()

    def hottest(self) -> tuple[Partition | None, float]:
        self._roll()
        if not self.peak:
            return None, 0.0
        partition = max(self.peak, key=lambda p: (self.peak[p], p))
        return partition, self.peak[partition]


class PartitionLimits:
    """The buckets of every partition seen, writes and reads apart."""

    def __init__(self, wcu: float = WCU_PER_PARTITION, rcu: float = RCU_PER_PARTITION) -> None:
        self.wcu, self.rcu = wcu, rcu
        self._buckets: dict[tuple[Partition, bool], _Bucket] = {}
        self.writes = PartitionStats()
        self.reads = PartitionStats()

    def charge(self, units: dict[Partition, float], now: float, write: bool) -> float:
        """Take each partition's units; the longest wait any of them imposes."""
        wait = 0.0
        stats = self.writes if write else self.reads
        for partition, amount in units.items():
            bucket = self._buckets.get((partition, write))
            if bucket is None:
                rate = self.wcu if write else self.rcu
                bucket = self._buckets[(partition, write)] = _Bucket(rate, rate, now)
            wait = max(wait, bucket.take(amount, now))
            stats.add(partition, amount, now)
        if wait > 0:
            stats.throttled += 1
            stats.throttle_wait_s += wait
        return wait
