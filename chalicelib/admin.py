"""Admin actions on a batch: reset (stop it for good), retry its failed tasks (a redrive),
redeliver its final callback. The routes that call these require the admin token."""

from __future__ import annotations

from . import store
from .clock import now_ms
from .errors import ConflictError, NotFoundError
from .logs import log
from .services import Services
from .shutdown import end_in_error
from .states import RESET_ERROR, BatchStatus


def reset_batch(services: Services, batch_id: str) -> dict[str, int]:
    """Stop a batch for good (shutdown.end_in_error). A DONE batch is finished work, not
    something to stop: 409, nothing changes. Resetting an ERROR batch again closes
    whatever an interrupted reset left open."""
    batch = store.get_batch(batch_id)
    if batch is None:
        raise NotFoundError(f"batch {batch_id} not found")
    ended = end_in_error(services, batch_id, RESET_ERROR, "reset")
    if ended is None:  # fail_batch refuses a DONE batch, also one that became DONE just now
        raise ConflictError(f"batch {batch_id} is DONE; there is nothing to reset")
    log("[Batch]", "batch_reset", batch_id=batch_id, tasks_closed=ended.tasks_closed,
        machines_destroyed=ended.machines_destroyed)
    return {"tasks_closed": ended.tasks_closed, "machines_destroyed": ended.machines_destroyed}


def retry_batch(services: Services, batch_id: str) -> dict[str, int | str]:
    """Like Step Functions' redrive: the ended batch goes back to its last phase and only
    its failed tasks run again; the final callback is delivered once more at the end."""
    batch = store.get_batch(batch_id)
    if batch is None:
        raise NotFoundError(f"batch {batch_id} not found")
    if batch.status not in (BatchStatus.DONE.value, BatchStatus.ERROR.value):
        raise ConflictError(f"batch {batch_id} is {batch.status}; only a DONE or ERROR batch can be retried")
    if int(batch.tasks_failed or 0) == 0:
        raise ConflictError(f"batch {batch_id} is {batch.status} with no failed task to retry"
                            + ("; a failed final delivery is resent by /admin/redeliver"
                               if batch.status == BatchStatus.ERROR.value and batch.phase else ""))
    phase = batch.phase if batch.phase in services.registry else BatchStatus.FINALIZING.value
    now = now_ms()
    reopened = store.reopen_failed_tasks(services.settings, batch_id, phase, now)
    if reopened == 0:
        raise ConflictError(f"batch {batch_id} has no failed task of {phase} to retry")
    if not store.reopen_batch(services.settings, batch_id, phase, now, (BatchStatus.DONE.value, BatchStatus.ERROR.value)):
        raise ConflictError(f"batch {batch_id} changed while it was being retried")
    log("[Batch]", "batch_retried", batch_id=batch_id, phase=phase, tasks_reopened=reopened)
    return {"status": phase, "tasks_retried": reopened}


def redeliver_batch(services: Services, batch_id: str) -> dict[str, str]:
    """Send the final callback again for a batch whose work ended but whose delivery failed."""
    batch = store.get_batch(batch_id)
    if batch is None:
        raise NotFoundError(f"batch {batch_id} not found")
    ended = int(batch.tasks_completed or 0) + int(batch.tasks_failed or 0) >= int(batch.tasks_total or 0)
    delivery_failed = batch.delivered_at is None and int(batch.delivery_attempts or 0) > 0
    if batch.status != BatchStatus.ERROR.value or not ended or not delivery_failed:
        raise ConflictError(f"batch {batch_id} has no failed final delivery to resend")
    if not store.reopen_batch(services.settings, batch_id, BatchStatus.FINALIZING.value, now_ms(), (BatchStatus.ERROR.value,)):
        raise ConflictError(f"batch {batch_id} changed while it was being redelivered")
    log("[Batch]", "batch_redelivery", batch_id=batch_id)
    return {"status": BatchStatus.FINALIZING.value}
