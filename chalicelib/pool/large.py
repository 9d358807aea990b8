"""Tasks too large for a pool machine: where their retries wait, and who runs them.

A pool machine has POOL_MEMORY_MB whatever the image. A pool attempt that ran out of memory
would run out again on the next pool machine, so its retry waits in the open-index's large
band (store/task_reads.py), counted in the batch's `tasks_large`, out of the pulls' reach.
Each pass then creates one single-mode machine per ready large task, sized as single mode
sizes any task: the escalated memory the attempt left (`next_memory_mb`), up to
MAX_MACHINE_MEMORY_MB. In pool mode single-mode machines run only large tasks, so any retry
of one of their attempts waits in the large band again. Deciding only: the store moves the
tasks, the spawner creates the machines.
"""

from __future__ import annotations

from ..machine_size import escalated_memory_mb
from ..phases.worker_errors import OUT_OF_MEMORY
from ..settings import Settings
from ..states import MachineMode


def retry_waits_for_large(settings: Settings, pooled: bool, error_code: str | None) -> bool:
    """Whether an attempt's retry must wait for a larger machine than a pool machine: in
    pool mode, a pool attempt that ran out of memory while a larger machine may be had, and
    any attempt that already ran on a single-mode machine."""
    if settings.machine_mode != MachineMode.POOL.value:
        return False
    if not pooled:
        return True
    return error_code == OUT_OF_MEMORY and escalated_memory_mb(settings.pool_memory_mb, settings) > settings.pool_memory_mb
