"""Counters of what the emulator injected and what happened (`GET /_emulator/stats`)."""

from __future__ import annotations

import threading
from collections import Counter

# Every counter, so that a reader sees zeros rather than missing keys.
COUNTERS = (
    "creates_received",
    "creates_accepted",
    "creates_rejected",  # 4xx other than 429: validation, duplicate name, cap, unknown image
    "rate_limited_429",  # the token bucket said no
    "injected_429",
    "injected_5xx",
    "injected_create_timeouts",
    "cap_rejections",
    "auth_failures",
    "machines_started",
    "machines_exited",
    "machines_exited_nonzero",
    "oom_kills",
    "machines_stopped_by_request",
    "machines_destroyed",
    "callbacks_received",
    "callbacks_forwarded",  # forwards made, a duplicate counts twice
    "callback_forward_errors",
    "callbacks_delayed",
    "crashes_before_callback",
    "duplicate_callbacks",
    "late_callbacks",
    "synthetic_outputs",  # outputs a synthetic machine stored
    "synthetic_upload_errors",
)


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter({name: 0 for name in COUNTERS})

    def incr(self, name: str, by: int = 1) -> None:
        if name not in COUNTERS:
            raise KeyError(name)
        with self._lock:
            self._counts[name] += by

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]
