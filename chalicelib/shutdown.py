"""Stopping a batch's machines, and ending a batch in ERROR: ended means ended.

Every way into ERROR (admin reset, MAX_FAILED_FRACTION, a pass that keeps failing) goes
through `end_in_error`: the batch leaves the index first (no pass claims another task),
then every open task is failed with the counters in the same transactions (so the shared
in-flight cap sees them go), then their machines are destroyed. Callbacks that arrive
later count nothing: a task's transition is conditioned on its batch still being in the
task's phase. Destroys are best effort; machines never recorded are found by name.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import store
from .clock import now_ms
from .logs import log
from .models import Machine
from .services import Services


def destroy_machines(services: Services, machine_ids: list[str], names: list[str] | tuple[()] = ()) -> int:
    """Destroy machines by id, and those known only by name; how many are gone."""
    fly = services.fly()
    ids = list(dict.fromkeys([*machine_ids, *fly.machine_ids_named(set(names))]))
    if not ids:
        return 0
    with ThreadPoolExecutor(max_workers=min(8, len(ids)), thread_name_prefix="destroy") as pool:
        return sum(pool.map(fly.destroy_machine, ids))


@dataclass(frozen=True)
class Ended:
    tasks_closed: int
    machines_destroyed: int


def end_in_error(services: Services, batch_id: str, error: str, reason: str,
                 expect_status: str | None = None) -> Ended | None:
    """-> ERROR with `error`, its open tasks failed and their machines destroyed. A batch
    already in ERROR is closed again (whatever an interrupted reset left open, harmless).
    None when nothing was done: the batch is DONE, gone, or not in `expect_status`."""
    now = now_ms()
    if not store.fail_batch(batch_id, error, now, expect_status=expect_status):
        return None
    closed = store.close_open_tasks(services.settings, batch_id, error, now)
    destroyed = destroy_machines(services, closed.machine_ids, closed.machine_names)
    stop_pool(services, batch_id, error)
    log("[Batch]", "batch_error", batch_id=batch_id, reason=reason, tasks_closed=closed.closed,
        machines=len(closed.machine_ids) + len(closed.machine_names), machines_destroyed=destroyed)
    return Ended(closed.closed, destroyed)


def destroy_retired(services: Services, machines: list[Machine]) -> int:
    """Destroy pool machines whose records were just retired: by Fly id, or by name for one
    whose creation never answered. How many are gone."""
    ids = [m.machine_id for m in machines if m.machine_id]
    names = [m.name for m in machines if not m.machine_id]
    return destroy_machines(services, ids, names) if machines else 0


def stop_pool(services: Services, batch_id: str, reason: str) -> int:
    """Retire and destroy every live pool machine of a batch (it ended, or was reset), from
    the machines' own records, not from its tasks. One created a moment before may not be in
    the (eventually consistent) index yet: its first pull finds the batch ended and is told
    to exit."""
    now = now_ms()
    retired = [m for m in store.live_machines(batch_id)
               if store.retire_machine(services.settings, batch_id, m.name, reason, now)]
    if not retired:
        return 0
    destroyed = destroy_retired(services, retired)
    log("[Pool]", "pool_stopped", batch_id=batch_id, machines=len(retired), destroyed=destroyed,
        reason=reason[:200])
    return len(retired)
