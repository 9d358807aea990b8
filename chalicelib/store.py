"""Every DynamoDB read and write of the orchestrator, one function per operation.

Each task transition and its counter change are one TransactWriteItems, guarded by the
task's current status and attempt (design.md invariant 1): if anything moved first, the
condition fails, the transaction changes nothing, and the caller learns it lost the race.
Nothing here decides a transition (transitions.py does) or speaks HTTP.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import DoesNotExist, PutError, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from . import timeline
from .models import ACTIVE, LISTED, Batch, File, Task
from .settings import Settings
from .states import BatchStatus, TaskStatus
from .transitions import Move, Outcome

MAX_TRANSACT_ITEMS = 100
# open_due holds two kinds of time in one sparse index: a processing task's deadline as is,
# a pending task's retry time plus this offset. Two range queries then find "timed out"
# and "ready to spawn" separately, each exactly, without reading the other kind.
PENDING_OFFSET = 10**14
_connection: Connection | None = None


def connection(settings: Settings) -> Connection:
    """The one connection transactions use (models keep their own, per table)."""
    global _connection
    if _connection is None or _connection.region != settings.region:
        _connection = Connection(region=settings.region)
    return _connection


def _lost_race(exc: Exception) -> bool:
    code = getattr(exc, "cause_response_code", None)
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


def _transact(settings: Settings) -> TransactWrite:
    return TransactWrite(connection=connection(settings))


def _status_key(status: str, task_id: str) -> str:
    return f"{status}#{task_id}"


# ---- batches -----------------------------------------------------------------------------

def get_batch(batch_id: str) -> Batch | None:
    try:
        return Batch.get(batch_id, consistent_read=True)
    except DoesNotExist:
        return None


def create_batch(batch_id: str, source: dict[str, Any], now: int, replace_error: bool) -> bool:
    """Put a new batch in INTAKE; with `replace_error`, only over a batch in ERROR."""
    batch = Batch(batch_id, status=BatchStatus.INTAKE.value, started_at=now, updated_at=now, source=source,
                  listed=LISTED, timeline={})
    condition = (Batch.status == BatchStatus.ERROR.value) if replace_error else Batch.batch_id.does_not_exist()
    try:
        batch.save(condition=condition)
    except PutError as exc:
        if _lost_race(exc):
            return False
        raise
    return True


def activate_batch(batch_id: str, phase: str | None, total: int, now: int) -> bool:
    """INTAKE -> the first phase (or FINALIZING when there is nothing to convert)."""
    status = phase or BatchStatus.FINALIZING.value
    try:
        Batch(batch_id).update(
            actions=[
                Batch.status.set(status), Batch.phase.set(phase or status),
                Batch.tasks_total.set(total), Batch.tasks_completed.set(0),
                Batch.tasks_failed.set(0), Batch.tasks_in_flight.set(0),
                Batch.active.set(ACTIVE), Batch.due_at.set(now), Batch.updated_at.set(now),
            ],
            condition=Batch.status == BatchStatus.INTAKE.value,
        )
    except UpdateError as exc:
        if _lost_race(exc):
            return False
        raise
    return True


def fail_batch(batch_id: str, error: str, now: int, expect_status: str | None = None) -> bool:
    """Any state -> ERROR with `error`; stops all further passes (drops out of the index)."""
    condition = Batch.batch_id.exists()
    if expect_status:
        condition &= Batch.status == expect_status
    try:
        Batch(batch_id).update(
            actions=[
                Batch.status.set(BatchStatus.ERROR.value), Batch.error.set(error),
                Batch.active.remove(), Batch.due_at.remove(), Batch.updated_at.set(now),
                Batch.completed_at.set(now),
            ],
            condition=condition,
        )
    except UpdateError as exc:
        if _lost_race(exc):
            return False
        raise
    return True


def list_active_batches(due_before: int | None = None) -> list[Batch]:
    """Batches with work (sparse index), optionally only those due by `due_before`."""
    condition = Batch.due_at <= due_before if due_before is not None else None
    return list(Batch.active_index.query(ACTIVE, range_key_condition=condition))


def acquire_lease(batch_id: str, owner: str, now: int, lease_ms: int) -> Batch | None:
    """Take the batch for one pass; None if another pass holds it or it has no work."""
    batch = Batch(batch_id)
    free = Batch.lease_until.does_not_exist() | (Batch.lease_until < now) | (Batch.lease_owner == owner)
    try:
        batch.update(
            actions=[Batch.lease_owner.set(owner), Batch.lease_until.set(now + lease_ms)],
            condition=Batch.active.exists() & free,
        )
    except UpdateError as exc:
        if _lost_race(exc):
            return None
        raise
    return batch


def release_lease(batch_id: str, owner: str, due_at: int | None, pass_errors: int | None = None) -> None:
    """End a pass: give the lease back and say when the batch is next due."""
    actions = [Batch.lease_owner.remove(), Batch.lease_until.remove()]
    if pass_errors is not None:
        actions.append(Batch.pass_errors.set(pass_errors))
    condition = Batch.lease_owner == owner
    if due_at is not None:
        actions.append(Batch.due_at.set(due_at))
        condition &= Batch.active.exists()
    try:
        Batch(batch_id).update(actions=actions, condition=condition)
    except UpdateError as exc:
        if not _lost_race(exc):
            raise


def advance_phase(batch: Batch, next_phase: str | None, total: int, now: int) -> bool:
    """A phase whose tasks all ended -> the next phase, or FINALIZING."""
    history = list(batch.phase_history or [])
    history.append({"phase": batch.phase, "total": batch.tasks_total,
                    "completed": batch.tasks_completed, "failed": batch.tasks_failed})
    status = next_phase or BatchStatus.FINALIZING.value
    actions = [Batch.status.set(status), Batch.phase_history.set(history),
               Batch.due_at.set(now), Batch.updated_at.set(now)]
    if next_phase:
        actions += [Batch.phase.set(next_phase), Batch.tasks_total.set(total),
                    Batch.tasks_completed.set(0), Batch.tasks_failed.set(0),
                    Batch.tasks_in_flight.set(0)]
    condition = ((Batch.status == batch.status) & (Batch.tasks_completed == batch.tasks_completed)
                 & (Batch.tasks_failed == batch.tasks_failed))
    try:
        Batch(batch.batch_id).update(actions=actions, condition=condition)
    except UpdateError as exc:
        if _lost_race(exc):
            return False
        raise
    return True


def delivery_succeeded(batch_id: str, now: int) -> None:
    Batch(batch_id).update(
        actions=[Batch.status.set(BatchStatus.DONE.value), Batch.active.remove(),
                 Batch.due_at.remove(), Batch.delivered_at.set(now), Batch.completed_at.set(now),
                 Batch.updated_at.set(now), Batch.delivery_attempts.add(1),
                 Batch.delivery_error.remove()],
        condition=Batch.status == BatchStatus.FINALIZING.value,
    )


def delivery_failed(batch_id: str, error: str, next_due: int, now: int) -> None:
    Batch(batch_id).update(
        actions=[Batch.delivery_attempts.add(1), Batch.delivery_error.set(error),
                 Batch.due_at.set(next_due), Batch.updated_at.set(now)],
        condition=Batch.status == BatchStatus.FINALIZING.value,
    )


# ---- files -------------------------------------------------------------------------------

def _save_all(model: type[File] | type[Task], items: Iterable[Any]) -> int:
    """BatchWriteItem, 25 items a request (pynamodb retries unprocessed ones)."""
    count = 0
    with model.batch_write() as writer:
        for item in items:
            writer.save(item)
            count += 1
    return count


def write_files(files: Iterable[File]) -> int:
    return _save_all(File, files)


def iter_files(batch_id: str) -> Iterator[File]:
    return File.query(batch_id)


# ---- tasks -------------------------------------------------------------------------------

def new_task(batch_id: str, task_id: str, phase: str, input_key: str, position: int | None,
             data: dict[str, Any] | None, now: int) -> Task:
    status = TaskStatus.PENDING.value
    return Task(batch_id, task_id, phase=phase, status=status, status_key=_status_key(status, task_id),
                open_due=pending_due(now), attempts=0, input_r2_key=input_key, file_position=position,
                data=data or None, created_at=now, updated_at=now)


def write_tasks(tasks: Iterable[Task]) -> int:
    return _save_all(Task, tasks)


def delete_batch_items(batch_id: str) -> int:
    """Remove a batch's tasks and files (restarting a batch that ended in ERROR)."""
    deleted = 0
    for model in (Task, File):
        with model.batch_write() as writer:
            for item in model.query(batch_id):
                writer.delete(item)
                deleted += 1
    return deleted


