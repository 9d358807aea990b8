"""The batch item: created and claimed by intake, leased by passes, ended in DONE or ERROR.

Its per-task counters live in its counts items (store/counts.py): the reads here that a
caller decides on (`get_batch`, `acquire_lease`) sum them onto the Batch, and entering a
phase zeroes them in the same transaction as the batch's own move.
"""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError, UpdateError

from ..models import ACTIVE, IN_FLIGHT_KEY, LISTED, SWEEPING, Batch, InFlight
from ..settings import Settings
from ..states import BatchStatus
from . import counts
from .dynamo import lost_race, transact


def _ended(sweep_at: int) -> list[Any]:
    """The index actions of a batch's end: out of the passes' partition, into the sweeps',
    due at `sweep_at` (SWEEP_DELAY_MS after the end: the live-index is eventually consistent,
    so a machine recorded a moment before the end may not have been listed by the end's own
    stop; shutdown.sweep_ended looks once more)."""
    return [Batch.active.set(SWEEPING), Batch.due_at.set(sweep_at)]


def _update(batch_id: str, actions: list[Any], condition: Any) -> Batch | None:
    """One conditional update; the batch as it now is, or None if the condition failed."""
    batch = Batch(batch_id)
    try:
        batch.update(actions=actions, condition=condition)
    except UpdateError as exc:
        if lost_race(exc):
            return None
        raise
    return batch


def get_batch(batch_id: str, with_counts: bool = True) -> Batch | None:
    """The batch, its counters summed from its counts items (one more request); without
    them (`with_counts=False`) for a caller that reads no counter."""
    try:
        batch = Batch.get(batch_id, consistent_read=True)
    except DoesNotExist:
        return None
    return counts.with_counts([batch])[0] if with_counts else batch


def create_batch(batch_id: str, source: dict[str, Any], now: int, owner: str, lease_ms: int,
                 replace: Batch | None = None) -> bool:
    """A new batch in INTAKE, claimed by `owner`. With `replace` (a batch in ERROR), over
    that one only: the next generation, whose intake first removes the old items."""
    batch = Batch(batch_id, status=BatchStatus.INTAKE.value, started_at=now, updated_at=now,
                  source=source, intake_owner=owner, intake_until=now + lease_ms, listed=LISTED)
    if replace is None:
        condition = Batch.batch_id.does_not_exist()
    else:
        batch.generation = int(replace.generation or 1) + 1
        batch.intake_clean = 1
        condition = (Batch.status == BatchStatus.ERROR.value) & (Batch.updated_at == replace.updated_at)
    try:
        batch.save(condition=condition)
    except PutError as exc:
        if lost_race(exc):
            return False
        raise
    return True


def claim_intake(batch_id: str, owner: str, now: int, lease_ms: int) -> Batch | None:
    """Take (or keep) the intake of a batch in INTAKE: free, expired, or already ours."""
    free = (Batch.intake_owner.does_not_exist() | (Batch.intake_until < now)
            | (Batch.intake_owner == owner))
    return _update(batch_id, [Batch.intake_owner.set(owner), Batch.intake_until.set(now + lease_ms)],
                   (Batch.status == BatchStatus.INTAKE.value) & free)


def intake_fence(owner: str) -> Any:
    """The condition every intake write carries: the batch is still in INTAKE and ours."""
    return (Batch.status == BatchStatus.INTAKE.value) & (Batch.intake_owner == owner)


def activate_batch(settings: Settings, batch_id: str, owner: str, phase: str | None, total: int, now: int) -> bool:
    """INTAKE -> the first phase (or FINALIZING when there is nothing to convert), its
    counts from 0 (an earlier run's are left behind by a restart over ERROR)."""
    status = phase or BatchStatus.FINALIZING.value

    def build(tx: Any) -> None:
        tx.update(Batch(batch_id), actions=[
            Batch.status.set(status), Batch.phase.set(phase or status),
            Batch.tasks_total.set(total), Batch.tasks_completed.set(0),
            Batch.tasks_failed.set(0), Batch.tasks_in_flight.set(0),
            Batch.active.set(ACTIVE), Batch.due_at.set(now), Batch.updated_at.set(now),
            Batch.intake_owner.remove(), Batch.intake_until.remove(), Batch.intake_clean.remove(),
        ], condition=intake_fence(owner))
        counts.reset_for_run(tx, batch_id)

    return transact(settings, build) is None


