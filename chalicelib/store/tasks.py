"""Tasks: reads through the sparse indexes, and every transition of a task's status.

A task moves pending -> processing (a claim: the next attempt) -> completed, failed, or back
to pending (retry later). Every move is one transaction: the task (conditioned on the status
and attempt it was read at, and on its phase), its batch's counters (the counts item of the
task's shard, store/counts.py) and the shared machines-in-flight counter or the pool
machine's record. The batch item is not written: a batch that ended has closed its open
tasks (close_open_tasks) or, until it has, its counts items refuse the move. `_moved_to`
is the only place a task's `status` and `status_key` are set.
Attempt numbers only grow: machine names and callback tokens are made from them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pynamodb.exceptions import UpdateError

from .. import machine_size, timeline
from ..models import (
    IN_FLIGHT_KEY,
    Batch,
    BatchCounts,
    File,
    InFlight,
    Machine,
    Task,
    batch_shard_keys,
    machine_key,
)
from ..phases.worker_errors import OUT_OF_MEMORY
from ..settings import Settings
from ..states import BatchStatus, MachineState, TaskStatus
from ..transitions import Move, Outcome
from . import counts
from .dynamo import CONDITION_FAILED, MAX_TRANSACT_ITEMS, lost_race, transact
from .task_reads import get_task, is_large, pending_due, status_key

# An out_of_memory end of an attempt claimed before memory was recorded: twice the seed's 1024.
SEED_MEMORY_AFTER_OOM_MB = 2048
# A closing transaction holds the tasks, the batch and the in-flight counter.
CLOSE_PAGE = MAX_TRANSACT_ITEMS - 2


class InFlightCapReached(RuntimeError):
    """A claim refused because MAX_MACHINES_IN_FLIGHT machines are already in flight."""


class MachineNotLive(RuntimeError):
    """A pool claim refused because the pulling machine's record is gone (or was never made):
    the task itself may still be ready for another machine."""


_P, _R, _C, _F = TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.COMPLETED, TaskStatus.FAILED
# Every move a task may make, and which store functions make it. `_moved_to` refuses any
# other, and is the only place `status` and `status_key` are written.
MOVES: dict[tuple[TaskStatus, TaskStatus], str] = {
    (_P, _R): "claim_task, claim_for_machine: the next attempt",
    (_R, _P): "end_attempt (retry later), unclaim_task (a 429 before any machine existed)",
    (_R, _C): "end_attempt: the attempt's result",
    (_R, _F): "end_attempt (no attempt left, or permanent), close_open_tasks (ERROR)",
    (_P, _F): "close_open_tasks (ERROR)",
    (_F, _P): "reopen_failed_tasks (admin retry)",
}


def _moved_to(source: TaskStatus, status: TaskStatus, task_id: str) -> list[Any]:
    """The writes a move from `source` to `status` implies (the status and its index key);
    the caller's condition pins `source`. ValueError for a move not in MOVES."""
    if (source, status) not in MOVES:
        raise ValueError(f"a task does not move from {source.value} to {status.value}")
    return [Task.status.set(status.value), Task.status_key.set(status_key(status.value, task_id))]


def _in_flight(attempt: int) -> Any:
    return (Task.status == TaskStatus.PROCESSING.value) & (Task.attempts == attempt)


def _log(attempt: int, part: str) -> Any:
    """One key of the attempt log: `{attempt}:start`, `:machine` or `:end`. Flat keys in a
    map every task is created with, so no write ever names a path that may not exist
    (DynamoDB refuses an update under a missing map key, whatever its condition)."""
    return Task.attempt_log[f"{attempt}:{part}"]


def move_in_flight(tx: Any, delta: int, cap: int | None = None) -> None:
    """Move the shared in-flight counter; with `cap`, only while it is below the cap."""
    condition = None
    if cap is not None:
        condition = InFlight.machines.does_not_exist() | (InFlight.machines < cap)
    tx.update(InFlight(IN_FLIGHT_KEY), actions=[InFlight.machines.add(delta)], condition=condition)


# ---- creating ----------------------------------------------------------------------------

def new_task(batch_id: str, task_id: str, phase: str, input_key: str, position: int | None,
             data: dict[str, Any] | None, now: int, output_key: str | None = None) -> Task:
    status = TaskStatus.PENDING.value
    return Task.of(batch_id, task_id, phase=phase, status=status, status_key=status_key(status, task_id),
                   open_due=pending_due(now), attempts=0, attempts_base=0, attempt_log={},
                   input_r2_key=input_key, file_position=position, data=data or None,
                   planned_output_key=output_key, created_at=now, updated_at=now)


