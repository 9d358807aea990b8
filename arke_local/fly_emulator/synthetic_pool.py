"""The synthetic pool machine: a synthetic image started with `WORKER_MODE=pool` plays the
pool worker of docs/pool.md (the lead's pool protocol) in threads of the emulator.

Each of its `WORKER_CONCURRENCY` slots: pull `{ORCHESTRATOR_URL}/pool/{batch}/machines/{name}/pull`
with `Bearer $MACHINE_TOKEN` -> on a task, "work" for a duration drawn from the emulator's
`synthetic_task_s` while heartbeating every `heartbeat_interval_ms` (a `drop` answer ends
the task with no callback) -> store a small JPEG at `output_r2_key` (presigned `output_url`,
else boto3 with the machine's R2 keys) -> POST the contract's success callback to the task's
`callback_url` with `Bearer callback_token` -> pull again. `wait` sleeps `retry_after_ms`;
`exit`, 404 end the slot (0); 401 ends it with 1; 5xx / no answer are retried with backoff
(1 s doubling to 10 s) for up to 60 s, then 1. The machine exits once every slot has ended.

The orchestrator is spoken to directly (no emulator proxy hop: a 230-machine pool is one
process), so the pool and callback faults are applied here, as the injector decides them:
crash or hang mid-task, crash before the callback, late / delayed / duplicate callbacks.
Never touches machine states itself: it asks the supervisor (`PoolHooks.strike`, `.crash`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

from . import synthetic
from .durations import TaskDuration
from .faults import FaultInjector

log = logging.getLogger("arke_local.fly_emulator")
P = "[FlyEmulator]"
REQUEST_TIMEOUT_S = 30.0
PULL_GIVE_UP_S = 60.0
PULL_BACKOFF_MAX_S = 10.0
CALLBACK_ATTEMPTS = 5
CALLBACK_BACKOFF_S = 0.5
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}  # as worker/callback.py
R2_NAMES = ("R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_ENDPOINT_URL")


def _seconds(ms: object, default_ms: float) -> float:
    """A protocol's `..._ms` field in seconds; missing or malformed: the default."""
    if isinstance(ms, bool) or not isinstance(ms, int | float) or ms < 0:
        ms = default_ms
    return float(ms) / 1000


class Halted(synthetic.JobCancelled):
    """The machine was stopped, destroyed, crashed or frozen: send nothing more."""


@dataclass(frozen=True)
class PoolHooks:
    """What the supervisor lends one synthetic pool machine."""

    name: str  # machine id, for logs
    halt: threading.Event  # set when the machine must stop at once
    duration: TaskDuration
    faults: FaultInjector
    incr: Callable[[str], None]
    injected: Callable[[str], None]  # note a fault that hit this machine (kind)
    strike: Callable[[str], None]  # "crash_mid_task" | "hang" | "crash_before_callback"
    pause: Callable[[float], None]  # a held callback's wait (not cut short by the machine's end)


def is_pool(env: Mapping[str, str]) -> bool:
    return env.get("WORKER_MODE", "").strip().lower() == "pool"