def fail_batch(settings: Settings, batch_id: str, error: str, now: int, sweep_at: int,
               expect_status: str | None = None, intake_owner: str | None = None) -> bool:
    """-> ERROR with `error`; stops all further passes (its index entry moves to the sweeps'
    partition) and, in the same transaction, every claim and callback from counting
    (store/counts.py). Its open tasks are closed by the caller (shutdown.py), never left behind."""
    condition = Batch.batch_id.exists() & (Batch.status != BatchStatus.DONE.value)
    if expect_status:
        condition &= Batch.status == expect_status
    if intake_owner:
        condition &= Batch.intake_owner == intake_owner
    actions = [Batch.status.set(BatchStatus.ERROR.value), Batch.error.set(error), *_ended(sweep_at),
               Batch.updated_at.set(now), Batch.completed_at.set(now), Batch.intake_owner.remove(),
               Batch.intake_until.remove()]

    def build(tx: Any) -> None:
        tx.update(Batch(batch_id), actions=actions, condition=condition)
        counts.close(tx, batch_id, now)

    return transact(settings, build) is None


def list_active_batches(due_before: int | None = None) -> list[Batch]:
    """Batches with work (sparse index), optionally only those due by `due_before`."""
    condition = Batch.due_at <= due_before if due_before is not None else None
    return list(Batch.active_index.query(ACTIVE, range_key_condition=condition))


def list_due_sweeps(now: int) -> list[Batch]:
    """Ended batches whose sweep is due (the index's sweep partition)."""
    return list(Batch.active_index.query(SWEEPING, range_key_condition=Batch.due_at <= now))


def end_sweep(batch_id: str, owner: str, due_at: int | None) -> None:
    """A sweep's end: give the lease back and say when the next sweep is due, or (None)
    leave the index. A batch reopened meanwhile (admin retry) keeps its place in the passes'
    partition: only the lease is given back."""
    actions: list[Any] = [Batch.lease_owner.remove(), Batch.lease_until.remove()]
    actions += [Batch.due_at.set(due_at)] if due_at is not None else [Batch.active.remove(), Batch.due_at.remove()]
    if _update(batch_id, actions, (Batch.lease_owner == owner) & (Batch.active == SWEEPING)) is None:
        release_lease(batch_id, owner, None)


def in_flight_machines() -> int:
    """The shared counter of machines in flight over all batches (models.InFlight)."""
    try:
        return int(InFlight.get(IN_FLIGHT_KEY, consistent_read=True).machines or 0)
    except DoesNotExist:
        return 0


def acquire_lease(batch_id: str, owner: str, now: int, lease_ms: int, partition: str = ACTIVE) -> Batch | None:
    """Take the batch for one pass (or, with `partition=SWEEPING`, one sweep of an ended
    batch); None if another holds it, or it is no longer in that partition of the index (a
    pass never takes a batch that ended since it was listed)."""
    free = Batch.lease_until.does_not_exist() | (Batch.lease_until < now) | (Batch.lease_owner == owner)
    batch = _update(batch_id, [Batch.lease_owner.set(owner), Batch.lease_until.set(now + lease_ms)],
                    (Batch.active == partition) & free)
    return counts.with_counts([batch])[0] if batch is not None else None


def release_lease(batch_id: str, owner: str, due_at: int | None, pass_errors: int | None = None) -> None:
    """End a pass: give the lease back and say when the batch is next due. A batch that
    ended meanwhile (a reset) keeps the due time its end gave it (its sweep's), but the
    lease is given back all the same, so the sweep need not wait for it to expire."""
    actions = [Batch.lease_owner.remove(), Batch.lease_until.remove()]
    if pass_errors is not None:
        actions.append(Batch.pass_errors.set(pass_errors))
    mine = Batch.lease_owner == owner
    if due_at is None or _update(batch_id, [*actions, Batch.due_at.set(due_at)], mine & (Batch.active == ACTIVE)) is None:
        _update(batch_id, actions, mine)