def _save_all(model: type[File] | type[Task], items: Iterable[Any]) -> int:
    """BatchWriteItem, 25 items a request (pynamodb retries unprocessed ones)."""
    count = 0
    with model.batch_write() as writer:
        for item in items:
            writer.save(item)
            count += 1
    return count


def write_tasks(tasks: Iterable[Task]) -> int:
    """A later phase's tasks, written under the pass's lease before the batch enters that
    phase (no claim can touch them before): plain puts, repeated harmlessly."""
    return _save_all(Task, tasks)


# ---- moving ------------------------------------------------------------------------------

def machine_not_gone() -> Any:
    """The condition of a heartbeat's write to its machine's record: draining still counts."""
    return Machine.batch_id.exists() & (Machine.state != MachineState.GONE.value)


def machine_takes_work() -> Any:
    """The condition of a claim (and of a pull's touch): the machine is neither gone nor
    draining."""
    return Machine.batch_id.exists() & Machine.state.is_in(MachineState.CREATING.value, MachineState.RUNNING.value)


def _claim(tx: Any, task: Task, phase: str, attempt: int, machine_name: str, deadline: int, now: int,
           memory_mb: int, settings: Settings, pool: bool) -> None:
    """The claim's task and counts writes, shared by both modes: pending -> processing for
    `attempt` only if the task is still pending at the attempt it was read at, and of
    `phase` (the batch's, as the caller read it: a later phase's tasks are written before
    the batch enters it). A pooled attempt names its machine in `pool_machine`."""
    start = {"started_at": now, "machine_name": machine_name, "memory_mb": memory_mb, **({"pool": True} if pool else {})}
    tx.update(Task.of(task.batch_id, task.task_id),
              actions=[*_moved_to(_P, _R, task.task_id), Task.attempts.set(attempt),
                       Task.open_due.set(deadline), Task.attempt_started_at.set(now),
                       Task.machine_id.remove(), Task.machine_name.set(machine_name),
                       Task.pool_machine.set(machine_name) if pool else Task.pool_machine.remove(),
                       Task.updated_at.set(now), Task.memory_mb.set(memory_mb),
                       Task.memory_mb_after_oom.set(machine_size.escalated_memory_mb(memory_mb, settings)),
                       _log(attempt, "start").set(start)],
              condition=(Task.status == TaskStatus.PENDING.value) & (Task.attempts == task.attempts)
              & (Task.open_due == task.open_due) & (Task.phase == phase))
    moved = [BatchCounts.tasks_in_flight.add(1)]
    if is_large(task):  # it waited for a larger machine (the task's condition pins its band as read)
        moved.append(BatchCounts.tasks_large.add(-1))
    tx.update(counts.of_task(task.batch_id, task.task_id), actions=moved, condition=counts.open_to_moves())


def claim_task(settings: Settings, task: Task, phase: str, machine_name: str, deadline: int,
               now: int, memory_mb: int | None = None) -> int | None:
    """pending -> processing for the next attempt; returns the attempt, None if the task or
    the batch moved first, InFlightCapReached if the shared cap is full. Records the memory
    the attempt's machine gets, and what the next gets should this one run out of it."""
    attempt = int(task.attempts) + 1
    memory_mb = memory_mb or settings.machine_memory_mb

    def build(tx: Any) -> None:
        _claim(tx, task, phase, attempt, machine_name, deadline, now, memory_mb, settings, pool=False)
        move_in_flight(tx, 1, cap=settings.max_machines_in_flight)

    reasons = transact(settings, build)
    if reasons is None:
        return attempt
    if len(reasons) == 3 and reasons[2] == CONDITION_FAILED and reasons[0] != CONDITION_FAILED:
        raise InFlightCapReached(f"{settings.max_machines_in_flight} machines in flight")
    return None


