"""moto in server mode for the local stack, with DynamoDB requests serialized.

moto's DynamoDB backend takes no lock: under concurrent requests two conditional writes
(or two TransactWriteItems) on the same item can both pass their conditions, and `ADD`
counters can lose updates. Real DynamoDB never does that, and the orchestrator's
exactly-once design (conditional transactions) relies on it. This launcher wraps every
DynamoDB request in one lock, which makes the emulated table linearizable; the other
services (SQS long polls, S3, SSM) stay concurrent.

It also makes moto's TransactWriteItems cost what DynamoDB's does: moto deep-copies every
table a transaction touches (once per item) so it can roll back, an O(table) cost per
transaction that turns a 10,000-task batch quadratic. Here a transaction backs up only the
items it touches and restores those on rollback. Everything else is `moto.server`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
import threading
from typing import Any

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
    _back_up_touched_items_only()


def _touched(backend: Any, transact_items: list[dict[str, Any]]) -> list[tuple[str, dict, dict | None]]:
    """(table, key, the item as it is now or None) for every item of a transaction."""
    backups = []
    for entry in transact_items:
        _, op = next(iter(entry.items()))
        try:
            table = backend.get_table(op["TableName"])
            key = op.get("Key")
            if key is None:
                attrs = op["Item"]
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            current = backend.get_item(op["TableName"], key)
        except Exception:  # noqa: BLE001 - moto itself will reject this item
            continue
        backups.append((op["TableName"], key, copy.deepcopy(current.to_json()["Attributes"]) if current else None))
    return backups


def _restore(backend: Any, backups: list[tuple[str, dict, dict | None]]) -> None:
    for table_name, key, attrs in reversed(backups):
        if attrs is None:
            with contextlib.suppress(Exception):  # it was never written
                backend.delete_item(table_name, key)
        else:
            backend.put_item(table_name, attrs)


def _back_up_touched_items_only() -> None:
    """Replace moto's whole-table deep copies by item-level backups (idempotent). Safe
    because every DynamoDB request runs under the one lock above."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    original = DynamoDBBackend.transact_write_items
    if getattr(original, "_arke_item_backups", False):
        return

    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        backups = _touched(self, transact_items)
        Table.__deepcopy__ = lambda table, memo: table  # moto's own backup: a no-op
        try:
            original(self, transact_items)
        except Exception:
            _restore(self, backups)
            raise
        finally:
            del Table.__deepcopy__

    transact_write_items._arke_item_backups = True  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items


def main(argv: list[str] | None = None) -> None:
    """Same arguments as `python -m moto.server` (`-H HOST -p PORT`)."""
    serialize_dynamodb()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