def advance_phase(settings: Settings, batch: Batch, next_phase: str | None, total: int, now: int) -> bool:
    """A phase whose tasks all ended -> the next phase, or FINALIZING; False when the batch
    or any shard's ended counts moved since `batch` was read (a pass sees them again)."""
    seen = counts.read(batch.batch_id)
    if (counts.sums(seen.values(), "tasks_completed"), counts.sums(seen.values(), "tasks_failed")) != (
            int(batch.tasks_completed or 0), int(batch.tasks_failed or 0)):
        return False
    history = list(batch.phase_history or [])
    history.append({"phase": batch.phase, "total": batch.tasks_total,
                    "completed": batch.tasks_completed, "failed": batch.tasks_failed})
    status = next_phase or BatchStatus.FINALIZING.value
    actions = [Batch.status.set(status), Batch.phase_history.set(history),
               Batch.due_at.set(now), Batch.updated_at.set(now)]
    if next_phase:
        actions += [Batch.phase.set(next_phase), Batch.tasks_total.set(total)]

    def build(tx: Any) -> None:
        tx.update(Batch(batch.batch_id), actions=actions, condition=Batch.status == batch.status)
        if next_phase:
            counts.reset_for_phase(tx, batch.batch_id, seen)

    return transact(settings, build) is None


def delivery_succeeded(batch_id: str, now: int, sweep_at: int) -> bool:
    """FINALIZING -> DONE; False when the batch left FINALIZING meanwhile (a reset)."""
    return _update(batch_id, [
        Batch.status.set(BatchStatus.DONE.value), *_ended(sweep_at),
        Batch.delivered_at.set(now), Batch.completed_at.set(now),
        Batch.updated_at.set(now), Batch.delivery_attempts.add(1), Batch.delivery_error.remove(),
    ], Batch.status == BatchStatus.FINALIZING.value) is not None


def delivery_failed(batch_id: str, error: str, next_due: int, now: int) -> None:
    _update(batch_id, [
        Batch.delivery_attempts.add(1), Batch.delivery_error.set(error),
        Batch.due_at.set(next_due), Batch.updated_at.set(now),
    ], Batch.status == BatchStatus.FINALIZING.value)


def reopen_batch(settings: Settings, batch_id: str, status: str, now: int, expect: tuple[str, ...]) -> bool:
    """An ended batch back to work (`status`: a phase, or FINALIZING to redeliver), its
    tasks' moves counted again. The next final callback is a new delivery: it gets a new
    Idempotency-Key."""
    actions = [
        Batch.status.set(status), Batch.active.set(ACTIVE), Batch.due_at.set(now),
        Batch.updated_at.set(now), Batch.error.remove(), Batch.completed_at.remove(),
        Batch.delivered_at.remove(), Batch.delivery_error.remove(),
        Batch.delivery_attempts.set(0), Batch.pass_errors.set(0), Batch.delivery_generation.add(1),
        Batch.reopened_at.set(now),  # progress is measured from here (metrics)
    ]

    def build(tx: Any) -> None:
        tx.update(Batch(batch_id), actions=actions, condition=Batch.status.is_in(*expect))
        counts.reopen(tx, batch_id)

    return transact(settings, build) is None


def record_pool_pass(batch_id: str, target: int, reason: str, task_ms_avg: float, seen: dict[str, int],
                     tier_machines: int = 0) -> None:
    """What a pool pass decided and saw: the target (of every tier) and why, the larger
    tiers' part of it, the moving average of seconds per task and the sums it was taken at.
    Under the pass's lease, so plain sets suffice."""
    Batch(batch_id).update(actions=[Batch.pool_target.set(target), Batch.pool_reason.set(reason[:100]),
                                    Batch.pool_tier_machines.set(tier_machines),
                                    Batch.task_ms_avg.set(round(task_ms_avg)), Batch.task_ms_seen.set(seen)])


def raise_machines_peak(batch_id: str, live: int) -> None:
    """The largest pool seen, only ever raised."""
    try:
        Batch(batch_id).update(actions=[Batch.machines_peak.set(live)],
                               condition=Batch.machines_peak.does_not_exist() | (Batch.machines_peak < live))
    except UpdateError as exc:
        if not lost_race(exc):
            raise