def claim_for_machine(settings: Settings, task: Task, phase: str, machine_name: str, deadline: int,
                      now: int, memory_mb: int | None = None) -> int | None:
    """A pool machine's pull: pending -> processing for the next attempt, held by that
    machine (its record says so in the same transaction, and must not be gone). The same
    conditions as `claim_task`, so two machines never hold one attempt; no in-flight
    counter moves (the machine was counted when it was created). None when the task or the
    batch moved first; MachineNotLive when the machine's record refused. `memory_mb`: the
    machine's (its tier's), POOL_MEMORY_MB if not given."""
    attempt = int(task.attempts) + 1
    memory_mb = memory_mb or settings.pool_memory_mb

    def build(tx: Any) -> None:
        _claim(tx, task, phase, attempt, machine_name, deadline, now, memory_mb, settings, pool=True)
        tx.update(Machine(machine_key(task.batch_id, machine_name)),
                  actions=[Machine.holding.add({task.task_id}), Machine.last_seen.set(now),
                           Machine.live_seen.set(now), Machine.state.set(MachineState.RUNNING.value)],
                  condition=machine_takes_work())

    reasons = transact(settings, build)
    if reasons is None:
        return attempt
    if len(reasons) == 3 and reasons[2] == CONDITION_FAILED:
        raise MachineNotLive(f"machine {machine_name} of batch {task.batch_id} is gone")
    return None


def extend_attempt(settings: Settings, batch_id: str, task_id: str, attempt: int, machine_name: str, now: int,
                   heartbeat_timeout_ms: int, task_timeout_ms: int) -> int | None:
    """A heartbeat: the attempt's deadline moves to `now + heartbeat_timeout_ms`, never past
    its start plus the task timeout, only while that machine still holds that attempt and
    its record is not gone; the machine is heard from in the same transaction, so a machine
    retired (silent, its batch ended) moves no deadline. The new deadline, or None when the
    machine should drop the task."""
    task = get_task(batch_id, task_id)
    if (task is None or task.status != TaskStatus.PROCESSING.value or int(task.attempts) != attempt
            or task.pool_machine != machine_name):
        return None
    deadline = min(now + heartbeat_timeout_ms, int(task.attempt_started_at or now) + task_timeout_ms)
    if deadline <= now:
        return None  # over the task timeout: the pass ends the attempt

    def build(tx: Any) -> None:
        tx.update(Task.of(batch_id, task_id), actions=[Task.open_due.set(deadline)],
                  condition=_in_flight(attempt) & (Task.pool_machine == machine_name))
        tx.update(Machine(machine_key(batch_id, machine_name)),
                  actions=[Machine.last_seen.set(now), Machine.live_seen.set(now)], condition=machine_not_gone())

    return deadline if transact(settings, build) is None else None


def record_machine(batch_id: str, task_id: str, attempt: int, machine_id: str) -> bool:
    try:
        Task.of(batch_id, task_id).update(
            actions=[Task.machine_id.set(machine_id), _log(attempt, "machine").set(machine_id)],
            condition=_in_flight(attempt),
        )
    except UpdateError as exc:
        if lost_race(exc):
            return False
        raise
    return True


def unclaim_task(settings: Settings, batch_id: str, task_id: str, attempt: int, retry_at: int, now: int,
                 band: int = 0) -> bool:
    """processing -> pending, the attempt not counted (Fly said 429 before creating: no
    machine and no token of that attempt exist, so its number may be used again), back to
    waiting in `band` (store/task_reads.py)."""

    def build(tx: Any) -> None:
        tx.update(Task.of(batch_id, task_id),
                  actions=[*_moved_to(_R, _P, task_id), Task.attempts.set(attempt - 1),
                           Task.open_due.set(pending_due(retry_at, band)), Task.machine_name.remove(),
                           Task.updated_at.set(now), _log(attempt, "start").remove()],
                  condition=_in_flight(attempt))
        moved = [BatchCounts.tasks_in_flight.add(-1), *([BatchCounts.tasks_large.add(1)] if band > 0 else [])]
        tx.update(counts.of_task(batch_id, task_id), actions=moved)
        move_in_flight(tx, -1)

    return transact(settings, build) is None


@dataclass(frozen=True)
class AttemptEnd:
    """How one attempt ends: the move, and what it leaves on the task."""

    move: Move
    phase: str
    outcome: Outcome | None = None
    error: str | None = None
    retry_at: int | None = None
    # With a limit, a retry only while fewer than `attempts_left_below` attempts were made
    # since the last admin retry (the callback decides without reading the task).
    attempts_left_below: int | None = None
    keep_planned_output: bool = False
    output: dict[str, Any] = field(default_factory=dict)
    # The pool machine the attempt ran on (None: a single-mode attempt, which counts in
    # the shared in-flight counter; a pooled one counts on its machine's record instead).
    pool_machine: str | None = None
    # The longest a counted result can have taken (the task timeout): a `total_time_ms`
    # over it is impossible and is kept out of the pool's seconds per task.
    task_ms_cap: int | None = None
    # The band a retry waits in (store/task_reads.py; pool/large.py decides it): 0 for the
    # pool's smallest machines, counted in `tasks_large` above that.
    band: int = 0


