"""One pass over one batch, under its lease: time out, spawn, advance, deliver.

What a Durable Object alarm did in the seed, without its flaws: timeouts close tasks whose
machine went silent, spawns respect the shared token bucket, the 429 gate and the
in-flight cap, failed creations count toward attempts, and delivery of the final callback
is retried with backoff before the batch is declared ERROR.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from . import ingest, machine_size, metrics, r2, signing, store
from .backoff import exponential_ms, jittered_ms
from .clock import now_ms
from .errors import DeliveryError, FlyError, FlyRateLimitedError
from .logs import log
from .models import Batch, Task
from .phases import Discovery, FileEntry, MachineContext, Phase
from .phases.worker_errors import OUT_OF_MEMORY
from .services import Services
from .settings import SettingsError
from .shutdown import destroy_machines, end_in_error
from .states import BatchStatus
from .tiff_header import TiffHeaderError
from .transitions import Outcome, after_failure, attempts_since_retry, phase_finished
from .views import task_view_for_phase

TIMEOUT_PAGE = 100
OOM_CHECKS_PER_PASS = 10  # Get Machine requests a pass may make (Fly: 5/s, bursts of 10)


@dataclass
class PassReport:
    """What the tick needs back from a pass: machines started, in-flight slots used."""

    spawned: int = 0
    capacity_used: int = 0


class BatchPass:
    def __init__(self, services: Services, batch: Batch, capacity: int, token_deadline: float) -> None:
        self.services, self.settings, self.batch = services, services.settings, batch
        self.capacity = capacity
        self.token_deadline = token_deadline
        self.report = PassReport()
        self.cap_full = False
        self.unrecorded: list[str] = []  # names of machines that may exist unrecorded
        self.r2_unreachable = False  # a header read got no answer: the pass sizes by default

    @property
    def batch_id(self) -> str:
        return self.batch.batch_id

    def run(self) -> int | None:
        """Do the pass; return when the batch is next due (None once it has ended)."""
        if self.batch.status == BatchStatus.FINALIZING.value:
            return self.deliver()
        phase = self.services.registry.get(self.batch.status)
        if self.too_many_failed():
            return None
        if phase_finished(int(self.batch.tasks_total), int(self.batch.tasks_completed), int(self.batch.tasks_failed)):
            return self.advance(phase)
        self.time_out(phase)
        try:
            self.spawn(phase)
        finally:
            self.destroy_unrecorded()
        return now_ms() + phase.alarm_delay_ms(self.settings)

    def too_many_failed(self) -> bool:
        """MAX_FAILED_FRACTION (Step Functions' tolerated failure percentage): past it the
        batch stops spawning and ends in ERROR, saying how many failed."""
        total, failed = int(self.batch.tasks_total or 0), int(self.batch.tasks_failed or 0)
        limit = self.settings.max_failed_fraction
        if limit >= 1.0 or total == 0 or failed <= limit * total:
            return False
        error = (f"{failed} of {total} tasks failed in {self.batch.status}, more than "
                 f"MAX_FAILED_FRACTION={limit:g} allows")
        end_in_error(self.services, self.batch_id, error, "too_many_failed", expect_status=self.batch.status)
        return True

    # -- timeouts ----------------------------------------------------------------------

    def time_out(self, phase: Phase) -> None:
        """Retry or fail attempts past their deadline, and destroy their machines: by id,
        or by name when the creation was never recorded (its pass died)."""
        now = now_ms()
        silent: list[str] = []
        oom_checks = OOM_CHECKS_PER_PASS
        for task in store.timed_out_tasks(self.batch_id, now, TIMEOUT_PAGE):
            attempt = int(task.attempts)
            since = attempts_since_retry(attempt, int(task.attempts_base or 0))
            move = after_failure(since, self.settings.max_retry_attempts)
            error = (f"Timed out after {phase.task_timeout_ms(self.settings)} ms "
                     f"(attempt {attempt}, machine {task.machine_id or 'none'})")
            outcome = None
            if task.machine_id and oom_checks > 0:
                oom_checks -= 1
                killed = self.services.fly().killed_for_memory(task.machine_id)
                oom_checks = 0 if killed is None else oom_checks  # Fly did not answer: stop asking
                if killed:
                    error += ": the machine was killed for memory (OOM)"
                    outcome = Outcome(ok=False, error=error, error_code=OUT_OF_MEMORY)
            retry_at = now + jittered_ms(since, self.settings.alarm_delay_error_retry_ms)
            end = store.AttemptEnd(move, phase.name, outcome=outcome, error=error, retry_at=retry_at)
            if store.end_attempt(self.settings, self.batch_id, task.task_id, attempt, end, now):
                log(phase.log_prefix, "task_timed_out", batch_id=self.batch_id, task_id=task.task_id,
                    attempt=attempt, machine_id=task.machine_id, move=move.value)
                if task.machine_id:
                    silent.append(task.machine_id)
                elif task.machine_name:
                    self.unrecorded.append(task.machine_name)
        if silent:
            destroy_machines(self.services, silent)

    # -- spawning ----------------------------------------------------------------------

    def spawn(self, phase: Phase) -> None:
        # A machine that could never call back is not worth starting: fail the pass instead
        # (it backs off, then ends in ERROR with this reason).
        if not self.settings.orchestrator_url:
            raise SettingsError("ORCHESTRATOR_URL is not set; machines could not call back")
        if not self.settings.accept_unsigned_callbacks and not self.services.secrets().get("CALLBACK_SIGNING_KEY"):
            raise SettingsError("CALLBACK_SIGNING_KEY is not set; machines' callbacks would be refused")
        limit = min(phase.batch_size(self.settings), self.capacity)
        tasks = store.ready_tasks(self.batch_id, now_ms(), limit)
        if not tasks:
            return
        workers = min(self.settings.spawn_concurrency, len(tasks))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spawn") as pool:
            results = list(pool.map(lambda t: self.spawn_one(phase, t), tasks))
        self.report.capacity_used = sum(1 for r in results if r in ("spawned", "failed"))
        if self.cap_full:
            log(phase.log_prefix, "in_flight_cap_reached", batch_id=self.batch_id,
                cap=self.settings.max_machines_in_flight)

    def machine_memory_mb(self, phase: Phase, task: Task) -> int:
        """The memory of the task's next machine: what an out-of-memory end left for it,
        else what its earlier attempt had (the header is read once per task), else what its
        image needs (one or two ranged GETs of its header), else the default."""
        settings = self.settings
        known = task.next_memory_mb if task.next_memory_mb is not None else task.memory_mb
        remembered = machine_size.attempt_memory_mb(int(known) if known is not None else None, settings)
        if remembered is not None:
            return remembered
        if not phase.sizes_machine_from_tiff or self.r2_unreachable:
            return settings.machine_memory_mb
        header = None
        try:
            header = r2.read_tiff_header(self.services.r2(), settings.r2_bucket, task.input_r2_key)
        except BotoCoreError as exc:
            # No answer (connection, timeout): the rest of the pass does not wait on R2 again.
            self.r2_unreachable = True
            log(phase.log_prefix, "tiff_header_unreadable", batch_id=self.batch_id, task_id=task.task_id,
                error=str(exc)[:300], rest_of_pass="default memory")
        except (TiffHeaderError, ClientError) as exc:
            # The worker will read the same bytes and say precisely what is wrong.
            log(phase.log_prefix, "tiff_header_unreadable", batch_id=self.batch_id, task_id=task.task_id,
                error=str(exc)[:300])
        return machine_size.memory_for_image(header, settings)

    def machine_context(self, task_id: str, attempt: int, memory_mb: int) -> MachineContext:
        settings, services = self.settings, self.services
        secrets = services.secrets()
        key = secrets.get("CALLBACK_SIGNING_KEY")
        return MachineContext(
            settings=settings,
            secrets=secrets,
            callback_url=(f"{settings.orchestrator_url}/callback/{self.batch_id}/{task_id}?attempt={attempt}"
                          f"&spawned={now_ms()}"),  # spawn time, for the callback latency metric
            callback_token=signing.callback_token(key, self.batch_id, task_id, attempt) if key else None,
            presign=None if settings.machine_r2_credentials else services.presign(),
            memory_mb=memory_mb,
        )

    def spawn_one(self, phase: Phase, task: Task) -> str:
        services = self.services
        if self.cap_full or not services.bucket.take(self.token_deadline, services.gate):
            return "no_token"
        memory_mb = self.machine_memory_mb(phase, task)
        now = now_ms()
        deadline = now + phase.task_timeout_ms(self.settings)
        name = phase.machine_name(task.task_id, int(task.attempts) + 1)
        try:
            attempt = store.claim_task(self.settings, task, phase.name, name, deadline, now, memory_mb)
        except store.InFlightCapReached:
            self.cap_full = True
            services.bucket.give_back()
            return "cap_full"
        if attempt is None:
            return "lost"
        request = phase.machine_request(self.batch_id, task_view_for_phase(task), attempt,
                                        self.machine_context(task.task_id, attempt, memory_mb))
        try:
            machine = services.fly().create_machine(request)
        except FlyRateLimitedError as exc:
            services.gate.close_for(exc.retry_after_s)
            retry_at = now_ms() + int(exc.retry_after_s * 1000)
            store.unclaim_task(self.settings, self.batch_id, task.task_id, attempt, retry_at, now_ms())
            log(phase.log_prefix, "spawn_rate_limited", batch_id=self.batch_id, task_id=task.task_id,
                retry_after_s=exc.retry_after_s)
            metrics.emit(self.settings.stage, phase.name, self.batch_id, FlyRateLimited=1)
            return "rate_limited"
        except FlyError as exc:
            return self._spawn_failed(phase, task, attempt, exc)
        if not store.record_machine(self.batch_id, task.task_id, attempt, machine["id"]):
            # The task moved on while we were creating it: a reset closed it (don't leave the
            # machine running), or the machine was quick and its callback already came (then
            # destroying it is a no-op). Either way it counts as started.
            services.fly().destroy_machine(machine["id"])
            self.report.spawned += 1
            return "spawned"
        self.report.spawned += 1
        log(phase.log_prefix, "machine_started", batch_id=self.batch_id, task_id=task.task_id,
            attempt=attempt, machine_id=machine["id"], name=request["name"], memory_mb=memory_mb)
        return "spawned"

    def _spawn_failed(self, phase: Phase, task: Task, attempt: int, exc: FlyError) -> str:
        now = now_ms()
        since = attempts_since_retry(attempt, int(task.attempts_base or 0))
        move = after_failure(since, self.settings.max_retry_attempts)
        error = f"Machine creation failed: {exc}"
        retry_at = now + jittered_ms(since, self.settings.alarm_delay_error_retry_ms)
        store.end_attempt(self.settings, self.batch_id, task.task_id, attempt,
                          store.AttemptEnd(move, phase.name, error=error, retry_at=retry_at), now)
        if exc.status is None or exc.status >= 500:
            # No answer, or a server error: the machine may have been created all the same.
            self.unrecorded.append(phase.machine_name(task.task_id, attempt))
        log(phase.log_prefix, "spawn_failed", batch_id=self.batch_id, task_id=task.task_id,
            attempt=attempt, status=exc.status, move=move.value, error=str(exc))
        return "failed"

    def destroy_unrecorded(self) -> None:
        """Machines whose creation was never recorded, found again by their names."""
        if self.unrecorded:
            destroyed = destroy_machines(self.services, [], self.unrecorded)
            log("[Batch]", "unrecorded_machines", batch_id=self.batch_id, names=len(self.unrecorded),
                destroyed=destroyed)
            self.unrecorded = []

    # -- phase end ---------------------------------------------------------------------

    def advance(self, phase: Phase) -> int | None:
        nxt = self.services.registry.next_after(phase.name)
        now = now_ms()
        total = 0
        if nxt is not None:
            specs = nxt.discover(Discovery(self.batch_id, self._file_entries(), self._phase_tasks(phase)))
            store.write_tasks(store.new_task(self.batch_id, s.task_id, nxt.name, s.input_r2_key,
                                             s.file_position, s.data, now) for s in specs)
            total = len(specs)
        if store.advance_phase(self.batch, nxt.name if nxt else None, total, now):
            log("[Batch]", "phase_ended", batch_id=self.batch_id, phase=phase.name,
                completed=self.batch.tasks_completed, failed=self.batch.tasks_failed,
                next=nxt.name if nxt else BatchStatus.FINALIZING.value, next_tasks=total)
        return now

    def _file_entries(self):  # noqa: ANN202 - a lazy generator of FileEntry
        for r in store.iter_files(self.batch_id):
            yield FileEntry(int(r.position), r.directory_path, r.processing_config, r.info)

    def _phase_tasks(self, phase: Phase):  # noqa: ANN202 - a lazy generator of TaskView
        for task in store.iter_tasks(self.batch_id):
            if task.phase == phase.name:
                yield task_view_for_phase(task)

    # -- final delivery ----------------------------------------------------------------

    def deliver(self) -> int | None:
        settings, now = self.settings, now_ms()
        attempts = int(self.batch.delivery_attempts or 0) + 1
        try:
            files = ingest.build_files(self.batch_id, self.services.registry)
            ingest.deliver(settings, self.services.http, self.batch_id, files,
                           ingest.idempotency_key(self.batch))
        except DeliveryError as exc:
            return self._delivery_failed(attempts, str(exc), exc.retryable)
        store.delivery_succeeded(self.batch_id, now_ms())
        log("[Batch]", "batch_done", batch_id=self.batch_id, files=len(files), delivery_attempts=attempts,
            seconds=round((now - int(self.batch.started_at)) / 1000, 3))
        metrics.emit(settings.stage, self.batch.phase, self.batch_id, DeliveryAttempts=attempts,
                     SuccessRate=metrics.percent(self.batch.tasks_completed, self.batch.tasks_total),
                     BatchSeconds=round((now - int(self.batch.started_at)) / 1000, 3))
        return None

    def _delivery_failed(self, attempts: int, error: str, retryable: bool = True) -> int | None:
        now = now_ms()
        log("[Batch]", "delivery_failed", batch_id=self.batch_id, attempt=attempts, error=error)
        metrics.emit(self.settings.stage, self.batch.phase, self.batch_id, DeliveryFailed=1, DeliveryAttempts=attempts)
        if not retryable or attempts >= self.settings.max_retry_attempts:
            store.delivery_failed(self.batch_id, error, now, now)
            end_in_error(self.services, self.batch_id, f"Final callback failed after {attempts} attempts: {error}",
                         "delivery_exhausted")
            return None
        next_due = now + exponential_ms(attempts, self.settings.alarm_delay_error_retry_ms)
        store.delivery_failed(self.batch_id, error, next_due, now)
        return next_due


def pass_error_delay_ms(services: Services, failures: int) -> int:
    """The seed's batch-error backoff: min(ALARM_DELAY_ERROR_RETRY, 1000 * 2^n)."""
    return exponential_ms(failures, services.settings.alarm_delay_error_retry_ms)


def monotonic_deadline(seconds: float) -> float:
    return time.monotonic() + max(0.0, seconds)