def get_task(batch_id: str, task_id: str) -> Task | None:
    try:
        return Task.get(batch_id, task_id, consistent_read=True)
    except DoesNotExist:
        return None


def pending_due(at: int) -> int:
    return PENDING_OFFSET + at


def timed_out_tasks(batch_id: str, now: int, limit: int) -> list[Task]:
    """Processing tasks past their deadline, oldest first (sparse LSI)."""
    return list(Task.open_index.query(batch_id, Task.open_due.between(0, now), limit=limit,
                                      consistent_read=True))


def ready_tasks(batch_id: str, now: int, limit: int) -> list[Task]:
    """Pending tasks whose (retry) time has come, oldest first (sparse LSI)."""
    if limit <= 0:
        return []
    return list(Task.open_index.query(batch_id, Task.open_due.between(PENDING_OFFSET, pending_due(now)),
                                      limit=limit, consistent_read=True))


def iter_tasks(batch_id: str) -> Iterator[Task]:
    return Task.query(batch_id)


def tasks_page(batch_id: str, status: str | None, limit: int, token: str | None) -> tuple[list[Task], str | None]:
    """One page of a batch's tasks, by status through the status index when asked."""
    start = _decode_token(token) if token else None
    if start is not None:
        _check_start_key(start, batch_id, status)
    if status:
        result = Task.status_index.query(batch_id, Task.status_key.startswith(f"{status}#"),
                                         limit=limit, last_evaluated_key=start)
    else:
        result = Task.query(batch_id, limit=limit, last_evaluated_key=start)
    items = list(result)
    last = result.last_evaluated_key
    return items, (_encode_token(last) if last else None)


