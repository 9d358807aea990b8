"""Tasks read through the sparse indexes, fanned out over a batch's shard keys.

A batch's tasks sit under TASK_SHARDS partition keys (models.shard_key; docs/scale.md):
"which are ready", "which timed out", a page of the tasks route, all walk the shards and
merge by the index's order. Nothing here writes (store/tasks.py moves tasks).
"""

from __future__ import annotations

import base64
import heapq
import itertools
import json
from collections.abc import Iterator
from typing import Any

from pynamodb.exceptions import DoesNotExist

from ..models import (
    TASK_SHARDS,
    File,
    Task,
    batch_shard_keys,
    file_shard_keys,
    shard_key,
    task_key,
    task_shard,
)

# open_due holds three kinds of time in one sparse index: a processing task's deadline as
# is, a pending task's retry time plus its band's offset. A band says which machines may
# take it: band 0 the pool's POOL_MEMORY_MB machines, band k (1..9) the pool's k-th larger
# memory tier and above (docs/pool.md "Memory tiers"), LARGE_BAND a single-mode machine
# larger than any pool machine (pool/large.py). Range queries then find "timed out" and
# "ready for band k" separately, each exactly, without reading the other kinds.
PENDING_OFFSET = 10**14
TIER_SPAN = 10**13  # a band's width: epoch milliseconds stay below it until the year 2286
LARGE_BAND = 10
LARGE_OFFSET = PENDING_OFFSET + LARGE_BAND * TIER_SPAN


def status_key(status: str, task_id: str) -> str:
    """The status-index's range key: a status's tasks are one prefix."""
    return f"{status}#{task_id}"


def band_offset(band: int) -> int:
    if not 0 <= band <= LARGE_BAND:
        raise ValueError(f"no band {band}")
    return PENDING_OFFSET + band * TIER_SPAN


def pending_due(at: int, band: int = 0) -> int:
    """A pending task's index value: its (retry) time in its band."""
    return band_offset(band) + at


