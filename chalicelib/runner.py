"""One pass over one batch, under its lease: time out, spawn, advance, deliver.

What a Durable Object alarm did in the seed, without its flaws. The pass decides which
step the batch is at; each step is its own module: `timeouts` (attempts past their
deadline), `spawner` (machine creation under the bucket, the gate and the shared cap),
`delivery` (the final callback), `shutdown` (every way into ERROR).
"""

from __future__ import annotations

import time

from . import store
from .backoff import exponential_ms
from .clock import now_ms
from .delivery import deliver
from .logs import log
from .models import Batch
from .phases import Discovery, FileEntry, Phase
from .services import Services
from .shutdown import end_in_error
from .spawner import Spawner, SpawnReport, destroy_unrecorded
from .states import BatchStatus
from .timeouts import time_out
from .transitions import phase_finished
from .views import task_view_for_phase


class BatchPass:
    def __init__(self, services: Services, batch: Batch, capacity: int, token_deadline: float) -> None:
        self.services, self.settings, self.batch = services, services.settings, batch
        self.spawner = Spawner(services, batch.batch_id, capacity, token_deadline)

    @property
    def batch_id(self) -> str:
        return self.batch.batch_id

    @property
    def report(self) -> SpawnReport:
        return self.spawner.report

    def run(self) -> int | None:
        """Do the pass; return when the batch is next due (None once it has ended)."""
        if self.batch.status == BatchStatus.FINALIZING.value:
            return deliver(self.services, self.batch)
        phase = self.services.registry.get(self.batch.status)
        if self.too_many_failed():
            return None
        if phase_finished(int(self.batch.tasks_total), int(self.batch.tasks_completed), int(self.batch.tasks_failed)):
            return self.advance(phase)
        unrecorded = self.report.unrecorded
        time_out(self.services, self.batch_id, phase, unrecorded)
        try:
            self.spawner.spawn(phase)
        finally:
            destroy_unrecorded(self.services, self.batch_id, unrecorded)
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

    def advance(self, phase: Phase) -> int | None:
        nxt = self.services.registry.next_after(phase.name)
        now = now_ms()
        total = 0
        if nxt is not None:
            specs = nxt.discover(Discovery(self.batch_id, self._file_entries(), self._phase_tasks(phase)))
            store.write_tasks(store.new_task(self.batch_id, s.task_id, nxt.name, s.input_r2_key,
                                             s.file_position, s.data, now, output_key=s.output_r2_key)
                              for s in specs)
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


def pass_error_delay_ms(services: Services, failures: int) -> int:
    """The seed's batch-error backoff: min(ALARM_DELAY_ERROR_RETRY, 1000 * 2^n)."""
    return exponential_ms(failures, services.settings.alarm_delay_error_retry_ms)


def monotonic_deadline(seconds: float) -> float:
    return time.monotonic() + max(0.0, seconds)
