"""Lifecycle states of batches and tasks, in one place (as rq's JobStatus).

A batch is `INTAKE` while its message is being written, then the name of its current phase
while it works (`TIFF_CONVERSION`, ...), then `FINALIZING` while the final callback is being delivered, then `DONE` or `ERROR`.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class BatchStatus(StrEnum):
    INTAKE = "INTAKE"  # files and tasks being written; not yet worked on
    FINALIZING = "FINALIZING"
    DONE = "DONE"
    ERROR = "ERROR"

RESET_ERROR = "Manually reset by admin"


class MachineState(StrEnum):
    """A pool machine's record (docs/pool.md): `creating` from the moment its record is
    written (before Fly is asked), `running` from its first pull, `draining` once it was
    told to take no more work while one of its slots still converts (the pool shrank),
    `gone` once it was told to exit holding nothing, was destroyed, or its creation failed."""

    CREATING = "creating"
    RUNNING = "running"
    DRAINING = "draining"
    GONE = "gone"


class StandingState(StrEnum):
    """A standing pool machine (models.Standing): `creating` until Fly answered its creation,
    `starting` once a pass took it from the stopped pool for a batch, `started` while it
    works for that batch, `stopped` between batches (only its rootfs is billed), `gone` once
    destroyed (idle too long, hung, or refused by Fly)."""

    CREATING = "creating"
    STARTING = "starting"
    STARTED = "started"
    STOPPED = "stopped"
    GONE = "gone"


class MachineMode(StrEnum):
    POOL = "pool"  # machines that pull tasks until none is left (default)
    SINGLE = "single"  # one machine per attempt, the seed's environment contract