def _end_actions(task_id: str, attempt: int, end: AttemptEnd, now: int) -> tuple[list[Any], list[Any]]:
    entry: dict[str, Any] = {"ended_at": now, "outcome": end.move.value}
    if end.move is not Move.COMPLETE:
        entry["error"] = (end.error or "unknown error")[:1000]
    task: list[Any] = [Task.updated_at.set(now), _log(attempt, "end").set(entry)]
    counted: list[Any] = [BatchCounts.tasks_in_flight.add(-1)]
    if end.move is not Move.RETRY:
        counted.append(BatchCounts.last_ended_at.set(now))
    if end.move is Move.COMPLETE:
        assert end.outcome is not None
        task += [*_moved_to(_R, _C, task_id), Task.open_due.remove(), Task.ended_at.set(now),
                 Task.last_error.remove(), Task.error_code.remove()]
        for name, value in end.outcome.output.items():
            if name == "output_r2_key" and end.keep_planned_output:
                # presigned: the planned key is the only one the machine could write
                task.append(Task.output_r2_key.set(Task.planned_output_key | value))
            else:
                task.append(getattr(Task, name).set(value))
        if end.outcome.performance is not None:
            task.append(Task.performance.set(end.outcome.performance))
            took = end.outcome.performance.get("total_time_ms")
            if took is not None and (end.task_ms_cap is None or took <= end.task_ms_cap):
                # the pool's seconds per task (the pass averages them)
                counted += [BatchCounts.task_ms_total.add(int(took)), BatchCounts.task_ms_count.add(1)]
        counted.append(BatchCounts.tasks_completed.add(1))
        return task, counted
    code = end.outcome.error_code if end.outcome is not None else None
    task += [Task.last_error.set(end.error or "unknown error"),
             Task.error_code.set(code) if code else Task.error_code.remove()]
    if code == OUT_OF_MEMORY:
        # What this attempt's claim wrote for the next (no read: the condition pins the
        # item to this attempt); a task claimed before memory was recorded ran on the seed's
        # 1024 MB machine.
        task.append(Task.next_memory_mb.set(Task.memory_mb_after_oom | SEED_MEMORY_AFTER_OOM_MB))
    if end.move is Move.RETRY:
        retry_at = end.retry_at if end.retry_at is not None else now
        task += [*_moved_to(_R, _P, task_id), Task.open_due.set(pending_due(retry_at, end.band))]
        if end.band > 0:
            counted.append(BatchCounts.tasks_large.add(1))
    else:
        task += [*_moved_to(_R, _F, task_id), Task.open_due.remove(), Task.ended_at.set(now)]
        counted.append(BatchCounts.tasks_failed.add(1))
    return task, counted


def end_attempt(settings: Settings, batch_id: str, task_id: str, attempt: int, end: AttemptEnd, now: int) -> bool:
    """Carry out the end of one attempt: complete, retry later, or fail. One transaction:
    the task's transition (only if that attempt of the task's phase is still in flight),
    its shard's counts and the in-flight counter (or the pool machine's record)."""
    task_actions, counted = _end_actions(task_id, attempt, end, now)
    condition = _in_flight(attempt) & (Task.phase == end.phase)
    if end.attempts_left_below is not None:
        condition &= Task.attempts_base > attempt - end.attempts_left_below
    pooled = end.pool_machine
    condition &= (Task.pool_machine == pooled) if pooled else Task.pool_machine.does_not_exist()

    def build(tx: Any) -> None:
        tx.update(Task.of(batch_id, task_id), actions=task_actions, condition=condition)
        tx.update(counts.of_task(batch_id, task_id), actions=counted, condition=counts.open_to_moves())
        if pooled:
            done = [Machine.tasks_done.add(1)] if end.move is Move.COMPLETE else []
            tx.update(Machine(machine_key(batch_id, pooled)),
                      actions=[Machine.holding.delete({task_id}), *done], condition=Machine.batch_id.exists())
        else:
            move_in_flight(tx, -1)
        timeline.count(tx, batch_id, end.move, now)  # the console's per-minute chart

    return transact(settings, build) is None


@dataclass
class OpenTasksClosed:
    """What closing a batch's open tasks found: how many, and the machines to destroy
    (by id where it was recorded, by name where a creation may have happened unrecorded)."""

    closed: int = 0
    machine_ids: list[str] = field(default_factory=list)
    machine_names: list[str] = field(default_factory=list)


