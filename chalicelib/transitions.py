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


def after_failure(attempts: int, max_attempts: int, permanent: bool = False) -> Move:
    """A failed attempt is retried while attempts remain, unless the error is permanent."""
    if permanent or attempts >= max_attempts:
        return Move.FAIL
    return Move.RETRY


def on_callback(outcome: Outcome, attempt: int, max_attempts: int) -> Move:
    """What a callback does to the attempt it reports on, if that attempt is still in flight.
    Whether it is (not late, not a duplicate) is the transaction's condition to decide."""
    if outcome.ok:
        return Move.COMPLETE
    return after_failure(attempt, max_attempts, outcome.permanent)


def phase_finished(total: int, completed: int, failed: int) -> bool:
    return completed + failed >= total