class PoolRun:
    """One synthetic pool machine's run: `run()` returns its exit code or raises Halted."""

    def __init__(self, env: Mapping[str, str], hooks: PoolHooks):
        self.env = env
        self.hooks = hooks
        self.base = env.get("ORCHESTRATOR_URL", "").rstrip("/")
        # a standing machine (no BATCH_ID) pulls its machine-scoped route first and then
        # wherever the answers' `pull_url` says (docs/pool.md "Standing pool")
        batch, name = env.get("BATCH_ID", "").strip(), env.get("MACHINE_NAME", "")
        self.pull_url = (f"{self.base}/pool/{batch}/machines/{name}/pull" if batch
                         else f"{self.base}/pool/machines/{name}/pull")
        self.auth = {"Authorization": f"Bearer {env.get('MACHINE_TOKEN', '')}"}
        try:
            self.slots = max(1, int(env.get("WORKER_CONCURRENCY") or 1))
        except ValueError:
            self.slots = 1
        self.session = requests.Session()
        self.session.trust_env = False  # loopback: never an HTTP proxy from the environment
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=self.slots)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def run(self) -> int:
        if not self.base.startswith(("http://", "https://")):
            log.info("%s synthetic pool machine %s: no ORCHESTRATOR_URL, nothing to pull",
                     P, self.hooks.name)
            return 1
        try:
            if self.slots == 1:
                code = self._slot()
            else:
                codes: list[int] = []
                threads = [threading.Thread(target=lambda: codes.append(self._slot_quietly()),
                                            name=f"synthetic-{self.hooks.name}-{i}", daemon=True)
                           for i in range(self.slots)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                code = max(codes, default=1)
        finally:
            self.session.close()
        self._check()
        return code

    def _slot_quietly(self) -> int:
        try:
            return self._slot()
        except Halted:
            return 137

    # ---- the loop ----------------------------------------------------------------------

    def _slot(self) -> int:
        while True:
            answer = self._pull()
            if isinstance(answer, int):
                return answer
            action = answer.get("action")
            if action == "task" and isinstance(answer.get("task"), dict):
                code = self._work(answer["task"], answer.get("heartbeat_interval_ms", 10000))
                if code is not None:
                    return code
            elif action == "wait":
                self._sleep(_seconds(answer.get("retry_after_ms"), default_ms=1000))
            elif action == "exit":
                log.info("%s synthetic pool machine %s: told to exit (%s)", P, self.hooks.name,
                         answer.get("reason", "-"))
                return 0
            else:
                log.info("%s synthetic pool machine %s: unknown pull answer %r", P,
                         self.hooks.name, action)
                return 1

    def _pull(self) -> dict | int:
        """The pull's JSON answer, or an exit code when the slot must end."""
        give_up = time.monotonic() + PULL_GIVE_UP_S
        delay = 1.0
        while True:
            self._check()
            self.hooks.incr("pool_pulls")
            status, data = self._post(self.pull_url, {}, self.auth)
            if status == 200 and isinstance(data, dict):
                follow = data.get("pull_url")
                if isinstance(follow, str) and follow.startswith(self.base + "/"):
                    self.pull_url = follow
                return data
            if status in (401, 403):
                log.info("%s synthetic pool machine %s: pull refused (%d)", P, self.hooks.name, status)
                return 1
            if status == 404:
                return 0
            if 400 <= status < 500 and status not in RETRYABLE:
                return 1
            if time.monotonic() + delay > give_up:
                log.info("%s synthetic pool machine %s: orchestrator unreachable, giving up",
                         P, self.hooks.name)
                return 1
            self._sleep(delay)
            delay = min(delay * 2, PULL_BACKOFF_MAX_S)

    def _work(self, task: dict, interval_ms: object) -> int | None:
        """Play one task; None to pull again, an exit code to end the slot."""
        hooks = self.hooks
        hooks.incr("pool_tasks")
        got = time.monotonic()
        duration = hooks.duration.draw()
        fault = hooks.faults.task_fault()
        strike_at = got + hooks.faults.task_fault_after_s if fault != "none" else None
        interval = max(0.05, _seconds(interval_ms, default_ms=10000))
        end, next_beat = got + duration, got + interval
        while True:
            now = time.monotonic()
            if strike_at is not None and now >= strike_at:
                self._strike(fault)
            if now >= end:
                break
            if now >= next_beat:
                beat = self._heartbeat(task)
                if beat == "drop":
                    hooks.incr("pool_drops")
                    log.info("%s synthetic pool machine %s: task %s dropped", P, hooks.name,
                             task.get("task_id"))
                    return None
                if beat == "refused":
                    return 1
                next_beat = now + interval
                continue
            if hooks.halt.wait(min(end, next_beat, strike_at or end) - now):
                raise Halted
        return self._finish(task, duration, fault if strike_at is not None else "none")

    def _finish(self, task: dict, duration: float, fault: str) -> int | None:
        key = task.get("output_r2_key") or synthetic.output_key(task.get("input_r2_key", ""))
        body = synthetic.jpeg_bytes()
        where = {n: self.env[n] for n in R2_NAMES if n in self.env}
        where["R2_BUCKET"] = task.get("r2_bucket") or self.env.get("R2_BUCKET", "")
        where["OUTPUT_URL"] = task.get("output_url") or ""
        upload_started = time.monotonic()
        try:
            synthetic.store_output(where, key, body, self.session)
        except Exception as exc:  # noqa: BLE001 - any failure becomes the error callback
            self.hooks.incr("synthetic_upload_errors")
            log.info("%s synthetic pool machine %s: upload of %s failed: %s", P, self.hooks.name,
                     key, exc)
            self._check()
            self._callback(task, {"task_id": task.get("task_id"), "batch_id": task.get("batch_id"),
                                  "status": "error", "error": f"Failed to upload JPEG: {exc}",
                                  "error_code": "transfer_failed"})
            return None
        self.hooks.incr("synthetic_outputs")
        upload_ms = int((time.monotonic() - upload_started) * 1000)
        self._check()
        if fault != "none":
            self._strike(fault)  # the task ended before the fault's time: it strikes now
        total_ms = int(duration * 1000)
        self._callback(task, {
            "task_id": task.get("task_id"), "batch_id": task.get("batch_id"), "status": "success",
            "output_r2_key": key, "output_file_name": key.rsplit("/", 1)[-1],
            "output_file_size": len(body),
            "performance": {"total_time_ms": total_ms, "download_time_ms": 0,
                            "conversion_time_ms": max(0, total_ms - upload_ms),
                            "upload_time_ms": min(total_ms, upload_ms)},
        })
        return None

    # ---- faults and HTTP -----------------------------------------------------------------

    def _strike(self, fault: str) -> None:
        self.hooks.strike("crash_mid_task" if fault == "crash" else fault)
        raise Halted

    def _heartbeat(self, task: dict) -> str:
        """"continue", "drop" or "refused" (401); errors count as continue."""
        self._check()
        self.hooks.incr("pool_heartbeats")
        url = task.get("heartbeat_url") or (
            f"{self.base}/pool/{self.env.get('BATCH_ID', '')}/machines/"
            f"{self.env.get('MACHINE_NAME', '')}/heartbeat")
        status, data = self._post(url, {"task_id": task.get("task_id"),
                                        "attempt": task.get("attempt")}, self.auth)
        if status in (401, 403):
            return "refused"
        if status == 200 and isinstance(data, dict) and data.get("action") == "drop":
            return "drop"
        return "continue"

    def _callback(self, task: dict, body: dict) -> None:
        """Deliver the callback under the callback faults (as the proxy does for processes)."""
        hooks, faults = self.hooks, self.hooks.faults
        hooks.incr("callbacks_received")
        action = faults.callback_fault()
        if action == "crash":
            hooks.incr("crashes_before_callback")
            hooks.strike("crash_before_callback")
            raise Halted
        if action == "late":
            hooks.incr("late_callbacks")
            hooks.injected("late_callback")
            hooks.pause(faults.late_callback_delay_s)
        if faults.callback_delay_s:
            hooks.incr("callbacks_delayed")
            hooks.pause(faults.callback_delay_s)
        headers = {"Authorization": f"Bearer {task.get('callback_token', '')}"}
        url = task.get("callback_url", "")
        self._deliver(url, body, headers)
        if action == "duplicate":
            hooks.incr("duplicate_callbacks")
            hooks.injected("duplicate_callback")
            self._deliver(url, body, headers)

    def _deliver(self, url: str, body: dict, headers: dict) -> int:
        delay = CALLBACK_BACKOFF_S
        status = 0
        for attempt in range(1, CALLBACK_ATTEMPTS + 1):
            status, _ = self._post(url, body, headers)
            if status and status not in RETRYABLE:
                self.hooks.incr("callbacks_forwarded")
                return status
            self.hooks.incr("callback_forward_errors")
            if attempt < CALLBACK_ATTEMPTS:
                self._sleep(delay)
                delay *= 2
        log.info("%s synthetic pool machine %s: callback of %s not delivered (%s)", P,
                 self.hooks.name, body.get("task_id"), status or "no answer")
        return status

    def _post(self, url: str, body: dict, headers: dict) -> tuple[int, object]:
        """(status, decoded JSON or None); status 0 when nothing answered."""
        try:
            response = self.session.post(url, json=body, headers=headers, timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException:
            return 0, None
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, None

    def _sleep(self, seconds: float) -> None:
        if self.hooks.halt.wait(seconds):
            raise Halted

    def _check(self) -> None:
        if self.hooks.halt.is_set():
            raise Halted
