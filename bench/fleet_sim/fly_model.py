"""Fly as a model: apps, machines and their states, what a machine costs while started and
while stopped, Fly's per-action rate limits and the faults Fly itself injects (429, 5xx,
an answer that never comes, a machine that fails to start).

States as Fly names them: created -> starting -> started -> stopping -> stopped ->
destroyed; a machine created with `skip_launch` waits stopped. A machine's worker (its
process, bench/fleet_sim/worker.py) runs from `boot_s` after it started until it exits,
crashes, hangs or the machine is stopped or destroyed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .loop import Loop

STARTED, STOPPED, DESTROYED = "started", "stopped", "destroyed"
RUNNING = ("starting", "started", "stopping")  # billed as a running machine


@dataclass(frozen=True)
class FlySpec:
    """Fly's numbers. Rate limits: 1 request a second per action (create and list per app;
    start, stop, update and destroy per machine), bursts of 3; Get Machine 5/s, bursts of 10
    (community.fly.io, "Understanding Fly.io API rate hard limits")."""

    action_rate: float = 1.0
    action_burst: int = 3
    get_rate: float = 5.0
    get_burst: int = 10
    api_latency_s: float = 0.05  # one Machines API round trip
    start_latency_s: float = 0.4  # start asked -> started
    boot_s: float = 5.0  # started -> the worker's first request, for a machine just created
    restart_boot_s: float = 1.0  # the same for a stopped machine started again (image cached)


@dataclass(frozen=True)
class FlyFaults:
    rate_429: float = 0.0  # share of creates and starts answered 429 by fault (beyond the limits)
    rate_5xx: float = 0.0  # share of creates answered 503 (no machine)
    create_timeout_rate: float = 0.0  # the machine is created, its answer held create_timeout_s
    create_timeout_s: float = 30.0
    start_failure_rate: float = 0.0  # the machine never gets to run its worker (stopped, exit 1)


@dataclass
class _Bucket:
    rate: float
    burst: int
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is due."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class SimMachine:
    id: str
    name: str
    app: str
    config: dict[str, Any]
    created_at: float
    rng: random.Random
    state: str = "created"
    since: float = 0.0
    running_s: float = 0.0
    stopped_s: float = 0.0
    starts: int = 0
    exit_code: int | None = None
    worker: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def memory_mb(self) -> int:
        """Its guest memory (the create or update request's `guest.memory_mb`): what its
        worker has (`FLY_VM_MEMORY_MB`), and what it is billed for."""
        return int((self.config.get("guest") or {}).get("memory_mb") or 0)

    def api(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "state": self.state, "region": self.config.get("region", "ord"),
                "config": self.config, "events": list(reversed(self.events))}


class FlyModel:
    def __init__(self, loop: Loop, spec: FlySpec, faults: FlyFaults, seed: int,
                 make_worker: Callable[[SimMachine], Any], log: Callable[..., None]) -> None:
        self.loop, self.spec, self.faults, self.seed = loop, spec, faults, seed
        self.make_worker, self.log = make_worker, log
        self.machines: dict[str, SimMachine] = {}
        self.names: dict[tuple[str, str], str] = {}  # (app, name) -> id, machines not destroyed
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._rng = random.Random(f"fly:{seed}")
        self.counts: dict[str, int] = {}
        self.by_memory: dict[tuple[str, int], int] = {}  # ("created" | "started" [" single"], memory_mb) -> machines
        # creations per app: Fly's 1 a second, burst 3, unless a warm-up makes its pool faster
        self.create_rate, self.create_burst = spec.action_rate, spec.action_burst

    def count(self, what: str, machine: SimMachine | None = None) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        if machine is not None:  # by memory; a single-mode machine (its task in its env) apart
            single = bool(machine.config.get("env", {}).get("TASK_ID"))
            key = (f"{what} single" if single else what, machine.memory_mb)
            self.by_memory[key] = self.by_memory.get(key, 0) + 1

    def limited(self, scope: str, action: str) -> float:
        """Seconds to wait for this action's token (0: allowed now, token taken)."""
        get = action == "get"
        bucket = self._buckets.get((scope, action))
        if bucket is None:
            rate, burst = (self.spec.get_rate, self.spec.get_burst) if get else (self.spec.action_rate,
                                                                                self.spec.action_burst)
            if action == "create":
                rate, burst = self.create_rate, self.create_burst
            bucket = self._buckets[(scope, action)] = _Bucket(rate, burst, float(burst), self.loop.now)
        return bucket.take(self.loop.now)

    def roll(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    # ---- machines -----------------------------------------------------------------------

    def create(self, app: str, name: str, config: dict[str, Any], skip_launch: bool) -> SimMachine:
        number = len(self.machines) + 1
        machine_id = hashlib.sha256(f"{self.seed}:{number}".encode()).hexdigest()[:14]
        machine = SimMachine(machine_id, name, app, config, self.loop.now,
                             random.Random(f"machine:{self.seed}:{machine_id}"), since=self.loop.now)
        self.machines[machine_id] = machine
        self.names[(app, name)] = machine_id
        self.count("created", machine)
        self._event(machine, "launch", "created")
        if skip_launch:
            self._move(machine, STOPPED)
        else:
            self.start(machine, fresh=True)
        return machine

    def start(self, machine: SimMachine, fresh: bool = False) -> None:
        """Start a machine: `fresh` (just created and launched) boots in `boot_s`, one
        started again from stopped in `restart_boot_s`."""
        machine.starts += 1
        if not fresh:
            self.count("started", machine)
        self._move(machine, "starting")
        self.loop.after(self.spec.start_latency_s, self._started, machine, machine.starts, fresh)

    def _started(self, machine: SimMachine, start: int, fresh: bool) -> None:
        if machine.state != "starting" or machine.starts != start:
            return
        self._move(machine, STARTED)
        if self.roll(self.faults.start_failure_rate):
            self.count("start_failures")
            self.log("start_failed", machine=machine.id)
            self.exited(machine, 1)
            return
        boot = self.spec.boot_s if fresh else self.spec.restart_boot_s
        machine.worker = self.make_worker(machine)
        self.loop.after(boot, machine.worker.boot, start)

    def stop(self, machine: SimMachine) -> None:
        if machine.state in RUNNING:
            self._halt(machine)
            self._move(machine, "stopping")
            self._move(machine, STOPPED)

    def destroy(self, machine: SimMachine) -> None:
        if machine.state == DESTROYED:
            return
        self._halt(machine)
        self._move(machine, DESTROYED)
        self.names.pop((machine.app, machine.name), None)
        self.count("destroyed")

    def exited(self, machine: SimMachine, code: int) -> None:
        """The worker's process ended: restart policy `no`, so stopped, then destroyed if
        the machine asked for `auto_destroy`."""
        if machine.state not in RUNNING:
            return
        machine.exit_code = code
        self._halt(machine)
        self._move(machine, STOPPED)
        if machine.config.get("auto_destroy"):
            self.destroy(machine)

    def _halt(self, machine: SimMachine) -> None:
        if machine.worker is not None:
            machine.worker.halt()
            machine.worker = None

    def _move(self, machine: SimMachine, state: str) -> None:
        now = self.loop.now
        if machine.state in RUNNING:
            machine.running_s += now - machine.since
        elif machine.state == STOPPED:
            machine.stopped_s += now - machine.since
        machine.state, machine.since = state, now
        self._event(machine, state, state)
        self.log("machine", id=machine.id, state=state)

    def _event(self, machine: SimMachine, kind: str, status: str) -> None:
        request = {"exit_event": {"exit_code": machine.exit_code, "oom_killed": False}} if status == STOPPED else {}
        machine.events.append({"type": kind, "status": status, "timestamp": int(self.loop.clock.time() * 1000),
                               "request": request})

    def billed(self) -> tuple[float, float]:
        """(running seconds, stopped seconds) over all machines, up to now."""
        by_memory = self.billed_by_memory()
        return sum(r for r, _ in by_memory.values()), sum(s for _, s in by_memory.values())

    def billed_by_memory(self) -> dict[int, tuple[float, float]]:
        """(running seconds, stopped seconds) of the machines of each memory, up to now."""
        now = self.loop.now
        out: dict[int, tuple[float, float]] = {}
        for m in self.machines.values():
            running = m.running_s + (now - m.since if m.state in RUNNING else 0.0)
            stopped = m.stopped_s + (now - m.since if m.state == STOPPED else 0.0)
            r, s = out.get(m.memory_mb, (0.0, 0.0))
            out[m.memory_mb] = (r + running, s + stopped)
        return out
