"""The final callback of a batch whose work has ended: delivered at least once, retried
with backoff, then the batch ends in ERROR (its work kept; /admin/redeliver sends it again).
"""

from __future__ import annotations

from . import ingest, metrics, store
from .backoff import exponential_ms
from .clock import now_ms
from .errors import DeliveryError
from .logs import log
from .models import Batch
from .services import Services
from .shutdown import end_in_error


def deliver(services: Services, batch: Batch) -> int | None:
    """POST the file list; when the batch is next due, or None once it has ended."""
    settings, now, batch_id = services.settings, now_ms(), batch.batch_id
    attempts = int(batch.delivery_attempts or 0) + 1
    try:
        files = ingest.build_files(batch_id, services.registry)
        ingest.deliver(settings, services.http, batch_id, files, ingest.idempotency_key(batch))
    except DeliveryError as exc:
        return _delivery_failed(services, batch, attempts, str(exc), exc.retryable)
    ended = now_ms()
    if not store.delivery_succeeded(batch_id, ended, ended + settings.sweep_delay_ms):
        log("[Batch]", "delivery_superseded", batch_id=batch_id, delivery_attempts=attempts)
        return None
    seconds = round((now - int(batch.started_at)) / 1000, 3)
    log("[Batch]", "batch_done", batch_id=batch_id, files=len(files), delivery_attempts=attempts, seconds=seconds)
    metrics.emit(settings.stage, batch.phase, batch_id, DeliveryAttempts=attempts,
                 SuccessRate=metrics.percent(batch.tasks_completed, batch.tasks_total), BatchSeconds=seconds)
    return None


def _delivery_failed(services: Services, batch: Batch, attempts: int, error: str, retryable: bool) -> int | None:
    settings, now, batch_id = services.settings, now_ms(), batch.batch_id
    log("[Batch]", "delivery_failed", batch_id=batch_id, attempt=attempts, error=error)
    metrics.emit(settings.stage, batch.phase, batch_id, DeliveryFailed=1, DeliveryAttempts=attempts)
    if not retryable or attempts >= settings.max_retry_attempts:
        store.delivery_failed(batch_id, error, now, now)
        end_in_error(services, batch_id, f"Final callback failed after {attempts} attempts: {error}",
                     "delivery_exhausted")
        return None
    next_due = now + exponential_ms(attempts, settings.alarm_delay_error_retry_ms)
    store.delivery_failed(batch_id, error, next_due, now)
    return next_due
