"""The list of batches (GET /batches, the console's left column), without a scan.

Two indexes answer it: `active-index` (the batches with work, what the tick reads anyway)
and `recent-index` (every batch by start time, newest first, keys only). A page of recent
batches is one Query for the keys and one BatchGetItem for the items; nothing here reads
a task, and nothing a callback writes touches either index's keys.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from .models import LISTED, Batch
from .store import list_active_batches, with_counts

MAX_LIMIT = 100


def recent_page(limit: int, token: str | None) -> tuple[list[Batch], str | None]:
    """One page of batches, newest first, and the token of the next page."""
    start = decode_token(token) if token else None
    result = Batch.recent_index.query(LISTED, scan_index_forward=False, limit=limit,
                                      last_evaluated_key=start)
    ids = [key.batch_id for key in result]
    found = {b.batch_id: b for b in Batch.batch_get(ids, consistent_read=True)} if ids else {}
    last = result.last_evaluated_key
    return with_counts([found[i] for i in ids if i in found]), (encode_token(last) if last else None)


def active_batches() -> list[Batch]:
    """Every batch with work, newest first (a few at a time; the tick reads the same)."""
    return with_counts(sorted(list_active_batches(), key=lambda b: -int(b.started_at or 0)))


def encode_token(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode()


def decode_token(token: str) -> dict[str, Any]:
    """Only a key this route issued: `{batch_id: S, listed: S, started_at: N}`. Anything
    else would reach DynamoDB as a malformed ExclusiveStartKey (a 500, not a 400)."""
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise ValueError("invalid next token") from None
    valid = (isinstance(key, dict) and set(key) == {"batch_id", "listed", "started_at"}
             and key["listed"] == {"S": LISTED}
             and isinstance(key["batch_id"], dict) and set(key["batch_id"]) == {"S"}
             and isinstance(key["batch_id"]["S"], str) and key["batch_id"]["S"]
             and isinstance(key["started_at"], dict) and set(key["started_at"]) == {"N"}
             and isinstance(key["started_at"]["N"], str) and key["started_at"]["N"].isdigit())
    if not valid:
        raise ValueError("invalid next token")
    return key
