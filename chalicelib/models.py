"""The DynamoDB items, through pynamodb: batches, tasks, and the files of each batch.

Three tables rather than one. A batch item is small, so it lives alone: DynamoDB bills
an update by the item's size, and a batch item never grows with the batch or with time
(the console's per-minute counts are TimelineSlot items beside it, the per-task counters
one BatchCounts item per task shard: docs/scale.md). Tasks are keyed
(`{batch_id}#{shard}`, task_id) so a callback reads and writes exactly one of them, and a
batch's tasks spread over TASK_SHARDS partition keys, each its own partition's share of
write capacity (docs/scale.md). Files keep the queue message's file list in message order,
one item per file, so nothing depends on a batch fitting in one 400 KB item and the final
callback is rebuilt page by page. A transaction may span tables, so counters and task
transitions still move together (design.md invariant 1). One model per table keeps each
model a plain pynamodb class with its own indexes and IAM resource.

Sparse indexes replace scans: `Batch.active` exists only while a batch has work, and
`Task.open_due` only while a task is pending or processing, holding the time it next needs
attention (its retry time, or its deadline). A tick asks "which batches are due" and
"which of this batch's tasks are due" (one query per shard) and reads nothing else.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.indexes import (
    AllProjection,
    GlobalSecondaryIndex,
    KeysOnlyProjection,
    LocalSecondaryIndex,
)
from pynamodb.models import Model

from .settings import Settings

ACTIVE = "active"
# An ended batch's place in the same index until its sweep (shutdown.sweep_ended) found no
# machine left: a partition of its own, so the passes and the batch list never see it.
SWEEPING = "sweep"
LISTED = "batch"


class ActiveIndex(GlobalSecondaryIndex["Batch"]):
    class Meta:
        index_name = "active-index"
        projection = AllProjection()

    active = UnicodeAttribute(hash_key=True)
    due_at = NumberAttribute(range_key=True)


class RecentIndex(GlobalSecondaryIndex["Batch"]):
    """Every batch by start time (the console's list). Keys only: its keys are written once,
    when the batch is created, so the callbacks' counter updates never touch the index."""

    class Meta:
        index_name = "recent-index"
        projection = KeysOnlyProjection()

    listed = UnicodeAttribute(hash_key=True)
    started_at = NumberAttribute(range_key=True)


class _LiveIndexMeta:
    index_name = "live-index"
    projection = AllProjection()


class LiveIndex(GlobalSecondaryIndex["Batch"]):
    """Declared on Batch only so that the batches table is created with it (Machine's items
    are the only ones that fill it; see MachineLiveIndex)."""

    Meta = _LiveIndexMeta
    live_batch = UnicodeAttribute(hash_key=True)
    live_seen = NumberAttribute(range_key=True)


class Batch(Model):
    class Meta:
        table_name = "arke-preprocess-batches"
        billing_mode = "PAY_PER_REQUEST"

    batch_id = UnicodeAttribute(hash_key=True)
    status = UnicodeAttribute()
    phase = UnicodeAttribute(null=True)
    active = UnicodeAttribute(null=True)
    due_at = NumberAttribute(null=True)
    active_index = ActiveIndex()
    listed = UnicodeAttribute(null=True)
    recent_index = RecentIndex()
    live_batch = UnicodeAttribute(null=True)  # never set on a batch: see LiveIndex
    live_seen = NumberAttribute(null=True)
    live_index = LiveIndex()

    tasks_total = NumberAttribute(default=0)
    # The per-task counters below (and task_ms_total/count, last_ended_at) are the sums of
    # the batch's BatchCounts items, filled in by the store's reads (store/counts.py): the
    # batch item's own are only ever set to 0.
    tasks_completed = NumberAttribute(default=0)
    tasks_failed = NumberAttribute(default=0)
    tasks_in_flight = NumberAttribute(default=0)
    # pool mode: pending tasks waiting for a larger machine than the pool's smallest (pool/large.py)
    tasks_large = NumberAttribute(null=True)
    phase_history = JSONAttribute(null=True)

    started_at = NumberAttribute()
    updated_at = NumberAttribute()
    completed_at = NumberAttribute(null=True)
    error = UnicodeAttribute(null=True)
    pass_errors = NumberAttribute(default=0)

    lease_owner = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(null=True)
    # The intake's claim (intake.py): only its owner may write the batch's files and tasks,
    # and only while the batch is in INTAKE; `intake_clean` says the items of an earlier
    # run (a restart over ERROR) must still be removed.
    intake_owner = UnicodeAttribute(null=True)
    intake_until = NumberAttribute(null=True)
    intake_clean = NumberAttribute(null=True)
    generation = NumberAttribute(default=1)

    delivery_attempts = NumberAttribute(default=0)
    delivery_generation = NumberAttribute(default=1)
    delivery_error = UnicodeAttribute(null=True)
    delivered_at = NumberAttribute(null=True)

    source = JSONAttribute(null=True)
    # When a task last ended (the callback's own update sets it): the stall metric's clock.
    # The per-minute counts are TimelineSlot items, so this item does not grow with time.
    last_ended_at = NumberAttribute(null=True)
    reopened_at = NumberAttribute(null=True)  # the last admin retry or redelivery

    # Pool mode (docs/pool.md). Counters moved by the machine records' transactions; the
    # seconds per task are summed by the success callbacks (no read) and averaged by the
    # pass, which also writes the target it chose (the pool's size per minute: TimelineSlot).
    machines_live = NumberAttribute(null=True)
    machines_created = NumberAttribute(null=True)
    machines_peak = NumberAttribute(null=True)
    pool_target = NumberAttribute(null=True)  # the smallest machines' target plus pool_tier_machines
    pool_tier_machines = NumberAttribute(null=True)  # the larger tiers' machines the last pass wanted (pool/tiers.py)
    pool_reason = UnicodeAttribute(null=True)
    task_ms_total = NumberAttribute(null=True)
    task_ms_count = NumberAttribute(null=True)
    task_ms_seen = JSONAttribute(null=True)  # {"total": .., "count": ..} the pass last averaged
    task_ms_avg = NumberAttribute(null=True)


IN_FLIGHT_KEY = "#in-flight"  # no batch id can start with '#' (ids.py)
MACHINE_KEY_PREFIX = "#machine#"


def machine_key(batch_id: str, name: str) -> str:
    return f"{MACHINE_KEY_PREFIX}{batch_id}#{name}"


class MachineLiveIndex(GlobalSecondaryIndex["Machine"]):
    """A batch's machines that are not gone, by when they were last heard from. Sparse:
    `live_batch` is removed when a machine is gone, so the index holds only live ones, and
    "silent since" is one range query. A gone machine still to be destroyed is listed under
    `{batch}#destroy` instead, by when its next destroy is due (store/machines.py)."""

    Meta = _LiveIndexMeta
    live_batch = UnicodeAttribute(hash_key=True)
    live_seen = NumberAttribute(range_key=True)


class Machine(Model):
    """A pool machine (a unit of compute), apart from the tasks it runs (units of work). It
    lives in the batches table under a key no batch id can have, with no `active` and no
    `listed`, so the batch indexes never see it."""

    class Meta:
        table_name = "arke-preprocess-batches"
        billing_mode = "PAY_PER_REQUEST"

    batch_id = UnicodeAttribute(hash_key=True)  # machine_key(batch, name)
    batch = UnicodeAttribute()
    name = UnicodeAttribute()
    state = UnicodeAttribute()  # creating, running, draining, gone (states.MachineState)
    machine_id = UnicodeAttribute(null=True)  # Fly's id, once its creation answered
    live_batch = UnicodeAttribute(null=True)
    live_seen = NumberAttribute(null=True)
    live_index = MachineLiveIndex()
    created_at = NumberAttribute()
    last_seen = NumberAttribute()
    gone_at = NumberAttribute(null=True)
    gone_reason = UnicodeAttribute(null=True)
    holding = UnicodeSetAttribute(null=True)  # task ids it holds now
    tasks_done = NumberAttribute(default=0)
    destroy_tries = NumberAttribute(null=True)  # destroys Fly did not confirm (store/machines.py)
    standing = BooleanAttribute(null=True)  # a stint of a standing machine (Standing): stopped, not destroyed
    stints = NumberAttribute(null=True)  # standing: times it was started in this batch (each counts as created)


STANDING_KEY_PREFIX = "#standing#"
STANDING_COUNT_KEY = "#standing-count"  # an InFlight item: the standing machines that exist


def standing_key(name: str) -> str:
    return f"{STANDING_KEY_PREFIX}{name}"


class StandingLiveIndex(GlobalSecondaryIndex["Standing"]):
    """The same live-index: a stopped standing machine under `#stopped` by when it stopped
    (its memory a filter), one started for a batch under `{batch}#standing`, one whose
    destroy Fly has not confirmed under `#standing#destroy` (store/standing.py)."""

    Meta = _LiveIndexMeta
    live_batch = UnicodeAttribute(hash_key=True)
    live_seen = NumberAttribute(range_key=True)


class Standing(Model):
    """A standing pool machine (docs/pool.md "Standing pool"): one Fly machine that lives
    across batches, stopped between them and started for the next. Its stints in a batch
    are `Machine` records (the batch's caps and counters); this is the Fly machine itself.
    In the batches table under a key no batch id can have, with no `active` and no `listed`."""

    class Meta:
        table_name = "arke-preprocess-batches"
        billing_mode = "PAY_PER_REQUEST"

    batch_id = UnicodeAttribute(hash_key=True)  # standing_key(name)
    name = UnicodeAttribute()
    state = UnicodeAttribute()  # states.StandingState
    machine_id = UnicodeAttribute(null=True)
    memory_mb = NumberAttribute()  # its tier
    config_version = UnicodeAttribute()  # of the config it was created or last updated with
    batch = UnicodeAttribute(null=True)  # the batch it is started for
    live_batch = UnicodeAttribute(null=True)
    live_seen = NumberAttribute(null=True)
    live_index = StandingLiveIndex()
    created_at = NumberAttribute()
    stopped_at = NumberAttribute(null=True)
    starts = NumberAttribute(default=0)
    start_failures = NumberAttribute(default=0)
    destroy_tries = NumberAttribute(null=True)
    gone_reason = UnicodeAttribute(null=True)


class InFlight(Model):
    """The machines in flight over all batches: one counter item in the batches table,
    moved in the same transaction as every claim and every end of an attempt, so the
    cap (MAX_MACHINES_IN_FLIGHT) is a condition DynamoDB checks, not a sum a tick read
    earlier (two ticks at once cannot overrun it). It has no `active`, so it never shows
    in the batch index."""

    class Meta:
        table_name = "arke-preprocess-batches"
        billing_mode = "PAY_PER_REQUEST"

    batch_id = UnicodeAttribute(hash_key=True)
    machines = NumberAttribute(default=0)


TIMELINE_SLOT_MINUTES = 10


class TimelineSlot(Model):
    """Tasks of one batch ended in each minute of one 10-minute slot (chalicelib/timeline.py):
    `c{i}` completed and `f{i}` failed in the slot's i-th minute, added to by the callback's
    own transaction (an ADD creates the item). Kept off the batch item, which every claim and
    callback writes and whose size is their cost (docs/scale.md). Key
    `#timeline#{batch_id}#{slot}` in the batches table: no batch id starts with '#'."""

    class Meta:
        table_name = "arke-preprocess-batches"
        billing_mode = "PAY_PER_REQUEST"

    batch_id = UnicodeAttribute(hash_key=True)
    for _i in range(TIMELINE_SLOT_MINUTES):
        vars()[f"c{_i}"] = NumberAttribute(null=True)
        vars()[f"f{_i}"] = NumberAttribute(null=True)
        vars()[f"p{_i}"] = NumberAttribute(null=True)  # pool mode: machines live at that minute's last pass
    del _i


COUNTS_KEY_PREFIX = "#counts#"


class BatchCounts(Model):
    """One task shard's part of a batch's per-task counters. Every claim and every end of
    an attempt adds to the counts item of its task's shard (an ADD creates it), never to the
    batch item: one item is one partition, and with every task writing the batch item a batch
    could not pass ~250 tasks a second (docs/scale.md). Readers see the sums on the Batch
    (store/counts.py); entering a phase deletes them. Key `#counts#{batch_id}#{shard}` in the
    batches table, with no `active` and no `listed`, so the batch indexes never see it."""

    class Meta:
        table_name = "arke-preprocess-batches"
        billing_mode = "PAY_PER_REQUEST"

    batch_id = UnicodeAttribute(hash_key=True)  # counts_key(batch, shard)
    tasks_completed = NumberAttribute(null=True)
    tasks_failed = NumberAttribute(null=True)
    tasks_in_flight = NumberAttribute(null=True)
    tasks_large = NumberAttribute(null=True)
    task_ms_total = NumberAttribute(null=True)
    task_ms_count = NumberAttribute(null=True)
    last_ended_at = NumberAttribute(null=True)  # the shard's: the batch's is the latest of them
    # Set when the batch ends in ERROR, removed when it is reopened or run again: no claim
    # and no end of an attempt counts while it is set (its open tasks may not be closed yet).
    closed = NumberAttribute(null=True)


# A batch's tasks are spread over this many partition keys (docs/scale.md): a table with a
# local secondary index keeps each partition key's items in one partition (~1,000 write
# units a second), which one batch's tasks alone would fill at ~56 tasks a second.
TASK_SHARDS = 16


def task_shard(task_id: str) -> int:
    """The task's shard: stable across processes and releases (not Python's salted hash)."""
    return int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:4], "big") % TASK_SHARDS


