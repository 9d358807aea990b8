"""Deciding functions: given a task's state and an event, which transition follows.

Pure (no I/O) so every branch is cheap to test. `store.py` carries the decisions out, each
as one DynamoDB transaction guarded by the same facts these functions looked at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Move(StrEnum):
    COMPLETE = "complete"
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True)
class Outcome:
    """What a machine reported for its task, as its phase reads the callback."""

    ok: bool
    error: str | None = None
    permanent: bool = False
    output: dict[str, Any] = field(default_factory=dict)
    performance: dict[str, int] | None = None
    error_code: str | None = None  # the worker's machine-readable kind of failure
    needed_memory_mb: int | None = None  # needs_memory: what the image needs (pool/large.py)


def attempts_since_retry(attempt: int, base: int) -> int:
    """Attempt numbers only grow; MAX_RETRY_ATTEMPTS counts those since the last admin retry."""
    return attempt - base


def after_failure(attempts: int, max_attempts: int, permanent: bool = False) -> Move:
    """A failed attempt is retried while attempts remain, unless the error is permanent."""
    if permanent or attempts >= max_attempts:
        return Move.FAIL
    return Move.RETRY


def on_callback(outcome: Outcome) -> Move:
    """What a callback asks for its attempt. A retry is then made only while attempts
    remain; that, and whether the attempt is still in flight at all (not late, not a
    duplicate), are the transaction's conditions to decide, without a read."""
    if outcome.ok:
        return Move.COMPLETE
    return Move.FAIL if outcome.permanent else Move.RETRY


def phase_finished(total: int, completed: int, failed: int) -> bool:
    return completed + failed >= total
