"""Attempts past their deadline: retried or failed, and their silent machines destroyed.

A pool attempt's deadline is its last heartbeat plus HEARTBEAT_TIMEOUT_MS; its end
destroys nothing (the machine may be healthy and just slow on that one task; a machine
that went silent is found from its own record, pool/liveness.py).

A processing task's deadline sits in the sparse open-index, so a pass reads only the
tasks that timed out. A machine whose id was recorded is destroyed by id; one whose
creation was never recorded (its pass died in between) is left to be found by its name.
"""

from __future__ import annotations

from . import store
from .backoff import jittered_ms
from .clock import now_ms
from .logs import log
from .phases import Phase
from .phases.worker_errors import OUT_OF_MEMORY
from .pool.large import retry_band
from .services import Services
from .shutdown import destroy_machines
from .transitions import Outcome, after_failure, attempts_since_retry

TIMEOUT_PAGE = 100
OOM_CHECKS_PER_PASS = 10  # Get Machine requests a pass may make (Fly: 5/s, bursts of 10)


def time_out(services: Services, batch_id: str, phase: Phase, unrecorded: list[str]) -> None:
    """Retry or fail attempts past their deadline, and destroy their machines: by id, or
    (names added to `unrecorded`) by name when the creation was never recorded."""
    settings, now = services.settings, now_ms()
    silent: list[str] = []
    oom_checks = OOM_CHECKS_PER_PASS
    for task in store.timed_out_tasks(batch_id, now, TIMEOUT_PAGE):
        attempt = int(task.attempts)
        since = attempts_since_retry(attempt, int(task.attempts_base or 0))
        move = after_failure(since, settings.max_retry_attempts)
        error = (f"Timed out after {phase.task_timeout_ms(settings)} ms "
                 f"(attempt {attempt}, machine {task.machine_id or 'none'})")
        if task.pool_machine:
            error = (f"No heartbeat for {settings.heartbeat_timeout_ms} ms, or over "
                     f"{phase.task_timeout_ms(settings)} ms (attempt {attempt}, pool machine {task.pool_machine})")
        outcome = None
        if task.machine_id and oom_checks > 0:  # killed for memory? then the retry gets more
            oom_checks -= 1
            killed = services.fly().killed_for_memory(task.machine_id)
            oom_checks = 0 if killed is None else oom_checks  # Fly did not answer: stop asking
            if killed:
                error += ": the machine was killed for memory (OOM)"
                outcome = Outcome(ok=False, error=error, error_code=OUT_OF_MEMORY)
        retry_at = now + jittered_ms(since, settings.alarm_delay_error_retry_ms)
        code = outcome.error_code if outcome is not None else None
        end = store.AttemptEnd(move, phase.name, outcome=outcome, error=error, retry_at=retry_at,
                               pool_machine=task.pool_machine,
                               band=retry_band(settings, task.pool_machine, code))
        if store.end_attempt(settings, batch_id, task.task_id, attempt, end, now):
            log(phase.log_prefix, "task_timed_out", batch_id=batch_id, task_id=task.task_id,
                attempt=attempt, machine_id=task.machine_id, move=move.value, pool_machine=task.pool_machine)
            if task.pool_machine:
                continue  # a pool machine is destroyed only when it goes silent (pool/liveness.py)
            if task.machine_id:
                silent.append(task.machine_id)
            elif task.machine_name:
                unrecorded.append(task.machine_name)
    if silent:
        destroy_machines(services, silent)