def shard_key(batch_id: str, shard: int) -> str:
    return f"{batch_id}#{shard}"  # no batch id contains '#' (ids.py)


def task_key(batch_id: str, task_id: str) -> tuple[str, str]:
    """The (hash, range) key of a task item: the only way a task is addressed."""
    return shard_key(batch_id, task_shard(task_id)), task_id


def batch_shard_keys(batch_id: str) -> list[str]:
    """Every partition key a batch's tasks live under: what a read of all of them queries."""
    return [shard_key(batch_id, n) for n in range(TASK_SHARDS)]


def counts_key(batch_id: str, shard: int) -> str:
    return f"{COUNTS_KEY_PREFIX}{batch_id}#{shard}"


def task_counts_key(batch_id: str, task_id: str) -> str:
    """The counts item a task's moves add to: its shard's (BatchCounts)."""
    return counts_key(batch_id, task_shard(task_id))


def batch_counts_keys(batch_id: str) -> list[str]:
    return [counts_key(batch_id, n) for n in range(TASK_SHARDS)]


class OpenIndex(LocalSecondaryIndex["Task"]):
    class Meta:
        index_name = "open-index"
        projection = AllProjection()

    shard_key = UnicodeAttribute(hash_key=True)
    open_due = NumberAttribute(range_key=True)


