"""Pool mode (`WORKER_MODE=pool`, docs/pool.md): the machine pulls tasks from the
orchestrator and converts them back to back until it is told there is no work left, then
exits 0 (Fly destroys it: auto_destroy).

`WORKER_CONCURRENCY` slots (fewer when the machine's memory does not hold that many
conversions, worker.settings.conversion_slots), each: pull -> task: worker.steps'
download -> convert (forked child) -> upload, heartbeating meanwhile (worker.heartbeat)
-> callback -> pull again; "wait" sleeps; "exit" ends the slot. Slots are threads: the
conversion runs in a forked child, so a slot only waits on it, and a crash or OOM kill
of one conversion is that task's error callback while the loop goes on. A heartbeat
"drop" kills the task's conversion and sends no callback.

Exit codes: 0 every slot was told "exit"; 1 the orchestrator did not answer for
~WORKER_PULL_GIVE_UP_S; 2 it refused the machine (401, 404) or the environment is
unusable. The machine token, callback tokens and signed URLs are never logged.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections import Counter

from worker.exceptions import (
    CallbackDeliveryError,
    Cancelled,
    ConfigError,
    PoolRejectedError,
    PoolUnavailableError,
)
from worker.heartbeat import Heartbeat
from worker.log import TaskLog
from worker.pull import PoolClient, PullAnswer, pull_with_retry
from worker.settings import (
    ContractSettings,
    Limits,
    PoolSettings,
    conversion_slots,
    machine_memory_bytes,
    memory_limit_bytes,
    share_memory,
)
from worker.steps import error_body, ms, output_key_of, run_steps, secrets_of, send_callback

EXIT_DONE, EXIT_UNREACHABLE, EXIT_REFUSED = 0, 1, 2


def run_pool_from_env(env=None) -> int:
    env = os.environ if env is None else env
    try:
        settings = PoolSettings.from_env(env)
        slots = conversion_slots(settings.concurrency, machine_memory_bytes())
        share_memory(slots)  # before Limits: the pixel limit is one slot's
        limits = Limits.from_env(env)
    except ConfigError as exc:
        TaskLog(env.get("BATCH_ID", "-")).error(f"cannot start the pool loop: {exc}")
        return EXIT_REFUSED
    return Pool(settings, limits, slots).run()


def assignment_problem(settings: PoolSettings, task: dict) -> str | None:
    """Why this assignment cannot be worked on this machine, if it cannot."""
    if task.get("input_url") and task.get("output_url"):
        return None
    if not settings.has_r2_keys:
        return "Invalid assignment: no presigned URLs and no R2 keys on this machine"
    if not task.get("input_r2_key"):
        return "Invalid assignment: no input_r2_key"
    return None


class Pool:
    """The slots of one machine and what they share: the client, the limits and how the
    process will exit."""

    def __init__(self, settings: PoolSettings, limits: Limits, slots: int):
        self.settings = settings
        self.limits = limits
        self.slots = slots
        self.client = PoolClient(settings)
        self.exit_code = EXIT_DONE
        self.stopping = threading.Event()  # set on a refusal or giving up: stop pulling
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._r2: dict[str, object] = {}  # bucket -> R2 client, shared by the slots

    def log(self, slot: int | str, task_id: str = "-", secrets: tuple[str, ...] = ()) -> TaskLog:
        s = self.settings
        return TaskLog(s.batch_id, task_id,
                       (s.machine_token, s.r2_access_key_id, s.r2_secret_access_key, *secrets),
                       tags=f"machine={s.machine_name} slot={slot}")  # fmt: skip

    def run(self) -> int:
        log = self.log("-")
        asked = self.settings.concurrency
        note = "" if asked == self.slots else f" (WORKER_CONCURRENCY={asked}: memory allows {self.slots})"
        log.info(f"pool start: {self.slots} slot(s){note}, {memory_limit_bytes() >> 20} MB and "
                 f"{self.limits.max_pixels} pixels per conversion")  # fmt: skip
        threads = [threading.Thread(target=self._slot, args=(n,), name=f"slot-{n}")
                   for n in range(1, self.slots + 1)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "no task"
        log.info(f"pool done: {counts}; exit {self.exit_code}")
        return self.exit_code

    def _stop(self, code: int) -> None:
        with self._lock:
            if self.exit_code == EXIT_DONE:
                self.exit_code = code
        self.stopping.set()

    def _store(self, settings: ContractSettings):  # noqa: ANN202 - R2 or None
        """The machine's R2 client for this bucket (a boto3 client is thread-safe and
        costs ~60 ms to make), or None: presigned URLs, worker.steps makes the transfer."""
        if settings.input_url and settings.output_url:
            return None
        from worker.r2 import R2

        with self._lock:
            if settings.r2_bucket not in self._r2:
                try:
                    self._r2[settings.r2_bucket] = R2(settings, settings.part_size)
                except Exception:  # worker.steps makes its own and reports the failure
                    return None
            return self._r2[settings.r2_bucket]

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.counts[outcome] += 1

    def _slot(self, slot: int) -> None:
        log = self.log(slot)
        while not self.stopping.is_set():
            answer = self._pull(slot, log)
            if answer is None or answer.action == "exit":
                return
            if answer.action == "wait":
                log.info(f"pull: wait {answer.retry_after_ms} ms")
                self.stopping.wait(answer.retry_after_ms / 1000)
                continue
            try:
                self._work(slot, answer)
            except Exception as exc:  # a bug of ours: this task is lost, the machine is not
                log.error(f"internal error in the slot: {type(exc).__name__}: {exc}")
                for line in traceback.format_exc().splitlines():
                    log.error(line)
                self._count("lost")

    def _pull(self, slot: int, log: TaskLog) -> PullAnswer | None:
        """The next answer, or None when the machine must stop (exit code recorded)."""

        def on_retry(reason: str, delay: float) -> None:
            log.info(f"pull failed ({reason}); retrying in {delay:g} s")

        try:
            answer = pull_with_retry(self.client, on_retry)
        except PoolRejectedError as exc:
            log.error(f"pull refused ({exc}): the orchestrator does not know this machine "
                      "or its token; exiting")  # fmt: skip
            self._stop(EXIT_REFUSED)
            return None
        except PoolUnavailableError as exc:
            log.error(f"orchestrator unreachable for {self.settings.pull_give_up_s:g} s "
                      f"(last: {exc}); exiting")  # fmt: skip
            self._stop(EXIT_UNREACHABLE)
            return None
        if answer.action == "exit":
            log.info(f"pull: exit ({answer.reason or 'no reason given'}): slot ends")
        return answer

    def _work(self, slot: int, answer: PullAnswer) -> None:
        """One assignment: steps with a heartbeat, then the callback unless dropped."""
        task = answer.task
        settings = self.settings.task_settings(task)
        log = self.log(slot, settings.task_id, secrets_of(settings))
        started = time.monotonic()
        log.info(f"pull: task attempt {task.get('attempt')}: {settings.input_r2_key} -> "
                 f"{output_key_of(settings)}")  # fmt: skip
        with Heartbeat(self.client, task, answer.heartbeat_interval_ms, log) as beat:
            try:
                problem = assignment_problem(self.settings, task)
                if problem:
                    log.error(f"failed: {problem}")
                    body = error_body(settings, problem, ConfigError.code)
                else:
                    store = self._store(settings)
                    body = run_steps(settings, self.limits, log, started, beat.dropped, store)
                if beat.dropped.is_set():
                    raise Cancelled("dropped after the steps")
                send_callback(settings, body, log)
            except Cancelled as exc:
                log.info(f"dropped ({exc}): no callback")
                self._count("dropped")
            except CallbackDeliveryError as exc:
                log.error(f"no callback: {exc}")
                self._count("undelivered")
            else:
                log.info(f"done: {body['status']} in {ms(time.monotonic() - started)} ms")
                self._count(body["status"])
        if beat.rejected:
            self._stop(EXIT_REFUSED)
