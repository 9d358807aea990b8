"""Outbound pressure on Fly: a token bucket for creations and a gate closed by 429s.

Both live at module level in the tick's process and are shared by every batch in every
pass of that process. The tick function runs with reserved concurrency 1, so one process
holds them at a time; the per-batch lease keeps overlapping passes apart regardless.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. Thread-safe."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_take(self) -> float:
        """Take a token now (returns 0.0), or return how many seconds until one is due."""
        with self._lock:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate

    def give_back(self) -> None:
        """Return a token taken for a creation that did not happen (the cap was full)."""
        with self._lock:
            self._refill()
            self._tokens = min(self.burst, self._tokens + 1)

    def take(self, deadline: float, gate: RetryAfterGate | None = None) -> bool:
        """Wait for a token until `deadline` (monotonic seconds); False if none came."""
        while True:
            wait = gate.remaining() if gate else 0.0
            if wait <= 0:
                wait = self.try_take()
                if wait == 0.0:
                    return True
            if self._clock() + wait > deadline:
                return False
            time.sleep(wait)


class RetryAfterGate:
    """Closed for `Retry-After` seconds after a 429; every creator waits behind it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until = 0.0
        self._lock = threading.Lock()

    def close_for(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)

    def remaining(self) -> float:
        return max(0.0, self._until - self._clock())