class StatusIndex(LocalSecondaryIndex["Task"]):
    class Meta:
        index_name = "status-index"
        projection = AllProjection()

    shard_key = UnicodeAttribute(hash_key=True)
    status_key = UnicodeAttribute(range_key=True)


class Task(Model):
    """One task. Keyed (`{batch_id}#{shard}`, task_id): `Task.of` / `task_key` build the key;
    `batch_id` is a plain attribute, the one the code reads."""

    class Meta:
        table_name = "arke-preprocess-tasks"
        billing_mode = "PAY_PER_REQUEST"

    shard_key = UnicodeAttribute(hash_key=True)
    task_id = UnicodeAttribute(range_key=True)
    batch_id = UnicodeAttribute()
    phase = UnicodeAttribute()
    status = UnicodeAttribute()
    status_key = UnicodeAttribute()
    open_due = NumberAttribute(null=True)
    open_index = OpenIndex()
    status_index = StatusIndex()

    attempts = NumberAttribute(default=0)
    # Attempt numbers only grow (names and callback tokens are made from them); an admin
    # retry moves the base, and MAX_RETRY_ATTEMPTS counts attempts above it.
    attempts_base = NumberAttribute(default=0)
    # One entry per attempt, keyed by its number: started, machine, ended, outcome, error.
    # Written by the same requests that move the attempt, so it costs no extra request.
    attempt_log = MapAttribute(null=True)
    input_r2_key = UnicodeAttribute()
    file_position = NumberAttribute(null=True)
    data = JSONAttribute(null=True)

    machine_id = UnicodeAttribute(null=True)
    machine_name = UnicodeAttribute(null=True)
    attempt_started_at = NumberAttribute(null=True)
    last_error = UnicodeAttribute(null=True)
    error_code = UnicodeAttribute(null=True)  # the worker's code for last_error, when it sent one
    # Machine memory (README "Machine memory"): the latest attempt's, set by its claim with
    # what the attempt after it gets should it run out; an out_of_memory end copies that
    # into next_memory_mb, which the next claim uses instead of sizing from the image.
    memory_mb = NumberAttribute(null=True)
    memory_mb_after_oom = NumberAttribute(null=True)
    next_memory_mb = NumberAttribute(null=True)

    pool_machine = UnicodeAttribute(null=True)  # the pool machine holding this attempt, if pooled
    planned_output_key = UnicodeAttribute(null=True)  # decided at intake (phases/output_keys.py)
    output_r2_key = UnicodeAttribute(null=True)  # written: set when the task completes
    output_file_name = UnicodeAttribute(null=True)
    output_file_size = NumberAttribute(null=True)
    performance = JSONAttribute(null=True)

    created_at = NumberAttribute()
    updated_at = NumberAttribute()
    ended_at = NumberAttribute(null=True)

    @classmethod
    def of(cls, batch_id: str, task_id: str, **attributes: Any) -> Task:
        """The task `task_id` of `batch_id`, keyed under its shard (an update needs only this)."""
        return cls(*task_key(batch_id, task_id), batch_id=batch_id, **attributes)


