"""CloudWatch metrics as Embedded Metric Format records: one JSON line on stdout each.

Lambda sends stdout to CloudWatch Logs, which turns every EMF line into metric data points,
so a deployed stage has real metrics (and alarms, docs/deploy.md) with no agent, no API
call and no extra service. Dimensions are the stage and the phase only (and the stage
alone, for stage-wide alarms); the batch and task ids are properties, searchable in Logs
Insights but never dimensions, which would make a metric per batch.

Why not Powertools' `Metrics`: measured for this bundle (aws-lambda-powertools 3.37.0),
a 1.0 MB wheel that unpacks to 4.5 MB (the bundle is 17.9 MB zipped) and adds ~15 ms to a
cold start's imports (`python -X importtime`; this module: ~1 ms of its own), for the
one class we would use; this module is the part of the EMF spec we need. Never put a
secret in a property: only ids, counts and durations go here.
"""

from __future__ import annotations

import json
from typing import Any

from .clock import now_ms
from .logs import log, stdout_logger

NAMESPACE = "Arke/Preprocess"
DIMENSIONS = [["stage", "phase"], ["stage"]]
UNITS = {
    "MachinesSpawned": "Count",  # per pass: the seed's "tasks spawned per alarm"
    "MachinesInFlight": "Count",  # the pool: machines running for the batch after the pass
    "TasksPending": "Count",  # the batch's queue depth: tasks waiting for a machine
    "SecondsSinceProgress": "Seconds",  # since a task of the batch last ended (alarm)
    "FlyRateLimited": "Count",  # 429s from the Machines API
    "CallbackLatency": "Milliseconds",  # spawn to callback
    "TasksCompleted": "Count",
    "TasksFailed": "Count",
    "TasksRetried": "Count",
    "SuccessRate": "Percent",  # per batch at its end: tasks_completed / tasks_total
    "BatchSeconds": "Seconds",
    "DeliveryAttempts": "Count",
    "DeliveryFailed": "Count",
}

_logger = stdout_logger("arke.metrics")


def record(stage: str, phase: str | None, values: dict[str, float], properties: dict[str, Any],
           timestamp_ms: int | None = None) -> dict[str, Any]:
    """One EMF record: `values` by metric name (units from UNITS), `properties` beside them."""
    unknown = set(values) - set(UNITS)
    if unknown:
        raise ValueError(f"no unit for metric(s) {sorted(unknown)}")
    clash = set(properties) & (set(values) | {"stage", "phase", "_aws"})
    if clash:
        raise ValueError(f"properties {sorted(clash)} would overwrite a metric or dimension")
    return {
        "_aws": {
            "Timestamp": timestamp_ms if timestamp_ms is not None else now_ms(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": DIMENSIONS,
                "Metrics": [{"Name": name, "Unit": UNITS[name]} for name in values],
            }],
        },
        "stage": stage,
        "phase": phase or "none",
        **{name: value for name, value in values.items()},
        **{name: value for name, value in properties.items() if value is not None},
    }


def emit(stage: str, phase: str | None, batch_id: str, properties: dict[str, Any] | None = None,
         **values: float | None) -> None:
    """Write one record for `batch_id`; metrics given as None are left out. A record that
    cannot be built is dropped with a log line: a metric never fails a callback or a pass."""
    present = {name: value for name, value in values.items() if value is not None}
    if not present:
        return
    try:
        line = json.dumps(record(stage, phase, present, {"batch_id": batch_id, **(properties or {})}),
                          separators=(",", ":"))
    except (ValueError, TypeError) as exc:
        log("[Batch]", "metric_dropped", batch_id=batch_id, metrics=",".join(present), error=str(exc))
        return
    _logger.info(line)


def latency_ms(spawned_param: str | None, now: int) -> int | None:
    """Spawn to callback, from the callback URL's `spawned=` (set when the machine was
    requested). A missing or implausible value (not a time in the last day) gives None:
    it is a figure for a chart, never a reason to refuse a callback."""
    if not spawned_param or not (spawned_param.isascii() and spawned_param.isdigit()) or len(spawned_param) > 15:
        return None
    elapsed = now - int(spawned_param)
    return elapsed if 0 <= elapsed <= 86_400_000 else None


def seconds_since_progress(started_at: int, last_ended_at: int | None, now: int,
                           reopened_at: int | None = None) -> int:
    """Since a task last ended (the batch's `last_ended_at`), or since the batch started or
    was last reopened (an admin retry must not look like a stall)."""
    last = max(int(started_at), int(reopened_at or 0), int(last_ended_at or 0))
    return max(0, (now - last) // 1000)


def pass_ended(stage: str, batch: Any, spawned: int, now: int) -> None:
    """After a tick's pass over `batch` (its item as the pass's lease read it): machines
    spawned, the pool after it, the tasks still waiting, and how long since progress.
    The pool counts the machines in flight at the lease plus those just spawned."""
    total, done, failed = (int(batch.tasks_total or 0), int(batch.tasks_completed or 0),
                           int(batch.tasks_failed or 0))
    pool = int(batch.tasks_in_flight or 0) + spawned
    emit(stage, batch.status, batch.batch_id, MachinesSpawned=spawned, MachinesInFlight=pool,
         TasksPending=max(0, total - done - failed - pool),
         SecondsSinceProgress=seconds_since_progress(int(batch.started_at), getattr(batch, "last_ended_at", None),
                                                     now, getattr(batch, "reopened_at", None)))


ENDED_METRIC = {"complete": "TasksCompleted", "fail": "TasksFailed", "retry": "TasksRetried"}


def callback_counted(stage: str, phase: str, batch_id: str, task_id: str, move: str,
                     latency: int | None) -> None:
    """A callback that counted: how its attempt ended, and spawn-to-callback time."""
    emit(stage, phase, batch_id, {"task_id": task_id}, CallbackLatency=latency, **{ENDED_METRIC[move]: 1})


def percent(part: Any, whole: Any) -> float | None:
    whole = int(whole or 0)
    return round(100.0 * int(part or 0) / whole, 2) if whole else None
