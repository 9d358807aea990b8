"""A simulated pool machine's worker: the protocol of docs/pool.md as the emulator's
synthetic pool machine plays it (arke_local/fly_emulator/synthetic_pool.py), as events;
and a single-mode machine's (`ContractWorker`: one task from its environment, contracts
§3, which pool mode creates for a task larger than any pool machine, docs/pool.md).

Each of its `WORKER_CONCURRENCY` slots pulls; a task "converts" for a drawn duration while
heartbeating every `heartbeat_interval_ms` (a `drop` ends it without a callback), uploads
its JPEG to the assignment's presigned `output_url` (recorded, not stored), posts the
success callback and pulls again; `wait` waits, `exit` and 404 end the slot, 401 ends it
with 1, 5xx and no answer are retried (1 s doubling to 10 s, for up to 60 s). The machine's
process exits when every slot has ended.

Faults, drawn from the machine's own RNG (so no other machine's draws change them): a
task's machine crashes or hangs `task_fault_after_s` into it (or at its end, if shorter);
a callback is dropped with its machine crashing, sent twice, or held back late (and then
sent even if the machine was destroyed meanwhile: it was on the wire).

Memory (docs/worker.md "Memory tiers"): the simulation says what a TIFF needs
(`Simulation.tiff_need`, from its input key), the machine has its guest's memory. A TIFF
whose header needs more than the machine has, while the assignment's `max_memory_mb` is
larger than the machine too, ends after the download and header read (`header_s`) with the
error callback `needs_memory` and its `memory_mb`; without such a `max_memory_mb` it is
converted as any other (the real worker takes the best encoder path within its budget). A
TIFF whose header fits but whose conversion does not (`oom_mb` above the machine's memory)
runs `oom_after` of its duration, then ends `out_of_memory` (the OOM killer took the
conversion's child; the machine lives on and its slot pulls again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from arke_local.fly_emulator.durations import TaskDuration

from .fly_model import SimMachine

RETRYABLE = {0, 408, 425, 429, 500, 502, 503, 504}
CALLBACK_ATTEMPTS = 5


@dataclass(frozen=True)
class WorkerFaults:
    crash_mid_task_rate: float = 0.0
    hang_rate: float = 0.0
    task_fault_after_s: float = 0.5
    crash_before_callback_rate: float = 0.0
    duplicate_callback_rate: float = 0.0
    late_callback_rate: float = 0.0
    late_callback_delay_s: float = 90.0  # past HEARTBEAT_TIMEOUT_MS: the attempt is retried first


@dataclass(frozen=True)
class TiffNeed:
    """What one TIFF needs of its machine: `header_mb`, the memory full quality needs as
    read from its header (None: no more than the pool's smallest machine); `oom_mb`, the
    memory its conversion really takes when that is more than the header says (None: as
    the header says)."""

    header_mb: int | None = None
    oom_mb: int | None = None


@dataclass(frozen=True)
class WorkerSpec:
    task_s: TaskDuration = TaskDuration("constant", 3.0)
    upload_s: float = 0.05
    header_s: tuple[float, float] = (0.05, 0.2)  # download + header read, before a needs_memory answer
    oom_after: float = 0.5  # share of the duration an out-of-memory conversion runs before it is killed
    pull_give_up_s: float = 60.0
    pull_backoff_max_s: float = 10.0


@dataclass
class _Task:
    body: dict[str, Any]
    slot: int
    ends: float
    duration: float
    cancelled: bool = False
    error: dict[str, Any] | None = None  # the error callback's fields instead of a success


class PoolWorker:
    def __init__(self, sim: Any, machine: SimMachine, spec: WorkerSpec, faults: WorkerFaults) -> None:
        self.sim, self.machine, self.spec, self.faults = sim, machine, spec, faults
        self.loop, self.rng = sim.loop, machine.rng
        env = machine.config.get("env", {})
        # a standing machine (no BATCH_ID) pulls its machine-scoped route first, then wherever
        # the answers' `pull_url` says (docs/pool.md "Standing pool"), as the emulator's does
        self.base = str(env.get("ORCHESTRATOR_URL", "")).rstrip("/")
        batch, name = str(env.get("BATCH_ID", "")).strip(), env.get("MACHINE_NAME", "")
        self.pull_url = (f"{self.base}/pool/{batch}/machines/{name}/pull" if batch
                         else f"{self.base}/pool/machines/{name}/pull")
        self.heartbeat_url = f"{self.base}/pool/{batch}/machines/{name}/heartbeat"
        self.auth = {"authorization": f"Bearer {env.get('MACHINE_TOKEN', '')}"}
        self.slots = max(1, int(env.get("WORKER_CONCURRENCY") or 1))
        self.codes: dict[int, int] = {}
        self.halted = False

    # ---- life ---------------------------------------------------------------------------

    def boot(self, start: int) -> None:
        if self.halted or self.machine.starts != start:
            return
        for slot in range(self.slots):
            self._pull(slot, None, 1.0)

    def halt(self) -> None:
        self.halted = True

    def _slot_done(self, slot: int, code: int) -> None:
        self.codes[slot] = code
        if len(self.codes) == self.slots and not self.halted:
            self.sim.fly.exited(self.machine, max(self.codes.values()))

    def _crash(self, kind: str) -> None:
        self.sim.record(kind, machine=self.machine.id)
        if kind == "hang":
            self.halted = True  # frozen: started, silent, until someone destroys it
        else:
            self.sim.fly.exited(self.machine, 137)

    def _post(self, url: str, headers: dict[str, str], body: dict, then: Callable[[int, Any], None]) -> None:
        self.sim.api.request("POST", url, headers, body, then)

    # ---- pulling ------------------------------------------------------------------------

    def _pull(self, slot: int, give_up_at: float | None, delay: float) -> None:
        if not self.halted:
            self._post(self.pull_url, self.auth, {}, lambda st, b: self._pulled(slot, st, b, give_up_at, delay))

    def _pulled(self, slot: int, status: int, body: Any, give_up_at: float | None, delay: float) -> None:
        if self.halted:
            return
        if status == 200 and isinstance(body, dict):
            follow = body.get("pull_url")
            if isinstance(follow, str) and follow.startswith(self.base + "/"):
                self.pull_url = follow
            action = body.get("action")
            if action == "task" and isinstance(body.get("task"), dict):
                return self._work(slot, body["task"], body.get("heartbeat_interval_ms", 10000))
            if action == "wait":
                return self.loop.after(float(body.get("retry_after_ms", 1000)) / 1000, self._pull, slot, None, 1.0)
            return self._slot_done(slot, 0 if action == "exit" else 1)
        if status in (401, 403) or (400 <= status < 500 and status not in RETRYABLE and status != 404):
            return self._slot_done(slot, 1)
        if status == 404:
            return self._slot_done(slot, 0)
        give_up_at = give_up_at if give_up_at is not None else self.loop.now + self.spec.pull_give_up_s
        if self.loop.now + delay > give_up_at:
            return self._slot_done(slot, 1)
        self.loop.after(delay, self._pull, slot, give_up_at, min(delay * 2, self.spec.pull_backoff_max_s))

    # ---- one task -----------------------------------------------------------------------

    def _work(self, slot: int, body: dict[str, Any], interval_ms: Any) -> None:
        duration = self._draw()
        error = None
        need = self.sim.tiff_need(body.get("input_r2_key"))
        if need is not None:
            duration, error = self._memory(body, need, duration)
        task = _Task(body, slot, self.loop.now + duration, duration, error=error)
        fault = self._task_fault()
        if fault:
            self.loop.after(min(self.faults.task_fault_after_s, duration), self._strike, task, fault)
        interval = max(0.05, float(interval_ms) / 1000)
        if interval < duration:
            self.loop.after(interval, self._beat, task, interval)
        self.loop.after(duration, self._finish, task)

    def _memory(self, body: dict[str, Any], need: TiffNeed, duration: float) -> tuple[float, dict | None]:
        """How a TIFF with needs ends on this machine: (seconds, error fields or None)."""
        machine_mb, task_id = self.machine.memory_mb, body.get("task_id")
        largest = body.get("max_memory_mb")
        largest = largest if isinstance(largest, int) and not isinstance(largest, bool) else None
        if need.header_mb and need.header_mb > machine_mb and largest and largest > machine_mb:
            self.sim.memory_event("needs_memory", task=task_id, machine=self.machine.id, memory_mb=need.header_mb,
                                  machine_mb=machine_mb)
            return self.rng.uniform(*self.spec.header_s), {
                "error": f"needs {need.header_mb} MB for full-quality encoding (simulated); this machine has "
                         f"{machine_mb} MB, the pool up to {largest} MB",
                "error_code": "needs_memory", "memory_mb": need.header_mb}
        if need.oom_mb and need.oom_mb > machine_mb:
            self.sim.memory_event("out_of_memory", task=task_id, machine=self.machine.id, machine_mb=machine_mb)
            return duration * self.spec.oom_after, {
                "error": "conversion process was killed by SIGKILL (out of memory?)", "error_code": "out_of_memory"}
        return duration, None

    def _draw(self) -> float:
        d = self.spec.task_s
        if d.kind == "uniform":
            return self.rng.uniform(d.a, d.b)
        if d.kind == "normal":
            return max(0.0, self.rng.gauss(d.a, d.b))
        return d.a

    def _task_fault(self) -> str | None:
        f = self.faults
        if f.crash_mid_task_rate and self.rng.random() < f.crash_mid_task_rate:
            return "crash_mid_task"
        if f.hang_rate and self.rng.random() < f.hang_rate:
            return "hang"
        return None

    def _strike(self, task: _Task, fault: str) -> None:
        if not self.halted and not task.cancelled:
            task.cancelled = True
            self._crash(fault)

    def _beat(self, task: _Task, interval: float) -> None:
        if self.halted or task.cancelled:
            return
        url = task.body.get("heartbeat_url") or self.heartbeat_url
        body = {"task_id": task.body.get("task_id"), "attempt": task.body.get("attempt")}
        self._post(url, self.auth, body, lambda st, b: self._beaten(task, st, b))
        if self.loop.now + interval < task.ends:
            self.loop.after(interval, self._beat, task, interval)

    def _beaten(self, task: _Task, status: int, body: Any) -> None:
        if self.halted or task.cancelled:
            return
        if status in (401, 403):
            task.cancelled = True
            self._slot_done(task.slot, 1)
        elif status == 200 and isinstance(body, dict) and body.get("action") == "drop":
            task.cancelled = True
            self.sim.record("dropped", task=task.body.get("task_id"), machine=self.machine.id)
            self._pull(task.slot, None, 1.0)

    def _finish(self, task: _Task) -> None:
        if self.halted or task.cancelled:
            return
        if task.error is not None:  # nothing converted, nothing uploaded
            return self._callback(task)
        self.loop.after(self.spec.upload_s, self._uploaded, task)

    def _uploaded(self, task: _Task) -> None:
        if self.halted or task.cancelled:
            return
        body = task.body
        key = unquote(urlsplit(body.get("output_url") or "").path.split("/", 2)[-1]) or body.get("output_r2_key")
        self.sim.r2_put(key, body.get("task_id"), body.get("attempt"), self.machine.id)
        self._callback(task)

    # ---- the callback -------------------------------------------------------------------

    def _callback(self, task: _Task) -> None:
        body, f = task.body, self.faults
        key = body.get("output_r2_key") or ""
        if task.error is not None:  # worker/steps.py error_body
            result = {"task_id": body.get("task_id"), "batch_id": body.get("batch_id"), "status": "error",
                      **task.error}
        else:
            result = {"task_id": body.get("task_id"), "batch_id": body.get("batch_id"), "status": "success",
                      "output_r2_key": key, "output_file_name": key.rsplit("/", 1)[-1], "output_file_size": 2048,
                      "performance": {"total_time_ms": int(task.duration * 1000), "download_time_ms": 0,
                                      "conversion_time_ms": int(task.duration * 1000),
                                      "upload_time_ms": int(self.spec.upload_s * 1000)}}
        headers = {"authorization": f"Bearer {body.get('callback_token', '')}"}
        url = body.get("callback_url", "")
        roll = self.rng.random
        if f.crash_before_callback_rate and roll() < f.crash_before_callback_rate:
            return self._crash("crash_before_callback")
        copies = 2 if f.duplicate_callback_rate and roll() < f.duplicate_callback_rate else 1
        late = f.late_callback_delay_s if f.late_callback_rate and roll() < f.late_callback_rate else 0.0
        if copies == 2:
            self.sim.record("duplicate_callback", task=body.get("task_id"))
        if late:
            self.sim.record("late_callback", task=body.get("task_id"))
        self.loop.after(late, self._deliver, task, url, headers, result, copies, 1, 0.5)

    def _deliver(self, task: _Task, url: str, headers: dict, result: dict, copies: int, attempt: int,
                 delay: float) -> None:
        def answered(status: int, body: Any) -> None:
            self.sim.callback_answered(result["task_id"], status, body)
            if status in RETRYABLE and attempt < CALLBACK_ATTEMPTS:
                return self.loop.after(delay, self._deliver, task, url, headers, result, copies, attempt + 1,
                                       delay * 2)
            if copies > 1:
                return self._deliver(task, url, headers, result, copies - 1, 1, 0.5)
            if not self.halted:
                self._next(task.slot)
        self._post(url, headers, result, answered)

    def _next(self, slot: int) -> None:
        """After a task's callback: the slot pulls again."""
        self._pull(slot, None, 1.0)


class ContractWorker(PoolWorker):
    """A single-mode machine (contracts §3): its task is in its environment; it converts
    (or runs out of memory, as a pool machine's does), uploads, calls back and exits 0. No
    heartbeats (single mode's attempts end by TASK_TIMEOUT) and no `max_memory_mb`."""

    def __init__(self, sim: Any, machine: SimMachine, spec: WorkerSpec, faults: WorkerFaults) -> None:
        super().__init__(sim, machine, spec, faults)
        env = machine.config.get("env", {})
        self.slots = 1
        self.assignment = {
            "task_id": env.get("TASK_ID"), "batch_id": env.get("BATCH_ID"), "attempt": env.get("ATTEMPT"),
            "input_r2_key": env.get("INPUT_R2_KEY"), "output_r2_key": env.get("OUTPUT_R2_KEY"),
            "output_url": env.get("OUTPUT_URL"), "callback_url": env.get("CALLBACK_URL"),
            "callback_token": env.get("CALLBACK_TOKEN")}

    def boot(self, start: int) -> None:
        if self.halted or self.machine.starts != start:
            return
        self.sim.record("contract_task", task=self.assignment["task_id"], machine=self.machine.id)
        self._work(0, self.assignment, 10**9)

    def _next(self, slot: int) -> None:
        self._slot_done(slot, 0)
