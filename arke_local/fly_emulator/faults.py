"""Fault injection: the knobs (`FaultSettings`) and the dice (`FaultInjector`).

Deciding only: given the knobs, a seeded RNG and the scripted queues, say which fault the
next create, start, callback or pool task gets. Doing the fault (answering 429, killing a
process) is the server's and the supervisor's job.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

ENV_PREFIX = "FLY_EMULATOR_FAULT_"
CREATE_TIMEOUT = "timeout"
CALLBACK_ANSWERS = ("forward", "crash", "duplicate", "late")
TASK_ANSWERS = ("none", "crash", "hang")  # what a pool machine does with a task it got
MIGRATED = "migrated"
START_REFUSALS = (409, 412)  # host full, machine not startable (see docs/fly-emulator.md)
SCRIPTS = ("script", "callback_script", "task_script", "start_script")


@dataclass
class FaultSettings:
    """Every knob; its env var is `FLY_EMULATOR_FAULT_<NAME>` and its admin key `<name>`."""

    rate_429: float = 0.0  # share of creates answered 429 (Retry-After: 1)
    rate_5xx: float = 0.0  # share of creates answered 503; no machine is created
    create_timeout_rate: float = 0.0  # share of creates whose answer is held back ...
    create_timeout_delay_s: float = 30.0  # ... this long (the machine is created)
    boot_delay_s: float = 0.0  # created -> started takes this long
    crash_before_callback_rate: float = 0.0  # callback dropped, machine killed
    duplicate_callback_rate: float = 0.0  # callback forwarded twice
    callback_delay_s: float = 0.0  # every forwarded callback is held this long
    late_callback_rate: float = 0.0  # share of callbacks held back late_callback_delay_s ...
    late_callback_delay_s: float = 30.0  # ... (set it above the orchestrator's task timeout)
    # Pool machines (WORKER_MODE=pool), per task a machine pulls:
    crash_mid_task_rate: float = 0.0  # share of tasks whose machine dies holding them
    hang_rate: float = 0.0  # share of tasks whose machine freezes: no heartbeat, no callback
    task_fault_after_s: float = 0.5  # how far into the task the crash/hang strikes
    # POST start of a stopped machine:
    start_failure_rate: float = 0.0  # share of starts refused with start_failure_status ...
    start_failure_status: int = 409  # ... 409 (host full), 412 (not startable) or a 5xx
    start_migrated_rate: float = 0.0  # share of starts that move the machine to another host
    migrate_delay_s: float = 2.0  # a migrated start takes this much longer
    seed: int | None = None
    # Forced answers for the next creates, in order: 200, 429, a 5xx status, or "timeout".
    script: list = field(default_factory=list)
    # Forced handling of the next callbacks, in order: "forward", "crash", "duplicate", "late".
    callback_script: list = field(default_factory=list)
    # Forced handling of the next tasks pool machines pull, in order: "none", "crash", "hang".
    task_script: list = field(default_factory=list)
    # Forced answers for the next starts of stopped machines: 200, 409, 412, 429, a 5xx, "migrated".
    start_script: list = field(default_factory=list)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("rate") or f.name.startswith("rate_"):
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise ValueError(f"{f.name} must be a number")
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{f.name} must be between 0 and 1")
            elif f.name.endswith("_s") and (
                not isinstance(value, int | float) or isinstance(value, bool) or value < 0
            ):
                raise ValueError(f"{f.name} must be a number >= 0")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ValueError("seed must be an integer or null")
        self.script = [_script_entry(e) for e in _as_list(self.script, "script")]
        for entry in _as_list(self.callback_script, "callback_script"):
            if entry not in CALLBACK_ANSWERS:
                raise ValueError(f"callback_script entries must be one of {CALLBACK_ANSWERS}")
        self.callback_script = list(self.callback_script)
        for entry in _as_list(self.task_script, "task_script"):
            if entry not in TASK_ANSWERS:
                raise ValueError(f"task_script entries must be one of {TASK_ANSWERS}")
        self.task_script = list(self.task_script)
        if _start_entry(self.start_failure_status) in (200, 429, MIGRATED):
            raise ValueError("start_failure_status must be 409, 412 or 500..599")
        self.start_script = [_start_entry(e) for e in _as_list(self.start_script, "start_script")]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def updated(self, changes: Mapping[str, object]) -> FaultSettings:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault knob(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FaultSettings:
        kw: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw in (None, ""):
                continue
            if f.name in SCRIPTS:
                kw[f.name] = json.loads(raw)
            elif f.name in ("seed", "start_failure_status"):
                kw[f.name] = int(raw)
            else:
                kw[f.name] = float(raw)
        return cls(**kw)


def _as_list(value: object, name: str) -> list:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{name} must be a list")
    return list(value)


def _script_entry(entry: object) -> int | str:
    if entry == CREATE_TIMEOUT:
        return CREATE_TIMEOUT
    is_int = isinstance(entry, int) and not isinstance(entry, bool)
    if is_int and (entry in (200, 429) or 500 <= entry <= 599):
        return entry
    raise ValueError(f"script entries must be 200, 429, 500..599 or 'timeout', not {entry!r}")


def _start_entry(entry: object) -> int | str:
    if entry == MIGRATED:
        return MIGRATED
    is_int = isinstance(entry, int) and not isinstance(entry, bool)
    if is_int and (entry in (200, 429, *START_REFUSALS) or 500 <= entry <= 599):
        return entry
    raise ValueError("start entries must be 200, 409, 412, 429, 500..599 or 'migrated', "
                     f"not {entry!r}")


@dataclass(frozen=True)
class StartFault:
    """What the next start of a stopped machine gets: `status` 200 starts it (after the
    extra `delay_s` on a new host when `migrated`); anything else refuses it."""

    status: int = 200
    migrated: bool = False
    delay_s: float = 0.0
    scripted: bool = False

    @property
    def refused(self) -> bool:
        return self.status != 200


@dataclass(frozen=True)
class CreateFault:
    """What the next create gets. `status` 200 means "create the machine"."""

    status: int = 200
    timeout: bool = False  # create, then hold the answer back for `delay_s`
    delay_s: float = 0.0
    scripted: bool = False

    @property
    def refused(self) -> bool:
        return self.status != 200


NO_FAULT = CreateFault()
NO_START_FAULT = StartFault()


class FaultInjector:
    """Thread-safe holder of the current knobs, the RNG and the scripted queues."""

    def __init__(self, settings: FaultSettings | None = None):
        self._lock = threading.Lock()
        self._apply(settings or FaultSettings())

    def _apply(self, settings: FaultSettings) -> None:
        self._settings = settings
        self._rng = random.Random(settings.seed)
        self._script: deque = deque(settings.script)
        self._callback_script: deque = deque(settings.callback_script)
        self._task_script: deque = deque(settings.task_script)
        self._start_script: deque = deque(settings.start_script)

    @property
    def settings(self) -> FaultSettings:
        with self._lock:
            return self._settings

    def update(self, changes: Mapping[str, object]) -> FaultSettings:
        """Change some knobs (unknown names or bad values raise ValueError). The RNG is
        reseeded and the scripts replaced by what is left of them plus what was given."""
        with self._lock:
            current = dataclasses.replace(
                self._settings, script=list(self._script), callback_script=list(self._callback_script),
                task_script=list(self._task_script), start_script=list(self._start_script),
            )
            self._apply(current.updated(changes))
            return self._settings

    def snapshot(self) -> dict:
        with self._lock:
            data = self._settings.as_dict()
            data["script"] = list(self._script)
            data["callback_script"] = list(self._callback_script)
            data["task_script"] = list(self._task_script)
            data["start_script"] = list(self._start_script)
            return data

    def scripted_create(self) -> CreateFault | None:
        """The next scripted create answer, or None when the script is empty."""
        with self._lock:
            if not self._script:
                return None
            entry = self._script.popleft()
            if entry == CREATE_TIMEOUT:
                return CreateFault(timeout=True, delay_s=self._settings.create_timeout_delay_s, scripted=True)
            return CreateFault(status=entry, scripted=True)

    def roll_create(self) -> CreateFault:
        """A random create fault from the rates (one die per knob, in a fixed order)."""
        with self._lock:
            s = self._settings
            if s.rate_429 and self._rng.random() < s.rate_429:
                return CreateFault(status=429)
            if s.rate_5xx and self._rng.random() < s.rate_5xx:
                return CreateFault(status=503)
            if s.create_timeout_rate and self._rng.random() < s.create_timeout_rate:
                return CreateFault(timeout=True, delay_s=s.create_timeout_delay_s)
            return NO_FAULT

    def callback_fault(self) -> str:
        """How to handle the next callback: "forward", "crash", "duplicate" or "late"."""
        with self._lock:
            if self._callback_script:
                return self._callback_script.popleft()
            s = self._settings
            if s.crash_before_callback_rate and self._rng.random() < s.crash_before_callback_rate:
                return "crash"
            if s.duplicate_callback_rate and self._rng.random() < s.duplicate_callback_rate:
                return "duplicate"
            if s.late_callback_rate and self._rng.random() < s.late_callback_rate:
                return "late"
            return "forward"

    def task_fault(self) -> str:
        """What a pool machine does with the task it just got: "none", "crash" (dies holding
        it) or "hang" (freezes: no heartbeat, no callback, stays started)."""
        with self._lock:
            if self._task_script:
                return self._task_script.popleft()
            s = self._settings
            if s.crash_mid_task_rate and self._rng.random() < s.crash_mid_task_rate:
                return "crash"
            if s.hang_rate and self._rng.random() < s.hang_rate:
                return "hang"
            return "none"

    def start_fault(self) -> StartFault:
        """How to answer the next start of a stopped machine: the script first, then one die
        for a refusal and one for a migration."""
        with self._lock:
            s = self._settings
            if self._start_script:
                entry = self._start_script.popleft()
                if entry == MIGRATED:
                    return StartFault(migrated=True, delay_s=s.migrate_delay_s, scripted=True)
                return StartFault(status=entry, scripted=True)
            if s.start_failure_rate and self._rng.random() < s.start_failure_rate:
                return StartFault(status=s.start_failure_status)
            if s.start_migrated_rate and self._rng.random() < s.start_migrated_rate:
                return StartFault(migrated=True, delay_s=s.migrate_delay_s)
            return NO_START_FAULT

    @property
    def task_fault_after_s(self) -> float:
        return self.settings.task_fault_after_s

    @property
    def boot_delay_s(self) -> float:
        return self.settings.boot_delay_s

    @property
    def callback_delay_s(self) -> float:
        return self.settings.callback_delay_s

    @property
    def late_callback_delay_s(self) -> float:
        return self.settings.late_callback_delay_s
