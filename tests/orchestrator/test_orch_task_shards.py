"""A batch's tasks spread over TASK_SHARDS partition keys (docs/scale.md), and every read of
"all of them" or "the oldest of them" reads every shard: the merge keeps the order, the
tasks route's tokens cross shards, closing and reopening reach every task."""

from __future__ import annotations

from collections import Counter

import pytest

from chalicelib import store
from chalicelib.clock import now_ms
from chalicelib.ddb_metrics import RequestCounter
from chalicelib.models import TASK_SHARDS, Task, shard_key, task_key, task_shard
from chalicelib.states import BatchStatus

from .conftest import list_tasks

BATCH = "batch_abc"
TASKS = 64


def _write(services, count: int = TASKS, due=None) -> list[Task]:
    """A batch in TIFF_CONVERSION with `count` pending tasks, task i due at `due(i)`."""
    now = now_ms()
    store.create_batch(BATCH, {}, now, "test", 60_000)
    assert store.activate_batch(services.settings, BATCH, "test", "TIFF_CONVERSION", count, now)
    tasks = [store.new_task(BATCH, f"tiff_{i:03d}", "TIFF_CONVERSION", f"in/{i}.tif", i, None, now)
             for i in range(count)]
    for i, task in enumerate(tasks):
        task.open_due = due(i) if due else task.open_due
    store.write_tasks(tasks)
    return tasks


def _queries(counter: RequestCounter, call):
    counter.take()
    result = call()
    return result, counter.take()["Query"]


def test_a_tasks_key_is_its_batch_and_shard(services):
    assert task_key(BATCH, "tiff_001") == (f"{BATCH}#{task_shard('tiff_001')}", "tiff_001")
    _write(services)
    stored = store.get_task(BATCH, "tiff_001")
    assert stored.shard_key == shard_key(BATCH, task_shard("tiff_001")) and stored.batch_id == BATCH
    spread = Counter(task_shard(f"tiff_{i:03d}") for i in range(TASKS))
    assert set(spread) == set(range(TASK_SHARDS))  # 64 tasks reach every one of the 16 shards
    assert sorted(t.task_id for t in store.iter_tasks(BATCH)) == [f"tiff_{i:03d}" for i in range(TASKS)]


def test_ready_tasks_are_the_oldest_over_every_shard_in_order(services):
    now = now_ms()
    _write(services, due=lambda i: store.pending_due(now - 1000 * ((i * 7) % TASKS)))  # scrambled ages
    counter = RequestCounter().attach(services.settings)
    ready, queries = _queries(counter, lambda: store.ready_tasks(BATCH, now, 10))
    ages = sorted(((i * 7) % TASKS, f"tiff_{i:03d}") for i in range(TASKS))
    assert [t.task_id for t in ready] == [name for _, name in reversed(ages[-10:])]
    assert TASK_SHARDS <= queries <= TASK_SHARDS + 4  # one page a shard, more only where the merge used it up
    everything, _ = _queries(counter, lambda: store.ready_tasks(BATCH, now, 500))
    assert len(everything) == TASKS
    assert [int(t.open_due) for t in everything] == sorted(int(t.open_due) for t in everything)
    assert store.ready_tasks(BATCH, now - 1000 * TASKS, 10) == []  # none due yet
    assert store.timed_out_tasks(BATCH, now, 10) == []  # pending tasks are not deadlines
    counter.detach()


def test_timed_out_tasks_merge_deadlines_over_the_shards(services):
    now = now_ms()
    _write(services, due=lambda i: now - 10 * i if i % 2 else now + 10 * i)  # odd: past their deadline
    late = store.timed_out_tasks(BATCH, now, 5)
    assert [t.task_id for t in late] == [f"tiff_{i:03d}" for i in range(TASKS - 1, TASKS - 11, -2)]


@pytest.mark.parametrize("limit", [1, 5, 48, 100])
def test_the_tasks_route_pages_across_shards(services, client, limit):
    _write(services)
    listed = [t["task_id"] for t in list_tasks(client, BATCH, limit=limit)]
    assert sorted(listed) == [f"tiff_{i:03d}" for i in range(TASKS)]  # each once, none missing
    assert [t["task_id"] for t in list_tasks(client, BATCH, status="pending", limit=limit)] == listed
    assert list_tasks(client, BATCH, status="failed", limit=limit) == []


def test_closing_and_reopening_reach_every_shard(services):
    _write(services)
    closed = store.close_open_tasks(services.settings, BATCH, "reset", now_ms())
    assert closed.closed == TASKS
    assert Counter(t.status for t in store.iter_tasks(BATCH, consistent_read=True)) == {"failed": TASKS}
    assert int(store.get_batch(BATCH).tasks_failed) == TASKS
    assert store.fail_batch(services.settings, BATCH, "reset", now_ms(), now_ms())
    assert store.get_batch(BATCH).status == BatchStatus.ERROR.value
    assert store.reopen_failed_tasks(services.settings, BATCH, "TIFF_CONVERSION", now_ms()) == TASKS
    assert Counter(t.status for t in store.iter_tasks(BATCH, consistent_read=True)) == {"pending": TASKS}
    assert int(store.get_batch(BATCH).tasks_failed) == 0


def test_a_pull_finds_a_ready_task_in_one_query_when_every_shard_has_some(services):
    now = now_ms()
    tasks = _write(services, due=lambda i: store.pending_due(now - i))
    counter = RequestCounter().attach(services.settings)
    for first in range(TASK_SHARDS):
        (found, _), queries = _queries(counter, lambda first=first: store.ready_tasks_from(BATCH, now, 1, first))
        assert queries == 1 and len(found) == 1 and task_shard(found[0].task_id) == first
        oldest = min((t for t in tasks if task_shard(t.task_id) == first), key=lambda t: int(t.open_due))
        assert found[0].task_id == oldest.task_id  # the oldest of that shard
    (many, next_due), _ = _queries(counter, lambda: store.ready_tasks_from(BATCH, now, TASKS + 5, 3))
    assert sorted(t.task_id for t in many) == sorted(t.task_id for t in tasks)  # every shard, each once
    assert next_due is None  # all of them ready, none to wait for
    counter.detach()


def test_a_pull_walks_on_to_the_shards_that_have_work(services):
    now = now_ms()
    only = task_shard("tiff_000")
    _write(services, due=lambda i: store.pending_due(now - 5) if task_shard(f"tiff_{i:03d}") == only
           else store.pending_due(now + 60_000))  # only one shard's tasks are due
    counter = RequestCounter().attach(services.settings)
    (found, _), queries = _queries(counter, lambda: store.ready_tasks_from(BATCH, now, 1, (only + 1) % TASK_SHARDS))
    assert len(found) == 1 and task_shard(found[0].task_id) == only and queries == TASK_SHARDS
    # nothing due anywhere: every shard asked, and the earliest due time is what they said
    assert store.ready_tasks_from(BATCH, now - 10, 1, 0) == ([], now - 5)
    counter.detach()
