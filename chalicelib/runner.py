"""One pass over one batch, under its lease: time out, spawn, advance, deliver.

What a Durable Object alarm did in the seed, without its flaws. The pass decides which
step the batch is at; each step is its own module: `timeouts` (attempts past their
deadline), `spawner` (single mode: a machine per attempt, under the bucket, the gate and
the shared cap), `pool` (pool mode: silent machines, the pool's size, its creations),
`delivery` (the final callback), `shutdown` (every way into ERROR).
"""

from __future__ import annotations

import time

from . import pool_sizing, store, timeline
from .backoff import exponential_ms
from .clock import now_ms
from .delivery import deliver
from .logs import log
from .models import Batch
from .phases import Discovery, FileEntry, Phase
from .pool.creator import PoolCreator
from .pool.liveness import retire_silent
from .pool.tiers import TierPool
from .services import Services
from .shutdown import end_in_error, retry_destroys, stop_pool
from .spawner import Spawner, SpawnReport, destroy_unrecorded
from .states import BatchStatus, MachineMode
from .timeouts import time_out
from .transitions import phase_finished
from .views import task_view_for_phase


class BatchPass:
    def __init__(self, services: Services, batch: Batch, capacity: int, token_deadline: float,
                 pooled_batches: int = 1) -> None:
        self.services, self.settings, self.batch = services, services.settings, batch
        self.pooled = services.settings.machine_mode == MachineMode.POOL.value
        # single mode reads the larger bands only while tasks wait there (left by pool mode)
        larger = ((store.LARGE_BAND,) if self.pooled
                  else tuple(range(1, store.LARGE_BAND + 1)) if int(batch.tasks_large or 0) else ())
        self.spawner = Spawner(services, batch.batch_id, capacity, token_deadline, large_only=self.pooled,
                               larger_bands=larger)
        self.pool = PoolCreator(services, batch, capacity, token_deadline, pooled_batches)
        self.tiers = TierPool(services, batch, token_deadline, pooled_batches)
        self.tier_report = SpawnReport()

    @property
    def batch_id(self) -> str:
        return self.batch.batch_id

    @property
    def report(self) -> SpawnReport:
        if not self.pooled:
            return self.spawner.report
        # pool mode's machines of every tier, and single-mode machines for the largest tasks
        pool, tiers, large = self.pool.report, self.tier_report, self.spawner.report
        return SpawnReport(pool.spawned + tiers.spawned + large.spawned,
                           pool.capacity_used + tiers.capacity_used + large.capacity_used, large.unrecorded)

    def run(self) -> int | None:
        """Do the pass; return when the batch is next due (None once it has ended)."""
        if self.batch.status == BatchStatus.FINALIZING.value:
            return deliver(self.services, self.batch)
        phase = self.services.registry.get(self.batch.status)
        if self.too_many_failed():
            return None
        if phase_finished(int(self.batch.tasks_total), int(self.batch.tasks_completed), int(self.batch.tasks_failed)):
            return self.advance(phase)
        unrecorded = self.spawner.report.unrecorded  # single-mode machines (pool mode's: in the destroy queue)
        time_out(self.services, self.batch_id, phase, unrecorded)
        try:
            if self.pooled:
                retire_silent(self.services, self.batch_id)
                self.grow_pool(phase)
                if int(self.batch.tasks_large or 0) > 0:  # too large for a pool machine (pool/large.py)
                    self.spawner.spawn(phase)
                retry_destroys(self.services, self.batch_id)
            else:
                self.spawner.spawn(phase)
        finally:
            destroy_unrecorded(self.services, self.batch_id, unrecorded)
        if (self.pool.wants_more() or self.tiers.wants_more()) if self.pooled else self.spawner.report.out_of_tokens:
            return now_ms()  # creations go on at the bucket's pace in the next round
        return now_ms() + phase.alarm_delay_ms(self.settings)

    def grow_pool(self, phase: Phase) -> None:
        """Size and grow the pool, then record what was decided (pool_sizing.py)."""
        b, s = self.batch, self.settings
        seen = b.task_ms_seen or {"total": 0, "count": 0}
        total, count = int(b.task_ms_total or 0), int(b.task_ms_count or 0)
        # the recorded average is the prior until a pass has averaged a result: the first
        # window of real results must replace it, not move 30% of the way from it
        averaged = b.task_ms_avg is not None and int(seen["count"]) > 0
        avg = pool_sizing.moving_average_ms(float(b.task_ms_avg) if averaged else None,
                                            total - int(seen["total"]), count - int(seen["count"]),
                                            s.pool_prior_task_ms)
        tier_target = self.tiers.plan(s.max_pool_machines_per_batch - int(b.machines_live or 0))
        self.pool.tier_live, self.pool.tier_target = self.tiers.live, tier_target
        decision = self.pool.size(avg)
        store.record_pool_pass(self.batch_id, decision.target + tier_target, decision.reason, avg,
                               {"total": total, "count": count}, tier_machines=tier_target)
        self.tier_report = self.tiers.grow(phase, self.pool.capacity)  # first: only they take their tasks
        self.pool.grow(phase)  # both within the caps of the machine records' transactions
        now = now_ms()
        live = int(b.machines_live or 0) + self.pool.report.spawned + self.tier_report.spawned
        timeline.record_pool(self.batch_id, live, now)
        if live > int(b.machines_peak or 0):
            store.raise_machines_peak(self.batch_id, live)

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
        if nxt is None:  # machines still live (waiting, or silent) are not needed any more
            stop_pool(self.services, self.batch_id, f"{phase.name} ended")
        if store.advance_phase(self.settings, self.batch, nxt.name if nxt else None, total, now):
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