def _encode_token(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode()


def _decode_token(token: str) -> dict[str, Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise ValueError("invalid next token") from None
    if not isinstance(key, dict):
        raise ValueError("invalid next token")
    return key


def _check_start_key(key: dict[str, Any], batch_id: str, status: str | None) -> None:
    """A token is only ever one this route issued for this batch and status: anything else
    would reach DynamoDB as a malformed ExclusiveStartKey (a 500, not a 400)."""
    names = {"batch_id", "task_id"} | ({"status_key"} if status else set())
    values = {name: value.get("S") if isinstance(value, dict) and set(value) == {"S"} else None
              for name, value in key.items()}
    if (set(values) != names or not all(isinstance(v, str) and v for v in values.values())
            or values["batch_id"] != batch_id
            or (status and values["status_key"] != _status_key(status, values["task_id"]))):
        raise ValueError("invalid next token")


def _in_flight(attempt: int) -> Any:
    return (Task.status == TaskStatus.PROCESSING.value) & (Task.attempts == attempt)


def claim_task(settings: Settings, task: Task, phase: str, deadline: int, now: int) -> int | None:
    """pending -> processing for the next attempt; returns the attempt, or None if lost."""
    attempt = int(task.attempts) + 1
    status = TaskStatus.PROCESSING.value
    try:
        with _transact(settings) as tx:
            tx.update(
                Task(task.batch_id, task.task_id),
                actions=[Task.status.set(status), Task.status_key.set(_status_key(status, task.task_id)),
                         Task.attempts.set(attempt), Task.open_due.set(deadline),
                         Task.attempt_started_at.set(now), Task.machine_id.remove(),
                         Task.machine_name.remove(), Task.updated_at.set(now)],
                condition=(Task.status == TaskStatus.PENDING.value) & (Task.attempts == task.attempts),
            )
            tx.update(Batch(task.batch_id),
                      actions=[Batch.tasks_in_flight.add(1), Batch.updated_at.set(now)],
                      condition=Batch.status == phase)
    except TransactWriteError as exc:
        if _lost_race(exc):
            return None
        raise
    return attempt


def record_machine(batch_id: str, task_id: str, attempt: int, machine_id: str, name: str) -> bool:
    try:
        Task(batch_id, task_id).update(
            actions=[Task.machine_id.set(machine_id), Task.machine_name.set(name)],
            condition=_in_flight(attempt),
        )
    except UpdateError as exc:
        if _lost_race(exc):
            return False
        raise
    return True


def unclaim_task(settings: Settings, batch_id: str, task_id: str, attempt: int, retry_at: int, now: int) -> bool:
    """processing -> pending, the attempt not counted (Fly said 429 before creating)."""
    status = TaskStatus.PENDING.value
    try:
        with _transact(settings) as tx:
            tx.update(Task(batch_id, task_id),
                      actions=[Task.status.set(status), Task.status_key.set(_status_key(status, task_id)),
                               Task.attempts.set(attempt - 1), Task.open_due.set(pending_due(retry_at)),
                               Task.updated_at.set(now)],
                      condition=_in_flight(attempt))
            tx.update(Batch(batch_id), actions=[Batch.tasks_in_flight.add(-1)],
                      condition=Batch.batch_id.exists())
    except TransactWriteError as exc:
        if _lost_race(exc):
            return False
        raise
    return True


def end_attempt(settings: Settings, batch_id: str, task_id: str, attempt: int, move: Move,
                now: int, outcome: Outcome | None = None, error: str | None = None,
                retry_at: int | None = None) -> bool:
    """Carry out the end of one attempt: complete, retry later, or fail. One transaction:
    the task's transition (only if that attempt is still in flight) and the counters."""
    task_actions: list[Any] = [Task.updated_at.set(now)]
    batch_actions: list[Any] = [Batch.tasks_in_flight.add(-1), Batch.updated_at.set(now)]
    if move is Move.COMPLETE:
        assert outcome is not None
        status = TaskStatus.COMPLETED.value
        task_actions += [Task.open_due.remove(), Task.ended_at.set(now), Task.last_error.remove()]
        for name, value in outcome.output.items():
            task_actions.append(getattr(Task, name).set(value))
        if outcome.performance is not None:
            task_actions.append(Task.performance.set(outcome.performance))
        batch_actions.append(Batch.tasks_completed.add(1))
    elif move is Move.RETRY:
        status = TaskStatus.PENDING.value
        task_actions += [Task.open_due.set(pending_due(retry_at if retry_at is not None else now)),
                         Task.last_error.set(error or "unknown error")]
    else:
        status = TaskStatus.FAILED.value
        task_actions += [Task.open_due.remove(), Task.ended_at.set(now),
                         Task.last_error.set(error or "unknown error")]
        batch_actions.append(Batch.tasks_failed.add(1))
    task_actions += [Task.status.set(status), Task.status_key.set(_status_key(status, task_id))]
    batch_actions += timeline.count_action(move, now)  # the console's per-minute chart
    try:
        with _transact(settings) as tx:
            tx.update(Task(batch_id, task_id), actions=task_actions, condition=_in_flight(attempt))
            tx.update(Batch(batch_id), actions=batch_actions, condition=Batch.batch_id.exists())
    except TransactWriteError as exc:
        if _lost_race(exc):
            return False
        raise
    return True


def close_open_tasks(settings: Settings, batch_id: str, error: str, now: int) -> tuple[int, list[str]]:
    """Fail every open task of a batch (admin reset), counters in the same transactions.
    Returns how many were closed and the machine ids that were running."""
    closed, machines = 0, []
    while True:
        page = list(Task.open_index.query(batch_id, Task.open_due >= 0, limit=MAX_TRANSACT_ITEMS - 1,
                                          consistent_read=True))
        if not page:
            return closed, machines
        failed = TaskStatus.FAILED.value
        running = [t for t in page if t.status == TaskStatus.PROCESSING.value]
        try:
            with _transact(settings) as tx:
                for task in page:
                    tx.update(Task(batch_id, task.task_id),
                              actions=[Task.status.set(failed), Task.status_key.set(_status_key(failed, task.task_id)),
                                       Task.open_due.remove(), Task.last_error.set(error),
                                       Task.ended_at.set(now), Task.updated_at.set(now)],
                              condition=(Task.status == task.status) & (Task.attempts == task.attempts))
                tx.update(Batch(batch_id),
                          actions=[Batch.tasks_failed.add(len(page)),
                                   Batch.tasks_in_flight.add(-len(running)), Batch.updated_at.set(now)],
                          condition=Batch.batch_id.exists())
        except TransactWriteError as exc:
            if _lost_race(exc):
                continue  # a callback moved one of them first: read the page again
            raise
        closed += len(page)
        machines += [t.machine_id for t in running if t.machine_id]


def reopen_failed_tasks(settings: Settings, batch_id: str, phase: str, now: int) -> int:
    """Failed tasks of `phase` -> pending with fresh attempts (admin retry), the failed
    counter moving in the same transactions. Only while the batch has ended, so no pass
    sees the counters half-way."""
    reopened = 0
    pending = TaskStatus.PENDING.value
    while True:
        page = list(Task.status_index.query(
            batch_id, Task.status_key.startswith(f"{TaskStatus.FAILED.value}#"),
            filter_condition=Task.phase == phase, limit=MAX_TRANSACT_ITEMS - 1, consistent_read=True))
        if not page:
            return reopened
        try:
            with _transact(settings) as tx:
                for task in page:
                    tx.update(Task(batch_id, task.task_id),
                              actions=[Task.status.set(pending), Task.status_key.set(_status_key(pending, task.task_id)),
                                       Task.attempts.set(0), Task.open_due.set(pending_due(now)),
                                       Task.ended_at.remove(), Task.machine_id.remove(),
                                       Task.machine_name.remove(), Task.updated_at.set(now)],
                              condition=(Task.status == TaskStatus.FAILED.value) & (Task.attempts == task.attempts))
                tx.update(Batch(batch_id), actions=[Batch.tasks_failed.add(-len(page)), Batch.updated_at.set(now)],
                          condition=Batch.status.is_in(BatchStatus.DONE.value, BatchStatus.ERROR.value))
        except TransactWriteError as exc:
            if _lost_race(exc):
                return reopened  # another retry took them, or the batch started again
            raise
        reopened += len(page)


def reopen_batch(batch_id: str, status: str, now: int, expect: tuple[str, ...]) -> bool:
    """An ended batch back to work (`status`: a phase, or FINALIZING to redeliver)."""
    try:
        Batch(batch_id).update(
            actions=[Batch.status.set(status), Batch.active.set(ACTIVE), Batch.due_at.set(now),
                     Batch.updated_at.set(now), Batch.error.remove(), Batch.completed_at.remove(),
                     Batch.delivered_at.remove(), Batch.delivery_error.remove(),
                     Batch.delivery_attempts.set(0), Batch.pass_errors.set(0),
                     Batch.reopened_at.set(now)],  # progress is measured from here (metrics)
            condition=Batch.status.is_in(*expect),
        )
    except UpdateError as exc:
        if _lost_race(exc):
            return False
        raise
    return True
