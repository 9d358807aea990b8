"""moto in server mode for the local stack, with DynamoDB requests serialized.

moto's DynamoDB backend takes no lock: under concurrent requests two conditional writes
(or two TransactWriteItems) on the same item can both pass their conditions, and `ADD`
counters can lose updates. Real DynamoDB never does that, and the orchestrator's
exactly-once design (conditional transactions) relies on it. This launcher wraps every
DynamoDB request in one lock, which makes the emulated table linearizable; the other
services (SQS long polls, S3, SSM) stay concurrent. Everything else is `moto.server`.
"""

from __future__ import annotations

import functools
import sys
import threading

_DYNAMODB_LOCK = threading.RLock()


def serialize_dynamodb() -> None:
    """Make moto's DynamoDB handle one request at a time (idempotent)."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    if getattr(original, "_arke_serialized", False):
        return

    @functools.wraps(original)
    def call_action(self):
        with _DYNAMODB_LOCK:
            return original(self)

    call_action._arke_serialized = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action


def main(argv: list[str] | None = None) -> None:
    """Same arguments as `python -m moto.server` (`-H HOST -p PORT`)."""
    serialize_dynamodb()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
