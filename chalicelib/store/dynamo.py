"""The one way the store runs a transaction: which condition failed, and conflicts retried.

DynamoDB cancels a transaction for two different reasons that must not be confused. A
failed condition means another writer moved first: the caller lost the race and changes
nothing (a duplicate callback, a task already claimed). A `TransactionConflict` means
another transaction was touching one of the items at that instant (every callback of a
batch updates the batch item): nothing was decided, so the transaction is tried again.
Reporting a conflict as a lost race would drop a machine's result.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import PynamoDBException, TransactWriteError
from pynamodb.transactions import TransactWrite

from ..settings import Settings

MAX_TRANSACT_ITEMS = 100
CONFLICT_TRIES = 5
CONDITION_FAILED = "ConditionalCheckFailed"
_connection: Connection | None = None


def connection(settings: Settings) -> Connection:
    """The one connection transactions use (models keep their own, per table)."""
    global _connection
    if _connection is None or _connection.region != settings.region:
        _connection = Connection(region=settings.region)
    return _connection


def lost_race(exc: PynamoDBException) -> bool:
    """A single-item write whose condition failed."""
    code = getattr(exc, "cause_response_code", None)
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


def _reasons(exc: TransactWriteError) -> list[str | None]:
    try:
        return [r.code if r is not None else None for r in exc.cancellation_reasons]
    except (AttributeError, TypeError):
        return []


def transact(settings: Settings, build: Callable[[TransactWrite], Any]) -> list[str | None] | None:
    """Run the transaction `build` fills in. None when it was applied; otherwise the
    cancellation reason of each item, in the order `build` added them (a failed condition
    is `CONDITION_FAILED`). Conflicts are retried with jittered backoff, then raised."""
    for attempt in range(CONFLICT_TRIES):
        try:
            with TransactWrite(connection=connection(settings)) as tx:
                build(tx)
            return None
        except TransactWriteError as exc:
            if getattr(exc, "cause_response_code", None) != "TransactionCanceledException":
                raise
            reasons = _reasons(exc)
            if CONDITION_FAILED in reasons or not any(reasons):
                return reasons
            if attempt == CONFLICT_TRIES - 1:
                raise
            time.sleep(random.uniform(0.01, 0.05) * 2**attempt)
    raise AssertionError("unreachable")
