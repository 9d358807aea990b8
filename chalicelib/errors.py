"""Named failures of the orchestrator, carrying what a caller needs to answer or log."""

from __future__ import annotations


class InvalidMessageError(ValueError):
    """A queue message that cannot be parsed or validated; SQS should retry, then dead-letter."""


class ManifestError(RuntimeError):
    """The manifest a message points at is missing or unreadable: the batch fails, no retry."""


class IntakeBusy(RuntimeError):
    """Another intake of the same batch holds its claim: SQS should deliver the message
    again later (by then the batch is started, or the claim has expired)."""


class InvalidCallbackError(ValueError):
    """A callback body that is malformed or does not match its path (HTTP 400)."""


class NotFoundError(LookupError):
    """An unknown batch or task (HTTP 404)."""


class UnauthorizedError(PermissionError):
    """No credential, or a callback token that does not match (HTTP 401)."""


class ForbiddenError(PermissionError):
    """A credential that is not the admin's (HTTP 403)."""


class ConflictError(RuntimeError):
    """The batch is not in a state the action applies to (HTTP 409)."""


class FlyError(RuntimeError):
    """A Fly Machines API call that failed. `status` is the HTTP status, or None for no answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FlyRateLimitedError(FlyError):
    """Fly answered 429: make no more calls of that kind for `retry_after_s` (a create
    counts no attempt)."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"Fly rate limit (429), retry after {retry_after_s:g}s", 429)
        self.retry_after_s = retry_after_s


class FlyStartRefusedError(FlyError):
    """Fly refused to start a stopped machine because of the machine or its host: 409 (the
    host cannot fit it, e.g. "insufficient memory available") or 412 (not in a startable
    state). The caller falls back to another stopped machine or a create."""


class DeliveryError(RuntimeError):
    """The final callback to the ingest service was not accepted (retried with backoff)."""

    retryable = True


class DeliveryNotConfiguredError(DeliveryError):
    """WORKER_URL is still the placeholder: no attempt is made and none would help, so the
    batch fails at once (set WORKER_URL, then redeliver)."""

    retryable = False
