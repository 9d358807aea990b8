"""A pool machine's two requests (docs/pool.md): pull one task, heartbeat the ones it holds.

Both need the machine's token (HMAC over batch and name, constant-time checked), so a
machine speaks only for itself and its batch. A pull claims one attempt with the same
conditional transaction as a single-mode spawn (pending -> processing, attempt + 1), so two
machines never hold one attempt; the result comes back through the callback route with that
attempt's token. A heartbeat moves the attempt's deadline on (HEARTBEAT_TIMEOUT_MS), only
while the machine still holds that attempt and is not gone: otherwise it tells the machine
to drop it. A slot told to exit retires its machine only once no other slot holds a task.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .. import signing, store
from ..clock import now_ms
from ..errors import InvalidCallbackError, NotFoundError, UnauthorizedError
from ..ids import id_problem
from ..logs import log
from ..models import Batch
from ..phases import MachineContext, Phase
from ..services import Services
from ..states import MachineState, StandingState
from ..store import standing as standing_store
from ..views import task_view_for_phase
from .large import tier_of_name

PREFIX = "[Pool]"
BATCH_CACHE_S = 1.0  # a pull's view of its batch may be this old: every claim re-checks it
PULL_TRIES = 3  # candidates a pull claims before it says wait (the others were stale)
WAIT_AFTER_LOST_MS = 200  # every candidate tried was taken through another process: pull again soon
WAIT_UNREAD_MS = 1000  # pending tasks the process's last read did not show: pull again when it is read anew
MAX_WAIT_MS = 5000
MAX_BODY_BYTES = 4096
OVER_TARGET = "pool over its target"
NO_WORK = "no work left"


def authorize(services: Services, batch_id: str, name: str, authorization: str | None) -> None:
    for value, what in ((batch_id, "batchId"), (name, "machineName")):
        problem = id_problem(value, what)
        if problem:
            raise InvalidCallbackError(problem)
    key, presented = services.secrets().get("CALLBACK_SIGNING_KEY", ""), signing.bearer(authorization)
    # a standing machine's token is over its name alone: it claims only where it holds a
    # live stint (the claim's condition), so it still speaks for itself only
    if not (signing.valid_machine_token(key, batch_id, name, presented)
            or signing.valid_standing_token(key, name, presented)):
        raise UnauthorizedError("machine token does not match this batch and machine")


def pull_standing(services: Services, name: str, authorization: str | None) -> dict[str, Any]:
    """A standing machine's first pull after it was started (it knows no batch): the pull
    of the batch its record says it was started for, with `pull_url`, that batch's route,
    for its next pulls. Not started for any batch: exit (its worker exits; Fly stops it)."""
    problem = id_problem(name, "machineName")
    if problem:
        raise InvalidCallbackError(problem)
    key = services.secrets().get("CALLBACK_SIGNING_KEY", "")
    if not signing.valid_standing_token(key, name, signing.bearer(authorization)):
        raise UnauthorizedError("machine token does not match this machine")
    record = standing_store.get_standing(name)
    if record is None:
        raise NotFoundError(f"standing machine {name} not found")
    working = (StandingState.STARTING.value, StandingState.STARTED.value)
    if record.state not in working or not record.batch:
        return {"action": "exit", "reason": f"not started for a batch ({record.state})"}
    answer = pull(services, record.batch, name, authorization)
    answer["pull_url"] = f"{services.settings.orchestrator_url}/pool/{record.batch}/machines/{name}/pull"
    return answer


def _exit(services: Services, batch_id: str, name: str, reason: str, idle_only: bool = True) -> dict[str, Any]:
    """Tell the pulling slot to stop. The machine is counted gone (it exits; Fly destroys
    it, or stops a standing one, which goes back to the stopped pool) only once no slot of
    it holds a task: with WORKER_CONCURRENCY >= 2 another slot may
    still be converting, and retiring its machine would have that task dropped. A batch
    that ended retires it whatever it holds (`idle_only=False`): nothing it does counts.
    A machine that was never made is a 404, as for any of its requests."""
    if store.retire_machine(services.settings, batch_id, name, reason, now_ms(), idle_only=idle_only):
        log(PREFIX, "machine_retired", batch_id=batch_id, machine_name=name, reason=reason)
        _back_to_the_stopped_pool(services, batch_id, name)
    elif store.get_machine(batch_id, name) is None:
        raise NotFoundError(f"machine {name} not found in batch {batch_id}")
    return {"action": "exit", "reason": reason}


def _back_to_the_stopped_pool(services: Services, batch_id: str, name: str) -> None:
    """A standing machine told to exit holding nothing: its worker exits and Fly stops it
    (no auto_destroy), so its record goes back to the stopped pool for the next batch."""
    if not services.settings.pool_standing:
        return
    record = standing_store.get_standing(name)
    if record is not None and record.batch == batch_id and standing_store.stopped(name, batch_id, now_ms()):
        log(PREFIX, "machine_stopped", batch_id=batch_id, machine_name=name, machine_id=record.machine_id)


def _shed(services: Services, batch_id: str, name: str) -> dict[str, Any] | None:
    """The pool looked over its target (a cap or the fair share shrank): this machine leaves
    it if the batch's own counters, read in the transaction, still say so, so a whole pool
    seeing one stale view sheds only its surplus. An idle machine is retired; one whose
    other slot converts drains (takes no more work). None: not surplus after all."""
    settings, now, reason = services.settings, now_ms(), OVER_TARGET
    if store.retire_machine(settings, batch_id, name, reason, now, idle_only=True, over_target=True):
        log(PREFIX, "machine_retired", batch_id=batch_id, machine_name=name, reason=reason)
        _back_to_the_stopped_pool(services, batch_id, name)
    elif store.drain_machine(settings, batch_id, name, reason, now):
        log(PREFIX, "machine_draining", batch_id=batch_id, machine_name=name, reason=reason)
    else:
        return None
    return {"action": "exit", "reason": reason}


def _batch(services: Services, batch_id: str, fresh: bool = False) -> Batch | None:
    """The batch, read at most once a second per process unless `fresh`. Pulls come dozens
    a second; a stale view costs nothing: the claim's transaction is conditioned on the
    batch being in the phase, and a batch that ended is seen within a second. Telling a
    machine there is no work left is decided on a fresh read."""
    seen = services.pulled_batches
    at, batch = seen.get(batch_id, (0.0, None))
    if fresh or time.monotonic() - at > BATCH_CACHE_S:
        batch = store.get_batch(batch_id)
        seen[batch_id] = (time.monotonic(), batch)
    return batch


def pending_for_pool(batch: Batch, tier: int = 0) -> int:
    """Tasks pending for a pool machine of `tier`, from the batch's counters (no read of
    tasks): the phase's tasks not ended nor processing, less, for the smallest machines,
    those waiting for a larger one (a larger tier's machine takes any band up to its own:
    its count is an upper bound, and its reads of the bands say the rest)."""
    pending = (int(batch.tasks_total or 0) - int(batch.tasks_completed or 0) - int(batch.tasks_failed or 0)
               - int(batch.tasks_in_flight or 0))
    return pending if tier > 0 else pending - int(batch.tasks_large or 0)


def pull(services: Services, batch_id: str, name: str, authorization: str | None) -> dict[str, Any]:
    authorize(services, batch_id, name, authorization)
    tier = tier_of_name(services.settings, name)
    batch = _batch(services, batch_id)
    if batch is not None and pending_for_pool(batch, tier) <= 0:
        batch = _batch(services, batch_id, fresh=True)  # the pool's tail: one read, no query
    phase = services.registry.get(batch.status) if batch and batch.status in services.registry else None
    if batch is None or phase is None:
        services.candidates.forget(batch_id)  # a long-lived process keeps none of ended batches
        return _exit(services, batch_id, name, f"batch is {batch.status if batch else 'gone'}", idle_only=False)
    # the target is the smallest machines' (pool/tiers.py): a larger tier's machine is no surplus
    if tier == 0 and batch.pool_target is not None and int(batch.machines_live or 0) > int(batch.pool_target):
        shed = _shed(services, batch_id, name)
        if shed is not None:
            return shed
    if pending_for_pool(batch, tier) <= 0:
        return _exit(services, batch_id, name, NO_WORK)
    return _claim_one(services, batch, phase, name, tier, now_ms())


def _claim_one(services: Services, batch: Batch, phase: Phase, name: str, tier: int, now: int) -> dict[str, Any]:
    """Claim one of the process's ready candidates (pool/candidates.py): of the machine's
    own tier's band first, then of each smaller tier's (a larger machine never idles while
    smaller work waits). The claim is conditioned on the machine not being gone, so the
    common pull reads no machine record: only one that claimed nothing is looked at
    (unknown: 404; gone: exit)."""
    settings, batch_id = services.settings, batch.batch_id
    deadline = now + min(settings.heartbeat_timeout_ms, phase.task_timeout_ms(settings))
    memory_mb = settings.pool_tiers[tier]
    tried = 0
    for band in range(tier, -1, -1):
        for _ in range(PULL_TRIES):
            task = services.candidates.take(batch_id, now, band)
            if task is None:
                break
            tried += 1
            try:
                attempt = store.claim_for_machine(settings, task, phase.name, name, deadline, now, memory_mb)
            except store.MachineNotLive:
                services.candidates.put_back(batch_id, task, band)
                return _not_live(services, batch_id, name)
            if attempt is None:
                continue
            log(phase.log_prefix, "task_pulled", batch_id=batch_id, task_id=task.task_id, attempt=attempt,
                machine_name=name, band=band or None)
            return {"action": "task", "heartbeat_interval_ms": settings.heartbeat_interval_ms,
                    "task": _assignment(services, phase, batch_id, task, attempt, name, tier, deadline, now)}
        if tried:
            break
    return _nothing_claimed(services, batch_id, name, tier, tried, now)


def _nothing_claimed(services: Services, batch_id: str, name: str, tier: int, tried: int,
                     now: int) -> dict[str, Any]:
    """No claim (which marks the machine heard from): say it was, unless it is gone or
    unknown; then wait, or exit once the fresh counters say nothing is pending."""
    if not store.touch_machine(batch_id, name, now):
        return _not_live(services, batch_id, name)
    if tried:
        return {"action": "wait", "retry_after_ms": WAIT_AFTER_LOST_MS}
    dues = [d for band in range(tier + 1) if (d := services.candidates.next_due(batch_id, band)) is not None]
    due = min(dues, default=None)
    if due is not None:  # a retry waiting out its backoff: worth staying for
        return {"action": "wait", "retry_after_ms": max(WAIT_AFTER_LOST_MS, min(MAX_WAIT_MS, due - now))}
    batch = _batch(services, batch_id, fresh=True)
    if batch is not None and pending_for_pool(batch) > 0:  # pending, but not among the last read's
        return {"action": "wait", "retry_after_ms": WAIT_UNREAD_MS}
    return _exit(services, batch_id, name, NO_WORK)


def _not_live(services: Services, batch_id: str, name: str) -> dict[str, Any]:
    """The answer to a machine that takes no more work: gone (exit), draining (exit, and
    retired once it holds nothing), or never made (404)."""
    machine = store.get_machine(batch_id, name)
    if machine is None:
        raise NotFoundError(f"machine {name} not found in batch {batch_id}")
    reason = machine.gone_reason or "machine retired"
    if machine.state == MachineState.DRAINING.value:
        return _exit(services, batch_id, name, reason)
    return {"action": "exit", "reason": reason}


def _assignment(services: Services, phase: Phase, batch_id: str, task: Any, attempt: int, name: str,
                tier: int, deadline: int, now: int) -> dict[str, Any]:
    settings = services.settings
    base = f"{settings.orchestrator_url}"
    key = services.secrets()["CALLBACK_SIGNING_KEY"]
    ctx = MachineContext(
        settings=settings, secrets=services.secrets(),
        callback_url=(f"{base}/callback/{batch_id}/{task.task_id}?attempt={attempt}&machine={name}"
                      f"&spawned={now}"),
        callback_token=signing.callback_token(key, batch_id, task.task_id, attempt),
        presign=None if settings.machine_r2_credentials else services.presign(),
        memory_mb=settings.pool_tiers[tier],
    )
    answer = phase.assignment(batch_id, task_view_for_phase(task), attempt, ctx)
    answer.update(deadline_ms=deadline, heartbeat_url=f"{base}/pool/{batch_id}/machines/{name}/heartbeat")
    if tier + 1 < len(settings.pool_tiers):  # the worker may say the image needs a larger tier
        answer["max_memory_mb"] = settings.pool_tiers[-1]
    return answer


def _held(raw: bytes | None) -> tuple[str, int]:
    if raw is None or len(raw) > MAX_BODY_BYTES:
        raise InvalidCallbackError("heartbeat body must be a JSON object under 4 KB")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidCallbackError("heartbeat body is not JSON") from None
    task_id, attempt = (body.get("task_id"), body.get("attempt")) if isinstance(body, dict) else (None, None)
    problem = id_problem(task_id, "task_id")
    if problem:
        raise InvalidCallbackError(problem)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or not 1 <= attempt < 10**6:
        raise InvalidCallbackError("attempt must be a positive integer")
    return task_id, attempt


def heartbeat(services: Services, batch_id: str, name: str, raw: bytes | None,
              authorization: str | None) -> dict[str, Any]:
    authorize(services, batch_id, name, authorization)
    task_id, attempt = _held(raw)
    phase = services.registry.for_task(task_id)
    if phase is None:
        raise NotFoundError(f"task {task_id} not found in batch {batch_id}")
    settings, now = services.settings, now_ms()
    deadline = store.extend_attempt(settings, batch_id, task_id, attempt, name, now, settings.heartbeat_timeout_ms,
                                    phase.task_timeout_ms(settings))
    if deadline is not None:
        return {"action": "continue", "deadline_ms": deadline}
    log(PREFIX, "heartbeat_dropped", batch_id=batch_id, task_id=task_id, attempt=attempt, machine_name=name)
    return {"action": "drop"}
