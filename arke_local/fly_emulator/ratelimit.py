"""Token bucket for the create-machine rate (Fly: 1 request/s per action, bursts of 3).

Pure bookkeeping: never sleeps, never answers HTTP; the server turns a refusal into a 429.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBucket:
    """`rate` tokens per second, at most `burst` stored; `rate <= 0` means unlimited."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> tuple[bool, int]:
        """Take one token. Returns (allowed, whole seconds until a token is available)."""
        if self.rate <= 0:
            return True, 0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True, 0
            return False, max(1, math.ceil((1.0 - self._tokens) / self.rate))
