"""Counters of what the emulator injected and what happened (`GET /_emulator/stats`; the
server adds the gauges and the machine-seconds of accounting.py)."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

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
    # pool machines (WORKER_MODE=pool)
    "pool_pulls",  # pulls sent (synthetic) or proxied (processes)
    "pool_tasks",  # task assignments received
    "pool_heartbeats",
    "pool_drops",  # heartbeats answered "drop"
    "pool_forward_errors",  # a process's pull/heartbeat the proxy could not forward
    "crashes_mid_task",
    "hangs",
    # standing machines: skip_launch, start, update
    "machines_created_stopped",  # creates with skip_launch
    "starts_received",
    "starts_accepted",
    "starts_refused",  # not stopped (412) or an injected refusal
    "injected_start_failures",
    "starts_migrated",
    "updates_accepted",
    "updates_refused",
    # the per-action token buckets other than create's (that one is rate_limited_429)
    "rate_limited_list",
    "rate_limited_get",
    "rate_limited_wait",
    "rate_limited_start",
    "rate_limited_stop",
    "rate_limited_update",
    "rate_limited_delete",
)


MAX_INJECTIONS = 100_000  # the newest are kept


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter({name: 0 for name in COUNTERS})
        self._injections: deque[dict] = deque(maxlen=MAX_INJECTIONS)

    def injected(self, kind: str, machine_id: str, name: str) -> None:
        """Note a fault that hit one machine (`GET /_emulator/injections`), so a test can
        tell which tasks it should find retried."""
        with self._lock:
            self._injections.append({"kind": kind, "machine_id": machine_id, "name": name,
                                     "at": round(time.time(), 3)})

    def injections(self) -> list[dict]:
        with self._lock:
            return list(self._injections)

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
