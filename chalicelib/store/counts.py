"""A batch's per-task counters, kept in one BatchCounts item per task shard, summed on read.

Every claim and every end of an attempt adds to its task's shard's counts item in the same
transaction as the task's move, so the counters are exact (design.md invariant 1) without
any write of the batch item: the batch item is one partition, and when every claim and
callback wrote it a batch could not pass ~250 tasks a second (docs/scale.md). A read of a
batch that needs its counters (status, a pass, a pull) reads the counts items in one
BatchGetItem and puts their sums on the Batch, so the rest of the code reads
`batch.tasks_completed` as before. Each shard's item is exact at the moment it was read;
the sum over shards is not one snapshot, which is all a monotone check (a phase finished)
or an estimate (pending tasks) needs. Advancing a phase is the one decision taken on the
sums, and its transaction pins every shard's count to what was read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..models import Batch, BatchCounts, batch_counts_keys, counts_key, task_counts_key

# Summed over the shards into the attribute of the same name on Batch.
SUMMED = ("tasks_completed", "tasks_failed", "tasks_in_flight", "tasks_large", "task_ms_total", "task_ms_count")
# A phase's own counts: zero when it begins. The seconds per task run on over phases (the
# pass's moving average compares them with the sums it last saw).
PHASE_COUNTS = ("tasks_completed", "tasks_failed", "tasks_in_flight", "tasks_large")


def of_task(batch_id: str, task_id: str) -> BatchCounts:
    """The counts item a move of this task adds to."""
    return BatchCounts(task_counts_key(batch_id, task_id))


def of_shard(batch_id: str, shard: int) -> BatchCounts:
    return BatchCounts(counts_key(batch_id, shard))


def _get(keys: list[str]) -> dict[str, BatchCounts]:
    """Those of the counts items `keys` that exist, by key (consistent BatchGetItems of up
    to 100 keys)."""
    return {c.batch_id: c for c in BatchCounts.batch_get(keys, consistent_read=True)} if keys else {}


def read(batch_id: str) -> dict[str, BatchCounts]:
    """The batch's counts items that exist, by key (one consistent BatchGetItem)."""
    return _get(batch_counts_keys(batch_id))


def with_counts(batches: Sequence[Batch]) -> list[Batch]:
    """The batches with their counters summed from their counts items (one BatchGetItem
    per 100 items). Replaces, never adds to, what the Batch held: reading twice is harmless."""
    found = _get([key for b in batches for key in batch_counts_keys(b.batch_id)])
    for batch in batches:
        _sum_into(batch, [found[k] for k in batch_counts_keys(batch.batch_id) if k in found])
    return list(batches)


def _sum_into(batch: Batch, parts: list[BatchCounts]) -> None:
    for name in SUMMED:
        setattr(batch, name, sums(parts, name))
    ended = [int(p.last_ended_at) for p in parts if p.last_ended_at is not None]
    batch.last_ended_at = max(ended, default=None)


def sums(parts: Iterable[BatchCounts], name: str) -> int:
    return sum(int(getattr(p, name) or 0) for p in parts)


def open_to_moves() -> Any:
    """The condition of every move's counts write: the batch has not ended in ERROR (its
    open tasks are closed after the end: until then the end alone must refuse them)."""
    return BatchCounts.closed.does_not_exist()


def close(tx: Any, batch_id: str, now: int) -> None:
    """The batch ended in ERROR: from this transaction on, no move of its tasks counts."""
    for key in batch_counts_keys(batch_id):
        tx.update(BatchCounts(key), actions=[BatchCounts.closed.set(now)])


def reopen(tx: Any, batch_id: str) -> None:
    for key in batch_counts_keys(batch_id):
        tx.update(BatchCounts(key), actions=[BatchCounts.closed.remove()])


def _is(attribute: Any, value: int) -> Any:
    """`attribute` holds `value`; an absent attribute (a shard nothing has counted in) holds 0."""
    return (attribute.does_not_exist() | (attribute == 0)) if value == 0 else attribute == value


def reset_for_phase(tx: Any, batch_id: str, seen: dict[str, BatchCounts]) -> None:
    """A new phase's counts start at 0, each shard only if its ended counts are still what
    `seen` read (the phase's history records them)."""
    for key in batch_counts_keys(batch_id):
        part = seen.get(key)
        done, failed = (int(part.tasks_completed or 0), int(part.tasks_failed or 0)) if part else (0, 0)
        tx.update(BatchCounts(key), actions=[getattr(BatchCounts, n).set(0) for n in PHASE_COUNTS],
                  condition=_is(BatchCounts.tasks_completed, done) & _is(BatchCounts.tasks_failed, failed))


def reset_for_run(tx: Any, batch_id: str) -> None:
    """A run's counts start at 0 (an activation: a restart over ERROR leaves the earlier
    run's items behind), the seconds per task and the last end included."""
    for key in batch_counts_keys(batch_id):
        tx.update(BatchCounts(key), actions=[*(getattr(BatchCounts, n).set(0) for n in SUMMED),
                                             BatchCounts.last_ended_at.remove(), BatchCounts.closed.remove()])
