"""A batch's per-task counters live in one counts item per task shard (store/counts.py) and
its file rows under FILE_SHARDS keys (docs/scale.md): no claim or end of an attempt writes
the batch item, the sums are what the task rows say, a phase starts its counts from 0 only
on the counts it read, an ERROR stops the counting before its open tasks are closed, and
the files come back in message order."""

from __future__ import annotations

from collections import Counter

from chalicelib import store
from chalicelib.clock import now_ms
from chalicelib.models import (
    FILE_SHARDS,
    TASK_SHARDS,
    Batch,
    BatchCounts,
    File,
    batch_counts_keys,
    counts_key,
    task_shard,
)
from chalicelib.transitions import Move, Outcome

from .conftest import LambdaContext, message, sqs_event
from .test_orch_guards_races import before_first

BATCH = "batch_abc"
PHASE = "TIFF_CONVERSION"


def _batch(services, count: int) -> list:
    now = now_ms()
    store.create_batch(BATCH, {}, now, "test", 60_000)
    assert store.activate_batch(services.settings, BATCH, "test", PHASE, count, now)
    tasks = [store.new_task(BATCH, f"tiff_{i:03d}", PHASE, f"in/{i}.tif", i, None, now) for i in range(count)]
    store.write_tasks(tasks)
    return tasks


def _claim(services, task) -> int:
    attempt = store.claim_task(services.settings, task, PHASE, f"tiff-{task.task_id}", now_ms() + 60_000, now_ms())
    assert attempt == 1
    return attempt


def _complete(services, task, attempt: int = 1, took_ms: int = 3000) -> bool:
    outcome = Outcome(True, output={"output_r2_key": f"out/{task.task_id}.jpg"}, performance={"total_time_ms": took_ms})
    end = store.AttemptEnd(Move.COMPLETE, PHASE, outcome=outcome)
    return store.end_attempt(services.settings, BATCH, task.task_id, attempt, end, now_ms())


def _raw(key: str) -> BatchCounts | None:
    return next(iter(BatchCounts.batch_get([key], consistent_read=True)), None)


def test_moves_count_on_their_shards_items_and_never_on_the_batch_item(services):
    tasks = _batch(services, 48)
    before = Batch.get(BATCH, consistent_read=True).serialize()
    for task in tasks[:40]:
        _complete(services, task, _claim(services, task))
    for task in tasks[40:44]:
        _claim(services, task)
    assert Batch.get(BATCH, consistent_read=True).serialize() == before  # not written at all
    per_shard = Counter(task_shard(t.task_id) for t in tasks[:40])
    for shard in range(TASK_SHARDS):
        part = _raw(counts_key(BATCH, shard))
        assert int(part.tasks_completed or 0) == per_shard[shard]
        assert int(part.task_ms_total or 0) == 3000 * per_shard[shard]
    batch = store.get_batch(BATCH)
    assert (batch.tasks_completed, batch.tasks_in_flight, batch.tasks_failed) == (40, 4, 0)
    assert (batch.task_ms_total, batch.task_ms_count) == (120_000, 40)
    assert store.with_counts([store.get_batch(BATCH)])[0].tasks_completed == 40  # summed again, not added


def test_a_phase_advances_only_on_the_counts_it_read(services):
    tasks = _batch(services, 2)
    _complete(services, tasks[0], _claim(services, tasks[0]))
    attempt = _claim(services, tasks[1])
    stale = store.get_batch(BATCH)
    _complete(services, tasks[1], attempt)
    assert not store.advance_phase(services.settings, stale, "NEXT", 5, now_ms())  # read before the last end
    batch = store.get_batch(BATCH)
    assert store.advance_phase(services.settings, batch, "NEXT", 5, now_ms())
    after = store.get_batch(BATCH)
    assert (after.status, after.tasks_total, after.tasks_completed, after.tasks_failed) == ("NEXT", 5, 0, 0)
    assert after.phase_history[-1] == {"phase": PHASE, "total": 2, "completed": 2, "failed": 0}
    assert after.task_ms_count == 2  # the seconds per task run on over phases


