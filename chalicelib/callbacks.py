"""A machine's callback (contracts §3) applied to its task: O(1), exactly once.

A callback must carry its attempt's token (signing.py), checked before its body is read.
The happy path is then one TransactWriteItems and no read: the task's phase comes from its id,
the attempt from the callback URL's `?attempt=`, and the transaction's condition (task
still processing that attempt) decides whether the callback counts. Only when it does not
is the task read, to tell a duplicate or late callback (200, nothing counted) from an
unknown task (404).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import metrics, signing, store
from .backoff import jittered_ms
from .clock import now_ms
from .errors import InvalidCallbackError, NotFoundError, UnauthorizedError
from .ids import id_problem
from .logs import log
from .pool.large import retry_band
from .services import Services
from .transitions import Move, Outcome, on_callback

MAX_BODY_BYTES = 1024 * 1024
MAX_ATTEMPT_DIGITS = 6  # no task runs a million attempts; longer is garbage, not a number to store


@dataclass(frozen=True)
class CallbackResult:
    counted: bool
    detail: str = ""


def parse_route(batch_id: str, task_id: str, attempt: str | None) -> int | None:
    """The path's ids and the `?attempt=` of the callback URL, checked before anything."""
    for value, what in ((batch_id, "batchId"), (task_id, "taskId")):
        problem = id_problem(value, what)
        if problem:
            raise InvalidCallbackError(problem)
    if attempt is None or attempt == "":
        return None
    if not (attempt.isascii() and attempt.isdigit()) or len(attempt) > MAX_ATTEMPT_DIGITS or int(attempt) < 1:
        raise InvalidCallbackError("attempt must be a positive integer")
    return int(attempt)


def parse_body(batch_id: str, task_id: str, raw: bytes | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        raise InvalidCallbackError("callback body is empty")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidCallbackError("callback body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidCallbackError("callback body must be a JSON object")
    if body.get("task_id") != task_id or body.get("batch_id") != batch_id:
        raise InvalidCallbackError("task_id and batch_id in the body must match the path")
    if body.get("status") not in ("success", "error"):
        raise InvalidCallbackError("status must be 'success' or 'error'")
    if body["status"] == "error" and (not isinstance(body.get("error"), str) or not body["error"]):
        raise InvalidCallbackError("an error callback needs a non-empty 'error' text")
    return body


def authorize(services: Services, batch_id: str, task_id: str, attempt: int | None,
              authorization: str | None) -> None:
    """The bearer token must be this attempt's (signing.py). Without one, only the
    compatibility setting for the seed's worker lets a callback through."""
    presented = signing.bearer(authorization)
    if presented is None and services.settings.accept_unsigned_callbacks:
        return
    key = services.secrets().get("CALLBACK_SIGNING_KEY")
    if presented is None:
        raise UnauthorizedError("callback needs Authorization: Bearer <CALLBACK_TOKEN>")
    if not key or attempt is None or not signing.valid_callback_token(key, batch_id, task_id, attempt, presented):
        raise UnauthorizedError("callback token does not match this task and attempt")


def handle_callback(services: Services, batch_id: str, task_id: str, raw: bytes | None,
                    attempt_param: str | None, authorization: str | None = None,
                    spawned_param: str | None = None, machine_param: str | None = None) -> CallbackResult:
    attempt = parse_route(batch_id, task_id, attempt_param)
    authorize(services, batch_id, task_id, attempt, authorization)
    body = parse_body(batch_id, task_id, raw)
    phase = services.registry.for_task(task_id)
    if phase is None:
        raise NotFoundError(_missing(batch_id, task_id))
    outcome = phase.interpret_callback(body)
    if attempt is None:
        task = store.get_task(batch_id, task_id)
        if task is None:
            raise NotFoundError(_missing(batch_id, task_id))
        attempt = int(task.attempts)
    machine = machine_param or None  # a pool attempt's machine (its callback URL says; the condition checks)
    if machine is not None and id_problem(machine, "machine"):
        raise InvalidCallbackError(f"machine: {id_problem(machine, 'machine')}")
    move, counted = apply_outcome(services, phase.name, batch_id, task_id, attempt, outcome, machine)
    task = None
    if not counted:
        task = store.get_task(batch_id, task_id)
        held_by = task.pool_machine if task is not None else None
        if (task is not None and task.status == "processing" and int(task.attempts) == attempt
                and (held_by or None) != machine):
            # the URL named the wrong machine (or none): the attempt is still in flight, so
            # end it as what it is; the token already proved it is this attempt's result
            move, counted = apply_outcome(services, phase.name, batch_id, task_id, attempt, outcome, held_by)
    if counted:
        log("[Callback]", "task_" + {"complete": "completed", "retry": "retrying", "fail": "failed"}[move.value],
            batch_id=batch_id, task_id=task_id, attempt=attempt, error=outcome.error,
            permanent=outcome.permanent or None,
            output_r2_key=outcome.output.get("output_r2_key"))
        metrics.callback_counted(services.settings.stage, phase.name, batch_id, task_id, move.value,
                                 metrics.latency_ms(spawned_param, now_ms()))
        return CallbackResult(True)
    if task is None:
        raise NotFoundError(_missing(batch_id, task_id))
    detail = f"task is {task.status} at attempt {int(task.attempts)}; callback was for attempt {attempt}"
    log("[Callback]", "callback_ignored", batch_id=batch_id, task_id=task_id, attempt=attempt,
        task_status=task.status, task_attempt=int(task.attempts))
    return CallbackResult(False, detail)


def apply_outcome(services: Services, phase: str, batch_id: str, task_id: str, attempt: int,
                  outcome: Outcome, pool_machine: str | None = None) -> tuple[Move, bool]:
    """End the attempt as the outcome says, without reading the task. A retryable error
    is retried only while attempts remain since the last admin retry: the retry's own
    condition says so, and when it fails the same attempt is failed instead (if it is
    still in flight at all). Returns the move made and whether anything counted."""
    settings, now = services.settings, now_ms()
    retry_at = now + jittered_ms(attempt, settings.alarm_delay_error_retry_ms)
    keep = not settings.machine_r2_credentials  # presigned: the planned key is the one written
    move = on_callback(outcome)
    limit = settings.max_retry_attempts if move is Move.RETRY else None
    end = store.AttemptEnd(move, phase, outcome=outcome, error=outcome.error, retry_at=retry_at,
                           attempts_left_below=limit, keep_planned_output=keep, pool_machine=pool_machine,
                           task_ms_cap=services.registry.get(phase).task_timeout_ms(settings),
                           band=retry_band(settings, pool_machine, outcome.error_code, outcome.needed_memory_mb))
    if store.end_attempt(settings, batch_id, task_id, attempt, end, now):
        return move, True
    if move is not Move.RETRY:
        return move, False
    final = store.AttemptEnd(Move.FAIL, phase, outcome=outcome, error=outcome.error, pool_machine=pool_machine)
    return Move.FAIL, store.end_attempt(settings, batch_id, task_id, attempt, final, now)


def _missing(batch_id: str, task_id: str) -> str:
    if store.get_batch(batch_id, with_counts=False) is None:
        return f"batch {batch_id} not found"
    return f"task {task_id} not found in batch {batch_id}"
