"""How batches and tasks look from outside: the JSON of the status and tasks routes."""

from __future__ import annotations

from typing import Any

from .clock import iso
from .models import Batch, Task
from .phases import TaskView
from .states import TaskStatus


def batch_status(batch: Batch) -> dict[str, Any]:
    """contracts §4's status answer, plus phase, delivery and finer progress."""
    in_flight = int(batch.tasks_in_flight or 0)
    total, done, failed = int(batch.tasks_total or 0), int(batch.tasks_completed or 0), int(batch.tasks_failed or 0)
    return {
        "batch_id": batch.batch_id,
        "status": batch.status,
        "phase": batch.phase,
        "progress": {
            "tasks_total": total,
            "tasks_completed": done,
            "tasks_failed": failed,
            "tasks_in_flight": in_flight,
            "tasks_pending": max(0, total - done - failed - in_flight),
        },
        "started_at": iso(batch.started_at),
        # the batch item's own writes, or a task's end (its counts item's, not the batch's)
        "updated_at": iso(max(int(batch.updated_at), int(batch.last_ended_at or 0))),
        "completed_at": iso(batch.completed_at),
        "error": batch.error,
        "metadata": (batch.source or {}).get("metadata"),  # contracts §1: carried, not read
        "phases": batch.phase_history or [],
        "delivery": {
            "attempts": int(batch.delivery_attempts or 0),
            "last_error": batch.delivery_error,
            "delivered_at": iso(batch.delivered_at),
        },
        "machines": machines_view(batch),
        "pool": pool_view(batch),
    }


def machines_view(batch: Batch) -> dict[str, int] | None:
    """A pool batch's machine counts (docs/pool.md), flat so `watch` shows them as one line;
    None for a batch that never had a pool."""
    if batch.machines_created is None:
        return None
    return {"live": int(batch.machines_live or 0), "target": int(batch.pool_target or 0),
            "peak": int(batch.machines_peak or 0), "created": int(batch.machines_created or 0)}


def pool_view(batch: Batch) -> dict[str, Any] | None:
    """Why the pool has the size it has: the last pass's reason and seconds per task."""
    if batch.pool_target is None:
        return None
    return {"reason": batch.pool_reason,
            "task_ms": int(batch.task_ms_avg) if batch.task_ms_avg is not None else None}


def task_json(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "phase": task.phase,
        "status": task.status,
        "input_r2_key": task.input_r2_key,
        "input_file_name": input_file_name(task.input_r2_key),
        "attempts": int(task.attempts or 0),
        "attempts_since_retry": int(task.attempts or 0) - int(task.attempts_base or 0),
        "machine_id": task.machine_id,
        "machine_name": task.machine_name,
        "history": attempt_history(task),
        "last_error": task.last_error,
        "error_code": task.error_code,
        "memory_mb": int(task.memory_mb) if task.memory_mb is not None else None,
        "next_memory_mb": int(task.next_memory_mb) if task.next_memory_mb is not None else None,
        "planned_output_key": task.planned_output_key,
        "output_r2_key": task.output_r2_key,
        "output_file_name": task.output_file_name,
        "output_file_size": int(task.output_file_size) if task.output_file_size is not None else None,
        "performance": task.performance,
        "started_at": iso(task.attempt_started_at),
        "ended_at": iso(task.ended_at),
        "updated_at": iso(task.updated_at),
    }


def input_file_name(key: str | None) -> str | None:
    """The input's file name as the console shows it: the key's last path segment."""
    return key.rsplit("/", 1)[-1] if key else key


def attempt_history(task: Task) -> list[dict[str, Any]]:
    """Every attempt the task has had, oldest first, each with its machine and outcome
    (from the attempt log's `{n}:start`, `{n}:machine` and `{n}:end` keys)."""
    log = task.attempt_log.as_dict() if task.attempt_log is not None else {}
    attempts: dict[int, dict[str, Any]] = {}
    for key, value in log.items():
        number, _, part = key.partition(":")
        if not number.isdigit():
            continue
        entry = attempts.setdefault(int(number), {})
        if part == "machine":
            entry["machine_id"] = value
        elif isinstance(value, dict):
            entry.update(value)
    return [{"attempt": n, "machine_name": e.get("machine_name"), "machine_id": e.get("machine_id"),
             "memory_mb": int(e["memory_mb"]) if e.get("memory_mb") is not None else None,
             "started_at": iso(e.get("started_at")), "ended_at": iso(e.get("ended_at")),
             "outcome": e.get("outcome"), "error": e.get("error")}
            for n, e in sorted(attempts.items())]


def task_view_for_phase(task: Task) -> TaskView:
    return TaskView(
        task_id=task.task_id, phase=task.phase, status=task.status, attempts=int(task.attempts or 0),
        input_r2_key=task.input_r2_key,
        file_position=int(task.file_position) if task.file_position is not None else None,
        data=task.data or {}, output_r2_key=task.output_r2_key,
        output_file_name=task.output_file_name,
        output_file_size=int(task.output_file_size) if task.output_file_size is not None else None,
        planned_output_key=task.planned_output_key,
    )


TASK_STATUSES = tuple(s.value for s in TaskStatus)
