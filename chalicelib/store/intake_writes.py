"""The intake's writes of a batch's files and tasks: fenced, repeatable, never over a claim.

Every write is part of a transaction that also updates the batch item on the condition
that the batch is still in INTAKE and its intake claim is still ours (batches.intake_fence),
extending the claim as it goes. So a slow or resumed intake can never write after another
one took over or after the batch was activated (when a pass may already hold its tasks),
and repeating any step writes the same items again. A restart over ERROR carries each
task's attempt numbers over from the earlier run, so no machine name or callback token of
that run is ever handed out again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..models import Batch, File, Task
from ..phases import TaskSpec
from ..settings import Settings
from .batches import intake_fence
from .dynamo import CONDITION_FAILED, MAX_TRANSACT_ITEMS, transact
from .task_reads import iter_files, iter_tasks
from .tasks import new_task

CHUNK = MAX_TRANSACT_ITEMS - 1  # and the batch's fence
Write = Callable[[Any], None]


class IntakeFenceLost(RuntimeError):
    """Another intake took the batch over, or it left INTAKE: this one must stop writing."""


def _fenced(settings: Settings, batch_id: str, owner: str, until: int, writes: Sequence[Write]) -> None:
    for start in range(0, len(writes), CHUNK):
        chunk = writes[start:start + CHUNK]

        def build(tx: Any, chunk: Sequence[Write] = chunk) -> None:
            for write in chunk:
                write(tx)
            tx.update(Batch(batch_id), actions=[Batch.intake_until.set(until)], condition=intake_fence(owner))

        reasons = transact(settings, build)
        if reasons is not None:
            if reasons and reasons[-1] == CONDITION_FAILED:
                raise IntakeFenceLost(f"batch {batch_id} is no longer in INTAKE under {owner}")
            raise RuntimeError(f"intake write of batch {batch_id} was cancelled: {reasons}")


def _task_put(batch_id: str, phase: str, spec: TaskSpec, now: int, before: Task | None) -> Write:
    task = new_task(batch_id, spec.task_id, phase, spec.input_r2_key, spec.file_position, spec.data, now,
                    output_key=spec.output_r2_key)
    if before is not None:  # an earlier run's task of the same file: its numbering goes on
        task.attempts = task.attempts_base = int(before.attempts or 0)
        task.attempt_log = before.attempt_log.as_dict() if before.attempt_log is not None else {}
        task.created_at = int(before.created_at)
    return lambda tx: tx.save(task)


def _earlier_run(batch_id: str, keep: set[str]) -> tuple[list[Write], dict[str, Task]]:
    """Deletes of an earlier run's items: all its files (rewritten next), and its tasks
    that the new message no longer has; and the tasks it does have, to continue."""
    writes: list[Write] = [lambda tx, f=f: tx.delete(File.of(batch_id, int(f.position))) for f in iter_files(batch_id)]
    kept: dict[str, Task] = {}
    for task in iter_tasks(batch_id):
        if task.task_id in keep:
            kept[task.task_id] = task
        else:
            writes.append(lambda tx, t=task: tx.delete(Task.of(batch_id, t.task_id)))
    return writes, kept


def write_intake(settings: Settings, batch_id: str, owner: str, until: int, now: int, clean: bool,
                 files: Iterable[File], phase: str, specs: Sequence[TaskSpec]) -> None:
    """Remove an earlier run's items (when `clean`: repeated whole by a resumed intake,
    as the flag is only dropped at activation), then write the files and tasks. Puts, not
    updates: under the fence nothing else writes these items, and a put is one cheap
    request where an update of every attribute is not."""
    kept: dict[str, Task] = {}
    if clean:
        deletes, kept = _earlier_run(batch_id, {s.task_id for s in specs})
        _fenced(settings, batch_id, owner, until, deletes)
    writes: list[Write] = [lambda tx, f=f: tx.save(f) for f in files]
    writes += [_task_put(batch_id, phase, spec, now, kept.get(spec.task_id)) for spec in specs]
    _fenced(settings, batch_id, owner, until, writes)
