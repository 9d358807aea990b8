"""Rate limits of the Machines API: a token bucket per (action, key), where the key is the
app or the machine id, as Fly documents its limits ("per action, per machine or app id":
1 request/s, bursts of 3; Get Machine 5/s, bursts of 10).

Pure bookkeeping: never sleeps, never answers HTTP; the server turns a refusal into a 429.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

APP, MACHINE = "app", "machine"
ACTIONS = ("create", "list", "get", "wait", "start", "stop", "update", "delete")
APP_ONLY = ("create", "list")  # these name no machine: they can only be keyed per app


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


@dataclass(frozen=True)
class RateLimit:
    """One action's limit: `rate` requests/s (`<= 0`: unlimited), `burst`, keyed per `key`."""

    rate: float
    burst: int
    key: str

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, int | float):
            raise ValueError("rate must be a number")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError("burst must be an integer >= 1")
        if self.key not in (APP, MACHINE):
            raise ValueError(f"key must be {APP!r} or {MACHINE!r}, not {self.key!r}")


# Actions the emulator did not limit before stay unlimited unless configured (their Fly
# values are in docs/fly-emulator.md); the keying is Fly's likely reading either way.
DEFAULT_RATE_LIMITS: dict[str, RateLimit] = {
    "create": RateLimit(1.0, 3, APP),  # from create_rate / create_burst
    "list": RateLimit(0.0, 3, APP),  # Fly: 1/s burst 3
    "get": RateLimit(0.0, 10, MACHINE),  # Fly: 5/s burst 10
    "wait": RateLimit(0.0, 3, MACHINE),
    "start": RateLimit(1.0, 3, MACHINE),
    "stop": RateLimit(1.0, 3, MACHINE),
    "update": RateLimit(1.0, 3, MACHINE),
    "delete": RateLimit(0.0, 3, MACHINE),
}


def parse_rate_limits(overrides: Mapping[str, object], create_rate: float,
                      create_burst: int) -> dict[str, RateLimit]:
    """The full table: the defaults (create from `create_rate`/`create_burst`) with
    `overrides` merged field by field, e.g. `{"get": {"rate": 5}, "start": {"key": "app"}}`.
    Unknown actions or fields, bad values, or `create`/`list` keyed per machine: ValueError."""
    table = dict(DEFAULT_RATE_LIMITS)
    table["create"] = RateLimit(float(create_rate), int(create_burst), APP)
    for action, change in overrides.items():
        if action not in ACTIONS:
            raise ValueError(f"unknown rate-limited action {action!r}: one of {', '.join(ACTIONS)}")
        table[action] = _merged(table[action], change, action)
    return table


def _merged(current: RateLimit, change: object, action: str) -> RateLimit:
    if isinstance(change, RateLimit):
        merged = change
    elif isinstance(change, Mapping) and set(change) <= {"rate", "burst", "key"}:
        merged = replace(current, **dict(change))
    else:
        raise ValueError(f"rate limit of {action!r} must be an object with rate, burst and/or key")
    if action in APP_ONLY and merged.key != APP:
        raise ValueError(f"{action!r} names no machine: it can only be keyed per app")
    return merged


class RateLimiter:
    """One token bucket per (action, key), made on first use."""

    def __init__(self, limits: Mapping[str, RateLimit], clock: Callable[[], float] = time.monotonic):
        self.limits = dict(limits)
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, action: str, app: str, machine_id: str | None = None) -> tuple[bool, int]:
        """Take a token for one request. Returns (allowed, whole seconds until one is free)."""
        limit = self.limits[action]
        if limit.rate <= 0:
            return True, 0
        key = f"machine:{machine_id}" if limit.key == MACHINE and machine_id else f"app:{app}"
        with self._lock:
            bucket = self._buckets.get((action, key))
            if bucket is None:
                bucket = self._buckets[(action, key)] = TokenBucket(limit.rate, limit.burst, self._clock)
        return bucket.take()
