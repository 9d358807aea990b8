"""Virtual time for the fleet simulation: one clock that the orchestrator reads as epoch
seconds (`time.time`) and monotonic seconds (`time.monotonic`), and that only the event loop
moves. Sleeps are the loop's (bench/fleet_sim/loop.py): they end a greenlet's turn."""

from __future__ import annotations

import time as real_time
import types
from collections.abc import Callable

EPOCH_S = 1_800_000_000.0  # 2027-01-15T08:00:00Z: fixed, so two runs of one seed read the same times
MONOTONIC_BASE_S = 10_000.0


class VirtualClock:
    """Seconds since the simulation started (`now`), moved forward only by the loop."""

    def __init__(self, epoch_s: float = EPOCH_S) -> None:
        self.epoch_s = epoch_s
        self.now = 0.0

    def time(self) -> float:
        return self.epoch_s + self.now

    def time_ns(self) -> int:
        return int(self.time() * 1e9)

    def monotonic(self) -> float:
        return MONOTONIC_BASE_S + self.now

    def monotonic_ns(self) -> int:
        return int(self.monotonic() * 1e9)

    def advance_to(self, t: float) -> None:
        if t > self.now:
            self.now = t


def time_module(clock: VirtualClock, sleep: Callable[[float], None]) -> types.ModuleType:
    """A stand-in for the `time` module: the clock's readings and the loop's sleep, and the
    real module for everything else (strftime, struct_time, ...)."""

    class VirtualTime(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            return getattr(real_time, name)

    module = VirtualTime("time")
    module.time = clock.time
    module.time_ns = clock.time_ns
    module.monotonic = clock.monotonic
    module.monotonic_ns = clock.monotonic_ns
    module.perf_counter = clock.monotonic
    module.sleep = sleep
    return module