def test_a_count_that_moves_during_the_advance_fails_it(services):
    """The advance read every shard's counts; a move between that read and its transaction
    makes the transaction's conditions fail, so the history never records a stale count."""
    tasks = _batch(services, 3)
    _complete(services, tasks[0], _claim(services, tasks[0]))
    _complete(services, tasks[1], _claim(services, tasks[1]))
    attempt = _claim(services, tasks[2])
    batch = store.get_batch(BATCH)
    last = counts_key(BATCH, task_shard(tasks[2].task_id))
    with before_first(services.settings, "TransactWriteItems", lambda: _complete(services, tasks[2], attempt),
                      match=last.encode()) as fired:
        assert not store.advance_phase(services.settings, batch, "NEXT", 5, now_ms())
    assert fired
    assert store.get_batch(BATCH).status == PHASE


def test_an_error_stops_the_counting_before_the_open_tasks_are_closed_and_a_reopen_resumes_it(services):
    tasks = _batch(services, 2)
    attempt = _claim(services, tasks[0])
    assert store.fail_batch(services.settings, BATCH, "stopped", now_ms(), now_ms())
    assert not _complete(services, tasks[0], attempt)  # still processing: only the counts refused
    assert store.get_task(BATCH, tasks[0].task_id).status == "processing"
    assert store.claim_task(services.settings, tasks[1], PHASE, "m", now_ms() + 60_000, now_ms()) is None
    assert store.reopen_batch(services.settings, BATCH, PHASE, now_ms(), ("ERROR",))
    assert _complete(services, tasks[0], attempt)
    assert store.get_batch(BATCH).tasks_completed == 1


def test_a_run_after_an_error_counts_from_zero(services):
    tasks = _batch(services, 2)
    _complete(services, tasks[0], _claim(services, tasks[0]))
    assert store.fail_batch(services.settings, BATCH, "stopped", now_ms(), now_ms())
    failed = store.get_batch(BATCH, with_counts=False)
    assert store.create_batch(BATCH, {}, now_ms(), "again", 60_000, replace=failed)
    assert store.activate_batch(services.settings, BATCH, "again", PHASE, 2, now_ms())
    batch = store.get_batch(BATCH)
    assert (batch.tasks_completed, batch.task_ms_total, batch.last_ended_at) == (0, 0, None)
    assert all(_raw(key).closed is None for key in batch_counts_keys(BATCH))


def test_files_spread_over_their_shards_and_read_back_in_message_order(services):
    import app

    app.intake(sqs_event(message(tiffs=30, others=5)), LambdaContext(30))
    keys = Counter(f.batch_id for f in File.scan())
    assert set(keys) == {f"{BATCH}#{n}" for n in range(FILE_SHARDS)}
    assert sum(keys.values()) == 35
    positions = [int(f.position) for f in store.iter_files(BATCH)]
    assert positions == list(range(35))


def test_a_move_takes_only_a_task_of_the_phase_it_was_read_in(services):
    """A later phase's tasks are written before the batch enters that phase: a claim or an
    end made for the phase the batch is in does not touch one of them."""
    _batch(services, 1)
    later = store.new_task(BATCH, "tiff_next", "NEXT", "in/next.tif", 0, None, now_ms())
    store.write_tasks([later])
    assert store.claim_task(services.settings, later, PHASE, "m", now_ms() + 60_000, now_ms()) is None
    assert store.claim_task(services.settings, later, "NEXT", "m", now_ms() + 60_000, now_ms()) == 1
    end = store.AttemptEnd(Move.COMPLETE, PHASE, outcome=Outcome(True, output={"output_r2_key": "o.jpg"}))
    assert not store.end_attempt(services.settings, BATCH, later.task_id, 1, end, now_ms())
    assert store.get_batch(BATCH).tasks_completed == 0
