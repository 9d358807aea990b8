"""Machine-seconds for cost accounting: how long machines have been started (Fly bills CPU
and memory) and how long stopped (Fly bills only the rootfs, about $0.15/GB-month).

Told of every state change by the supervisor; reads its own clock (injectable, so a test
can advance time without sleeping). Never changes a machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .machines import MachineState

S = MachineState
STARTED_STATES = frozenset({S.STARTING, S.STARTED, S.STOPPING})  # the VM runs
STOPPED_STATES = frozenset({S.STOPPED})  # only the rootfs is kept


def billed_as(state: MachineState) -> str | None:
    """"started", "stopped" or None (created, destroying, destroyed: not billed here)."""
    if state in STARTED_STATES:
        return "started"
    if state in STOPPED_STATES:
        return "stopped"
    return None


class Accounting:
    """Machine-seconds per billing kind, closed intervals plus the ones still open."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._totals = {"started": 0.0, "stopped": 0.0}
        self._open: dict[str, tuple[str, float]] = {}  # machine id -> (kind, since)

    def moved(self, machine_id: str, state: MachineState) -> None:
        """The machine is now in `state`: close its open interval, open the next one."""
        now = self._clock()
        kind = billed_as(state)
        with self._lock:
            current = self._open.pop(machine_id, None)
            if current is not None and current[0] == kind:
                self._open[machine_id] = current  # same kind: the interval goes on
                return
            if current is not None:
                self._totals[current[0]] += now - current[1]
            if kind is not None:
                self._open[machine_id] = (kind, now)

    def snapshot(self) -> dict[str, float]:
        """`started_machine_seconds` and `stopped_machine_seconds` until now."""
        now = self._clock()
        with self._lock:
            totals = dict(self._totals)
            for kind, since in self._open.values():
                totals[kind] += now - since
        return {"started_machine_seconds": round(totals["started"], 3),
                "stopped_machine_seconds": round(totals["stopped"], 3)}
