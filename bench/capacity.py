"""DynamoDB write units per task in pool mode, and the per-batch ceilings they imply.

Run: `make bench-capacity` (or `python -m bench.capacity`). The numbers of docs/scale.md.
The items are the real code's: a batch goes through intake, a task is claimed and its
callback goes through the callback handler, all on moto in-process; each write's cost is
computed from the item before and after it (bench/item_size.py: the documented size rules,
index entries by the model's own projections). moto does not report consumed capacity,
so the units are computed, not measured; the item sizes are measured.

Pool mode as docs/pool.md has it: a claim is a transaction of the task's update, its shard's
counts item (store/counts.py) and the machine's record; a heartbeat (every 10 s a machine
holds a task) a transaction of the task's `open_due` and the machine's record; a callback
the transaction of the task, its shard's counts item, the timeline slot and one small item
(the machine's record or the in-flight counter). No claim or callback writes the batch item.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from typing import Any

from bench.item_size import IndexSpec, indexes_of, item_size_bytes, write_cost, write_units

PARTITION_WCU = 1000
PARTITION_RCU = 3000
TARGET_TASKS_PER_S = 333  # 1,000 pool machines on 3 s tasks (issue 18)
ENV = {
    "STAGE": "dev", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench", "ORCHESTRATOR_URL": "https://orchestrator.example.org",
    "FLY_API_TOKEN": "bench-token", "CALLBACK_SIGNING_KEY": "bench-signing-key", "R2_ACCOUNT_ID": "bench",
    "R2_ACCESS_KEY_ID": "bench", "R2_SECRET_ACCESS_KEY": "bench",
}
# An id the size of a ULID, and keys the size of a real archive's (directories, long names).
BATCH_ID = "01JDQ5X8Z3K2M4N6P8R0T2V4W6"
TASKS = 4
# What the readers of open-index use of a task (ready: the spawner and the pool's claim;
# timed out; close_open_tasks): everything but the attempt log and the results.
OPEN_READERS = ("batch_id", "phase", "status", "attempts", "attempts_base", "machine_id", "machine_name",
                "input_r2_key", "planned_output_key", "data", "memory_mb", "next_memory_mb")


def message(batch_id: str, tiffs: int) -> dict[str, Any]:
    prefix = f"staging/{batch_id}/"
    directory = "collections/1923 expedition/box 14/folder 03"
    files = [{"r2_key": f"{prefix}{directory}/IMG_{i:05d}_recto_master.tif",
              "logical_path": f"{directory}/IMG_{i:05d}_recto_master.tif",
              "file_name": f"IMG_{i:05d}_recto_master.tif", "file_size": 125_000_000,
              "content_type": "image/tiff"} for i in range(tiffs)]
    return {"batch_id": batch_id, "r2_prefix": prefix, "total_files": tiffs,
            "directories": [{"directory_path": directory, "processing_config": {"ocr": False,
                             "describe": False, "pinax": False}, "files": files}]}


@dataclass
class Snapshots:
    """The wire images of one task and its batch at each step of one attempt."""

    intake: dict[str, Any]
    claimed: dict[str, Any]
    completed: dict[str, Any]
    batch_before: dict[str, Any]
    batch_after: dict[str, Any]
    in_flight: dict[str, Any]
    counts_intake: dict[str, Any] | None  # the task's shard's counts item: after intake,
    counts_claimed: dict[str, Any]  # after the claim,
    counts_completed: dict[str, Any]  # after the callback


def run_attempt() -> tuple[Snapshots, Any]:
    """Intake a batch, claim one task and deliver its success callback, through the code."""
    from chalicelib import callbacks, intake, secrets, signing, store
    from chalicelib.clock import now_ms
    from chalicelib.models import (
        IN_FLIGHT_KEY,
        Batch,
        BatchCounts,
        InFlight,
        ensure_tables,
        task_counts_key,
    )
    from chalicelib.services import build_services, use_services
    from chalicelib.settings import Settings

    os.environ.update(ENV)
    secrets.forget_secrets()
    settings = Settings.from_env(ENV)
    services = build_services(settings)
    ensure_tables(settings)
    use_services(services)
    intake.handle_body(services, json.dumps(message(BATCH_ID, TASKS)), "capacity")
    phase = services.registry.first
    task = next(iter(store.iter_tasks(BATCH_ID)))
    at_intake = store.get_task(BATCH_ID, task.task_id).serialize()
    counts_key = task_counts_key(BATCH_ID, task.task_id)

    def counts_item() -> dict[str, Any]:
        return BatchCounts.get(counts_key, consistent_read=True).serialize()

    counts_intake = counts_item()
    now = now_ms()
    attempt = store.claim_task(settings, task, phase.name, phase.machine_name(task.task_id, 1),
                               now + phase.task_timeout_ms(settings), now, 2048)
    assert attempt == 1
    claimed = store.get_task(BATCH_ID, task.task_id)
    counts_claimed = counts_item()
    batch_before = Batch.get(BATCH_ID, consistent_read=True).serialize()
    out_key = task.planned_output_key or task.input_r2_key[:-4] + ".jpg"
    body = {"task_id": task.task_id, "batch_id": BATCH_ID, "status": "success", "output_r2_key": out_key,
            "output_file_name": out_key.rsplit("/", 1)[-1], "output_file_size": 18_734_112,
            "performance": {"total_time_ms": 2934, "download_time_ms": 612, "conversion_time_ms": 1877,
                            "upload_time_ms": 445}}
    token = signing.callback_token(ENV["CALLBACK_SIGNING_KEY"], BATCH_ID, task.task_id, attempt)
    result = callbacks.handle_callback(services, BATCH_ID, task.task_id, json.dumps(body).encode(), str(attempt),
                                       f"Bearer {token}")
    assert result.counted, result
    snaps = Snapshots(at_intake, claimed.serialize(), store.get_task(BATCH_ID, task.task_id).serialize(),
                      batch_before, Batch.get(BATCH_ID, consistent_read=True).serialize(),
                      InFlight.get(IN_FLIGHT_KEY).serialize(), counts_intake, counts_claimed, counts_item())
    use_services(None)
    return snaps, Batch


def full_timeline_slot() -> dict[str, Any]:
    """A batch's timeline slot after ten minutes of 12,000 completions and 120 failures a
    minute (200 tasks/s), written by timeline.count in transactions as the callbacks do."""
    from chalicelib import timeline
    from chalicelib.clock import now_ms
    from chalicelib.models import TIMELINE_SLOT_MINUTES, TimelineSlot
    from chalicelib.settings import Settings
    from chalicelib.store.dynamo import transact
    from chalicelib.transitions import Move

    settings = Settings.from_env(ENV)
    start = timeline.minute_of(now_ms()) // TIMELINE_SLOT_MINUTES * TIMELINE_SLOT_MINUTES
    for minute in range(start, start + TIMELINE_SLOT_MINUTES):
        for move in (Move.COMPLETE, Move.FAIL):
            transact(settings, lambda tx, m=minute, mv=move: timeline.count(tx, BATCH_ID, mv, m * timeline.MINUTE_MS))
    key = timeline.slot_key(BATCH_ID, start)
    TimelineSlot(key).update(actions=[getattr(TimelineSlot, f"{k}{i}").add(n) for i in range(TIMELINE_SLOT_MINUTES)
                                      for k, n in (("c", 11_999), ("f", 119))])
    return TimelineSlot.get(key, consistent_read=True).serialize()


def with_open_due(item: dict[str, Any], due: int) -> dict[str, Any]:
    return {**item, "open_due": {"N": str(due)}}


@dataclass
class TaskCost:
    """Write units one task costs where they land, under one choice of task indexes."""

    intake: float
    claim: int
    heartbeat: int
    callback: int
    detail: dict[str, Any]

    def per_task(self, heartbeats: float) -> float:
        return self.intake + self.claim + self.callback + heartbeats * self.heartbeat


def task_costs(s: Snapshots, task_model: Any, indexes: list[IndexSpec]) -> TaskCost:
    """The tasks partition's units per task: the task's writes and its index entries."""
    from chalicelib.store.intake_writes import CHUNK

    put = write_cost(None, s.intake, task_model, True, indexes)
    claim = write_cost(s.intake, s.claimed, task_model, True, indexes)
    due = int(s.claimed["open_due"]["N"])
    beat = write_cost(s.claimed, with_open_due(s.claimed, due + 10_000), task_model, True, indexes)
    done = write_cost(s.claimed, s.completed, task_model, True, indexes)
    fence = write_units(item_size_bytes(s.batch_before), True) / CHUNK  # the intake's batch fence, shared
    detail = {name: {"table": c.table, **c.indexes} for name, c in
              (("intake put", put), ("claim", claim), ("heartbeat", beat), ("callback", done))}
    detail["intake fence (batch item, per task)"] = round(fence, 2)
    return TaskCost(put.total, claim.total, beat.total, done.total, detail)


def counts_costs(s: Snapshots, counts_model: Any) -> dict[str, int]:
    """A counts item's units per task of its shard: the claim's update and the callback's,
    both in transactions (the item has no index)."""
    return {"claim": write_cost(s.counts_intake, s.counts_claimed, counts_model, True).table,
            "callback": write_cost(s.counts_claimed, s.counts_completed, counts_model, True).table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=None, help="task shards (default: the code's)")
    args = parser.parse_args(argv)

    from moto import mock_aws

    from chalicelib.models import TASK_SHARDS, BatchCounts, Task

    shards = args.shards or TASK_SHARDS
    with mock_aws():
        snaps, _ = run_attempt()
        slot = full_timeline_slot()

    print("\nItem sizes (bytes, DynamoDB's rules, items written by the code)\n")
    sizes = {"task after intake": snaps.intake, "task after claim": snaps.claimed,
             "task after completion (attempt_log, performance)": snaps.completed,
             "batch item mid-run (no claim or callback writes it)": snaps.batch_after,
             "counts item of a task shard, mid-run": snaps.counts_completed,
             "timeline slot, 10 minutes of 200 tasks/s": slot,
             "in-flight counter": snaps.in_flight}
    for name, item in sizes.items():
        print(f"{name:55} {item_size_bytes(item):6}")

    current = indexes_of(Task)
    keys = {ix.name: ix.keys for ix in current}
    options = {"the code's indexes": current,
               "both ALL (the seed)": [IndexSpec(ix.name, ix.keys, "ALL") for ix in current],
               "open ALL, status KEYS_ONLY": [IndexSpec("open-index", keys["open-index"], "ALL"),
                                              IndexSpec("status-index", keys["status-index"], "KEYS_ONLY")],
               "open INCLUDE (its readers'), status KEYS_ONLY": [
                   IndexSpec("open-index", keys["open-index"], "INCLUDE", OPEN_READERS),
                   IndexSpec("status-index", keys["status-index"], "KEYS_ONLY")]}
    print(f"\nTasks partition: write units per task in pool mode (shards: {shards}; per-partition "
          f"{PARTITION_WCU} WCU/s)\n")
    print("indexes | intake | claim | heartbeat | callback | per task, 0 / 1 / 3 heartbeats | "
          "ceiling tasks/s per batch, 0 / 1 / 3 heartbeats")
    rows = {}
    for name, indexes in options.items():
        cost = task_costs(snaps, Task, indexes)
        rows[name] = cost
        per = [cost.per_task(h) for h in (0, 1, 3)]
        ceil = [PARTITION_WCU * shards / p for p in per]
        print(f"{name} | {cost.intake} | {cost.claim} | {cost.heartbeat} | {cost.callback} | "
              f"{' / '.join(f'{p:.1f}' for p in per)} | {' / '.join(f'{c:.0f}' for c in ceil)}")
    print("\nWhere the units go (table, then each index):")
    for name, cost in rows.items():
        print(f"  {name}: {json.dumps(cost.detail)}")

    print(f"\nThe batch's own items (one item: one partition, {PARTITION_WCU} WCU/s, "
          "however the tasks are keyed)\n")
    print("item | bytes | claim | callback | per task | ceiling tasks/s per batch")
    assert snaps.batch_after == snaps.batch_before, "a callback wrote the batch item"
    print(f"batch item | {item_size_bytes(snaps.batch_after)} | 0 | 0 | 0 | - (passes and the intake's fence only)")
    cost = counts_costs(snaps, BatchCounts)
    per = cost["claim"] + cost["callback"]
    print(f"counts item (1 of {shards}, its shard's tasks) | {item_size_bytes(snaps.counts_completed)} | "
          f"{cost['claim']} | {cost['callback']} | {per} | {PARTITION_WCU * shards / per:.0f}")
    added = write_units(item_size_bytes(slot), True)
    print(f"timeline slot | {item_size_bytes(slot)} | - | {added} | {added} | {PARTITION_WCU / added:.0f}")
    print(f"\nTarget: {TARGET_TASKS_PER_S} tasks/s per batch.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
