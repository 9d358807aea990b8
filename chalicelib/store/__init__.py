"""Every DynamoDB read and write of the orchestrator, one function per operation.

Each task transition and its counter changes are one TransactWriteItems, guarded by the
task's current status, attempt and phase, and by the shared cap on machines in flight (design.md invariants 1 and 3): if anything moved first,
the condition fails, the transaction changes nothing, and the caller learns it lost the
race. Nothing here decides a transition (transitions.py does) or speaks HTTP.

- `dynamo`: the transaction helper (conflict retries, which condition failed).
- `batches`: the batch item: intake claim, activation, lease, phase, delivery, ERROR.
- `counts`: a batch's per-task counters, one item per task shard, summed on read.
- `task_reads`: task reads through the sparse indexes, over a batch's shard keys.
- `tasks`: every task transition (one table of moves, `MOVES`).
- `intake_writes`: the intake's fenced writes of a batch's files and tasks.
- `machines`: pool machines' records (creating, running, draining, gone), their live-index
  and the queue of gone machines still to destroy.
"""

from .batches import (
    acquire_lease,
    activate_batch,
    advance_phase,
    claim_intake,
    create_batch,
    delivery_failed,
    delivery_succeeded,
    end_sweep,
    fail_batch,
    get_batch,
    in_flight_machines,
    list_active_batches,
    list_due_sweeps,
    raise_machines_peak,
    record_pool_pass,
    release_lease,
    reopen_batch,
)
from .counts import with_counts
from .dynamo import MAX_TRANSACT_ITEMS, connection
from .intake_writes import IntakeFenceLost, write_intake
from .machines import (
    BatchPoolFull,
    add_machine,
    destroy_failed,
    drain_machine,
    get_machine,
    live_machines,
    machine_destroyed,
    machines_to_destroy,
    next_destroy_due,
    record_machine_id,
    retire_machine,
    silent_machines,
    touch_machine,
)
from .standing import get_standing
from .task_reads import (
    LARGE_BAND,
    LARGE_OFFSET,
    PENDING_OFFSET,
    band_of,
    get_task,
    is_large,
    iter_files,
    iter_tasks,
    pending_due,
    ready_tasks,
    ready_tasks_from,
    tasks_page,
    timed_out_tasks,
)
from .tasks import (
    AttemptEnd,
    InFlightCapReached,
    MachineNotLive,
    OpenTasksClosed,
    claim_for_machine,
    claim_task,
    close_open_tasks,
    end_attempt,
    extend_attempt,
    new_task,
    record_machine,
    reopen_failed_tasks,
    unclaim_task,
    write_tasks,
)

__all__ = [
    "BatchPoolFull", "add_machine", "claim_for_machine", "destroy_failed", "drain_machine", "extend_attempt",
    "get_machine", "live_machines", "machine_destroyed", "machines_to_destroy",
    "next_destroy_due",
    "raise_machines_peak", "record_pool_pass", "record_machine_id", "retire_machine", "silent_machines", "touch_machine",
    "MAX_TRANSACT_ITEMS", "LARGE_BAND", "LARGE_OFFSET", "PENDING_OFFSET", "band_of", "is_large", "AttemptEnd", "InFlightCapReached", "IntakeFenceLost", "MachineNotLive", "OpenTasksClosed",
    "acquire_lease", "activate_batch", "advance_phase", "claim_intake", "claim_task", "close_open_tasks",
    "connection", "create_batch", "delivery_failed", "delivery_succeeded", "end_attempt", "fail_batch",
    "get_batch", "get_standing", "get_task", "in_flight_machines", "iter_files", "iter_tasks", "list_active_batches",
    "end_sweep", "list_due_sweeps",
    "new_task", "pending_due", "ready_tasks", "ready_tasks_from", "record_machine", "release_lease", "reopen_batch",
    "reopen_failed_tasks", "tasks_page", "timed_out_tasks", "unclaim_task", "with_counts", "write_intake", "write_tasks",
]
