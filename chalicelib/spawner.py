"""Creating a batch's machines within one pass: the token bucket, the 429 gate and the
shared in-flight cap, with each creation's outcome carried into the task's attempt.

A claim (pending -> processing, the next attempt) comes before the creation, so two passes
never create a machine for one attempt. What may have been created without being recorded
(the answer timed out, or was a 5xx) is found again by its name and destroyed at the end.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from . import machine_size, metrics, r2, signing, store
from .backoff import jittered_ms
from .clock import now_ms
from .errors import FlyError, FlyRateLimitedError
from .logs import log
from .models import Task
from .phases import MachineContext, Phase
from .pool.large import retry_band
from .services import Services
from .settings import SettingsError
from .shutdown import destroy_machines
from .tiff_header import TiffHeaderError
from .transitions import after_failure, attempts_since_retry
from .views import task_view_for_phase


@dataclass
class SpawnReport:
    """What the tick needs back: machines started, in-flight slots used."""

    spawned: int = 0
    capacity_used: int = 0
    unrecorded: list[str] = field(default_factory=list)  # names of machines that may exist
    out_of_tokens: int = 0  # ready tasks left for want of a token before the slice ended


class Spawner:
    """A pass's single-mode machines: one per ready task (in pool mode, per ready task too
    large for a pool machine: `large_only`, pool/large.py)."""

    def __init__(self, services: Services, batch_id: str, capacity: int, token_deadline: float,
                 large_only: bool = False, larger_bands: tuple[int, ...] = (store.LARGE_BAND,)) -> None:
        self.services, self.settings, self.batch_id = services, services.settings, batch_id
        self.capacity = capacity
        self.large_only = large_only
        self.larger_bands = larger_bands  # bands above 0 it reads too (store/task_reads.py)
        self.token_deadline = token_deadline
        self.report = SpawnReport()
        self.cap_full = False
        self.r2_unreachable = False  # a header read got no answer: the pass sizes by default

    def spawn(self, phase: Phase) -> None:
        # A machine that could never call back is not worth starting: fail the pass instead
        # (it backs off, then ends in ERROR with this reason).
        if not self.settings.orchestrator_url:
            raise SettingsError("ORCHESTRATOR_URL is not set; machines could not call back")
        if not self.settings.accept_unsigned_callbacks and not self.services.secrets().get("CALLBACK_SIGNING_KEY"):
            raise SettingsError("CALLBACK_SIGNING_KEY is not set; machines' callbacks would be refused")
        limit = min(phase.batch_size(self.settings), self.capacity)
        tasks = [] if self.large_only else store.ready_tasks(self.batch_id, now_ms(), limit)
        # pool mode: the large band; single mode: every larger band, where tasks waited for a
        # larger machine when the mode was pool (single mode sizes each machine itself)
        for band in self.larger_bands:
            if len(tasks) < limit:
                tasks += store.ready_tasks(self.batch_id, now_ms(), limit - len(tasks), band=band)
        if not tasks:
            return
        workers = min(self.settings.spawn_concurrency, len(tasks))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spawn") as pool:
            results = list(pool.map(lambda t: self.spawn_one(phase, t), tasks))
        self.report.capacity_used = sum(1 for r in results if r in ("spawned", "failed"))
        self.report.out_of_tokens = sum(1 for r in results if r == "no_token") if not self.cap_full else 0
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
            store.unclaim_task(self.settings, self.batch_id, task.task_id, attempt, retry_at, now_ms(),
                               band=retry_band(self.settings, None, None))
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
        band = retry_band(self.settings, None, None)
        store.end_attempt(self.settings, self.batch_id, task.task_id, attempt,
                          store.AttemptEnd(move, phase.name, error=error, retry_at=retry_at, band=band), now)
        if exc.status is None or exc.status >= 500:
            # No answer, or a server error: the machine may have been created all the same.
            self.report.unrecorded.append(phase.machine_name(task.task_id, attempt))
        log(phase.log_prefix, "spawn_failed", batch_id=self.batch_id, task_id=task.task_id,
            attempt=attempt, status=exc.status, move=move.value, error=str(exc))
        return "failed"



def destroy_unrecorded(services: Services, batch_id: str, names: list[str]) -> None:
    """Machines whose creation was never recorded, found again by their names."""
    if names:
        destroyed = destroy_machines(services, [], names)
        log("[Batch]", "unrecorded_machines", batch_id=batch_id, names=len(names), destroyed=destroyed)