def band_of(task: Task) -> int:
    """The band a pending task waits in (0 for the pool's smallest machines)."""
    due = int(task.open_due) if task.open_due is not None else 0
    return min(LARGE_BAND, max(0, (due - PENDING_OFFSET) // TIER_SPAN))


def is_large(task: Task) -> bool:
    """Whether a pending task waits for a larger machine than the pool's smallest (a larger
    tier, or a single-mode machine): counted in the batch's `tasks_large`."""
    return task.open_due is not None and int(task.open_due) >= band_offset(1)


def get_task(batch_id: str, task_id: str) -> Task | None:
    try:
        return Task.get(*task_key(batch_id, task_id), consistent_read=True)
    except DoesNotExist:
        return None


def iter_tasks(batch_id: str, consistent_read: bool = False) -> Iterator[Task]:
    """Every task of a batch, shard after shard (by task id within each)."""
    for key in batch_shard_keys(batch_id):
        yield from Task.query(key, consistent_read=consistent_read)


def iter_files(batch_id: str) -> Iterator[File]:
    """Every file of a batch in message order: its shards' queries (each by position) merged."""
    return heapq.merge(*(File.query(key) for key in file_shard_keys(batch_id)), key=lambda f: int(f.position))


def _oldest_open(batch_id: str, low: int, high: int, limit: int) -> list[Task]:
    """The `limit` tasks of lowest `open_due` in [low, high] over every shard (sparse LSI):
    one query per shard, pages of about its share of `limit`, merged by `open_due`; a shard
    is asked for a further page only when the merge has used up the one it gave."""
    if limit <= 0:
        return []
    page = -(-limit // TASK_SHARDS) + 2  # a shard's share, and a little for the unevenness of hashing
    shards = [Task.open_index.query(key, Task.open_due.between(low, high), limit=limit, page_size=page,
                                    consistent_read=True) for key in batch_shard_keys(batch_id)]
    return list(itertools.islice(heapq.merge(*shards, key=lambda t: int(t.open_due)), limit))


def timed_out_tasks(batch_id: str, now: int, limit: int) -> list[Task]:
    """Processing tasks past their deadline, oldest first."""
    return _oldest_open(batch_id, 0, now, limit)


def ready_tasks(batch_id: str, now: int, limit: int, band: int = 0) -> list[Task]:
    """Pending tasks of one band whose (retry) time has come, oldest first."""
    return _oldest_open(batch_id, pending_due(0, band), pending_due(now, band), limit)


def ready_tasks_from(batch_id: str, now: int, limit: int, first_shard: int,
                     band: int = 0) -> tuple[list[Task], int | None]:
    """Up to `limit` ready tasks of one band, with the fewest queries: shard
    `first_shard` first (oldest first within it), the next shards only while too few are
    found; and, when fewer were ready, when the earliest pending task read falls due (a
    retry waiting out its backoff), else None. For the pulls' candidates
    (pool/candidates.py), which need ready tasks, not the batch's oldest: one query when the
    shard has enough (spread the reads with a random `first_shard`), and an idle pull learns
    both "nothing ready" and "how long to wait" from the same queries."""
    found: list[Task] = []
    next_due: int | None = None
    offset = band_offset(band)
    for step in range(TASK_SHARDS):
        if len(found) >= limit:
            break
        key = shard_key(batch_id, (first_shard + step) % TASK_SHARDS)
        for task in Task.open_index.query(key, Task.open_due.between(offset, offset + TIER_SPAN - 1),
                                          limit=limit - len(found), consistent_read=True):
            due = int(task.open_due) - offset
            if due > now:  # the rest of the shard falls due later still
                next_due = due if next_due is None else min(next_due, due)
                break
            found.append(task)
    return found, None if len(found) >= limit else next_due


def tasks_page(batch_id: str, status: str | None, limit: int, token: str | None) -> tuple[list[Task], str | None]:
    """One page of a batch's tasks, by status through the status index when asked: shard
    after shard, the next token saying which shard to go on in and from which key."""
    shard, start = _decode_token(token, batch_id, status) if token else (0, None)
    items: list[Task] = []
    while shard < TASK_SHARDS and len(items) < limit:
        key = shard_key(batch_id, shard)
        if status:
            result = Task.status_index.query(key, Task.status_key.startswith(f"{status}#"),
                                             limit=limit - len(items), last_evaluated_key=start)
        else:
            result = Task.query(key, limit=limit - len(items), last_evaluated_key=start)
        items += list(result)
        start = result.last_evaluated_key
        if not start:
            shard += 1
    if shard >= TASK_SHARDS:
        return items, None
    return items, _encode_token(shard, start, status)


def _encode_token(shard: int, key: dict[str, Any] | None, status: str | None) -> str:
    body = {"shard": shard, "key": key, "status": status}
    return base64.urlsafe_b64encode(json.dumps(body, sort_keys=True).encode()).decode()


def _decode_token(token: str, batch_id: str, status: str | None) -> tuple[int, dict[str, Any] | None]:
    """The shard and start key of a token this route issued for this batch and status."""
    try:
        body = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise ValueError("invalid next token") from None
    if not isinstance(body, dict) or set(body) != {"shard", "key", "status"} or body["status"] != status:
        raise ValueError("invalid next token")
    shard, key = body["shard"], body["key"]
    if type(shard) is not int or not 0 <= shard < TASK_SHARDS or not (key is None or isinstance(key, dict)):
        raise ValueError("invalid next token")
    if key is not None:
        _check_start_key(key, batch_id, shard, status)
    return shard, key


def _check_start_key(key: dict[str, Any], batch_id: str, shard: int, status: str | None) -> None:
    """A token is only ever one this route issued for this batch, shard and status: anything
    else would reach DynamoDB as a malformed ExclusiveStartKey (a 500, not a 400)."""
    names = {"shard_key", "task_id"} | ({"status_key"} if status else set())
    values = {name: value.get("S") if isinstance(value, dict) and set(value) == {"S"} else None
              for name, value in key.items()}
    if (set(values) != names or not all(isinstance(v, str) and v for v in values.values())
            or values["shard_key"] != shard_key(batch_id, shard) or task_shard(values["task_id"]) != shard
            or (status and values["status_key"] != status_key(status, values["task_id"]))):
        raise ValueError("invalid next token")