def close_open_tasks(settings: Settings, batch_id: str, error: str, now: int) -> OpenTasksClosed:
    """Fail every open task of a batch (every way into ERROR), counters in the same
    transactions. Each task is conditioned on everything read of it, its machine id
    included: a machine recorded after the read makes the page be read again, so its id
    is not missed."""
    result = OpenTasksClosed()
    for shard, key in enumerate(batch_shard_keys(batch_id)):
        while page := list(Task.open_index.query(key, Task.open_due >= 0, limit=CLOSE_PAGE, consistent_read=True)):
            running = [t for t in page if t.status == TaskStatus.PROCESSING.value]
            if transact(settings, lambda tx, page=page, running=running, shard=shard: _close_page(
                    tx, batch_id, shard, page, running, error, now)) is not None:
                continue  # a callback or a spawn moved one of them first: read the page again
            result.closed += len(page)
            running = [t for t in running if not t.pool_machine]  # pool machines: from their records
            result.machine_ids += [t.machine_id for t in running if t.machine_id]
            result.machine_names += [t.machine_name for t in running if not t.machine_id and t.machine_name]
    return result


def _close_page(tx: Any, batch_id: str, shard: int, page: list[Task], running: list[Task], error: str,
                now: int) -> None:
    for task in page:
        same = (Task.status == task.status) & (Task.attempts == task.attempts)
        if task.status == TaskStatus.PENDING.value:
            same &= Task.open_due == task.open_due  # its band (a processing task's deadline moves)
        same &= (Task.machine_id == task.machine_id) if task.machine_id else Task.machine_id.does_not_exist()
        same &= (Task.pool_machine == task.pool_machine) if task.pool_machine else Task.pool_machine.does_not_exist()
        actions = [*_moved_to(TaskStatus(task.status), _F, task.task_id), Task.open_due.remove(),
                   Task.last_error.set(error), Task.ended_at.set(now), Task.updated_at.set(now)]
        if task.status == TaskStatus.PROCESSING.value:
            attempt = int(task.attempts)
            actions.append(_log(attempt, "end").set({"ended_at": now, "outcome": "closed", "error": error}))
        tx.update(Task.of(batch_id, task.task_id), actions=actions, condition=same)
    moved = [BatchCounts.tasks_failed.add(len(page)), BatchCounts.tasks_in_flight.add(-len(running))]
    large = sum(1 for t in page if is_large(t))
    if large:  # each pending task's condition pins its band as read
        moved.append(BatchCounts.tasks_large.add(-large))
    tx.update(counts.of_shard(batch_id, shard), actions=moved)
    single = sum(1 for t in running if not t.pool_machine)  # a pooled one's machine is counted instead
    if single:
        move_in_flight(tx, -single)


def reopen_failed_tasks(settings: Settings, batch_id: str, phase: str, now: int) -> int:
    """Failed tasks of `phase` -> pending (admin retry), the failed counter moving in the
    same transactions. Only while the batch has ended, so no pass sees the counters
    half-way. The attempt numbers go on from where they were; the retry budget restarts."""
    reopened = 0
    for shard, key in enumerate(batch_shard_keys(batch_id)):
        while page := _failed_page(key, phase):
            if not _reopen_page(settings, batch_id, shard, page, now):
                return reopened  # another retry took them, or the batch started again
            reopened += len(page)
    return reopened


def _failed_page(key: str, phase: str) -> list[Task]:
    return list(Task.status_index.query(
        key, Task.status_key.startswith(f"{TaskStatus.FAILED.value}#"),
        filter_condition=Task.phase == phase, limit=MAX_TRANSACT_ITEMS - 1, consistent_read=True))


def _reopen_page(settings: Settings, batch_id: str, shard: int, page: list[Task], now: int) -> bool:
    ended = (BatchStatus.DONE.value, BatchStatus.ERROR.value)

    def build(tx: Any, page: list[Task] = page) -> None:
        for task in page:
            tx.update(Task.of(batch_id, task.task_id),
                      actions=[*_moved_to(_F, _P, task.task_id),
                               Task.attempts_base.set(int(task.attempts)),
                               Task.open_due.set(pending_due(now)), Task.ended_at.remove(),
                               Task.machine_id.remove(), Task.machine_name.remove(), Task.updated_at.set(now)],
                      condition=(Task.status == TaskStatus.FAILED.value) & (Task.attempts == task.attempts))
        tx.update(counts.of_shard(batch_id, shard), actions=[BatchCounts.tasks_failed.add(-len(page))])
        tx.condition_check(Batch, batch_id, condition=Batch.status.is_in(*ended))

    return transact(settings, build) is None