# A batch's files are spread over this many partition keys, file i under i % FILE_SHARDS:
# every file row is written in the intake's transactions (2 write units), so on one key a
# batch's intake could not pass ~500 files a second (docs/scale.md).
FILE_SHARDS = 16


def file_shard_keys(batch_id: str) -> list[str]:
    return [shard_key(batch_id, n) for n in range(FILE_SHARDS)]


class File(Model):
    """One file of the queue message, at its position in it. Keyed (`{batch_id}#{shard}`,
    position) under the table's `batch_id` key (so the table's key schema is what it was):
    `File.of` builds the key, `store.iter_files` reads the shards back in message order."""

    class Meta:
        table_name = "arke-preprocess-files"
        billing_mode = "PAY_PER_REQUEST"

    batch_id = UnicodeAttribute(hash_key=True)  # shard_key(batch, position % FILE_SHARDS)
    position = NumberAttribute(range_key=True)
    directory_path = UnicodeAttribute()
    processing_config = JSONAttribute(null=True)
    info = JSONAttribute()

    @classmethod
    def of(cls, batch_id: str, position: int, **attributes: Any) -> File:
        return cls(shard_key(batch_id, position % FILE_SHARDS), position, **attributes)


MODELS: tuple[type[Model], ...] = (Batch, Task, File)  # one per table
CLIENT_MODELS: tuple[type[Model], ...] = (*MODELS, InFlight, Machine, Standing, TimelineSlot, BatchCounts)  # each holds its own connection


def configure_models(settings: Settings) -> None:
    """Point the models at this stage's tables. The endpoint comes from botocore's own
    configuration (`AWS_ENDPOINT_URL`), so the local stack needs no branch here."""
    names = {Batch: settings.batches_table, InFlight: settings.batches_table, Machine: settings.batches_table,
             Standing: settings.batches_table, TimelineSlot: settings.batches_table,
             BatchCounts: settings.batches_table,
             Task: settings.tasks_table, File: settings.files_table}
    for model, name in names.items():
        model.Meta.table_name = name
        model.Meta.region = settings.region
        model._connection = None  # a new endpoint (AWS_ENDPOINT_URL) needs a new client


def ensure_tables(settings: Settings, wait: bool = True) -> None:
    """Create the tables that do not exist yet (the local stack and the infra command)."""
    configure_models(settings)
    for model in MODELS:
        if not model.exists():
            model.create_table(wait=wait)
