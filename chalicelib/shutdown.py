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
from .backoff import exponential_ms
from .clock import now_ms
from .logs import log
from .models import Machine
from .pool.retention import DESTROY_RETRY_CAP_MS, stop_standing
from .services import Services
from .states import StandingState
from .store import standing as standing_store


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
    if not store.fail_batch(services.settings, batch_id, error, now, now + services.settings.sweep_delay_ms, expect_status=expect_status):
        return None
    closed = store.close_open_tasks(services.settings, batch_id, error, now)
    destroyed = destroy_machines(services, closed.machine_ids, closed.machine_names)
    stop_pool(services, batch_id, error)
    log("[Batch]", "batch_error", batch_id=batch_id, reason=reason, tasks_closed=closed.closed,
        machines=len(closed.machine_ids) + len(closed.machine_names), machines_destroyed=destroyed)
    return Ended(closed.closed, destroyed)


def destroy_retired(services: Services, machines: list[Machine]) -> int:
    """Destroy pool machines whose records were retired for a destroy: by Fly id, or by name
    for one whose creation never answered. A confirmed destroy takes the record out of its
    batch's destroy queue; one Fly did not confirm stays there, due again after a backoff,
    for a later pass or sweep (`retry_destroys`): a machine is never left running unbilled
    for. How many are gone."""
    machines = [m for m in machines if not m.standing or _releases_standing(services, m)]
    if not machines:
        return 0
    fly, now = services.fly(), now_ms()
    named = fly.find_machine_ids({m.name for m in machines if not m.machine_id})

    def destroy(machine: Machine) -> bool:
        if machine.machine_id:
            return fly.destroy_machine(machine.machine_id)
        ids = None if named is None else named.get(machine.name, [])
        return ids is not None and all([fly.destroy_machine(i) for i in ids])

    with ThreadPoolExecutor(max_workers=min(8, len(machines)), thread_name_prefix="destroy") as pool:
        results = list(pool.map(destroy, machines))
    for machine, gone in zip(machines, results, strict=True):
        if gone:
            store.machine_destroyed(machine.batch, machine.name)
        else:
            tries = int(machine.destroy_tries or 0) + 1
            store.destroy_failed(machine.batch, machine.name, now + exponential_ms(tries, DESTROY_RETRY_CAP_MS))
            log("[Pool]", "destroy_failed", batch_id=machine.batch, machine_name=machine.name,
                machine_id=machine.machine_id, tries=tries)
    return sum(results)


def _releases_standing(services: Services, machine: Machine) -> bool:
    """Whether a standing machine's retired stint may destroy it: only with its standing
    record gone, here (a silent machine: the record still works for the stint's batch) or
    before (a failed creation). Here, in the destroy the queue retries, because a pass
    killed between the stint's retire and the record's would leave the record started for
    an ended batch, its every stop refused by a machine the destroy removed. One the
    batch's end stopped back into the pool, or another batch started since, is kept: its
    stint leaves the destroy queue."""
    name, batch_id = machine.name, machine.batch
    if standing_store.standing_gone(services.settings, name, machine.gone_reason or "its stint was retired",
                                    batch_id=batch_id):
        return True
    record = standing_store.get_standing(name)
    if record is None or record.state == StandingState.GONE.value:
        return True
    store.machine_destroyed(batch_id, name)
    log("[Pool]", "standing_kept", batch_id=batch_id, machine_name=name, machine_id=machine.machine_id,
        state=record.state)
    return False


def retry_destroys(services: Services, batch_id: str) -> int:
    """Destroy the batch's gone machines whose earlier destroy Fly did not confirm."""
    return destroy_retired(services, store.machines_to_destroy(batch_id, now_ms()))


def stop_pool(services: Services, batch_id: str, reason: str) -> int:
    """Retire every live pool machine of a batch (it ended, or was reset), from the machines'
    own records, not from its tasks: a standing machine is stopped (it serves the next
    batch), any other destroyed. One created a moment before may not be in the (eventually
    consistent) index yet: its first pull finds the batch ended and is told to exit, and the
    batch's sweep (`sweep_ended`) looks for it once more."""
    now = now_ms()
    retired = [m for m in store.live_machines(batch_id)
               if store.retire_machine(services.settings, batch_id, m.name, reason, now, destroy=not m.standing)]
    destroyed = destroy_retired(services, [m for m in retired if not m.standing])
    unstopped = stop_standing(services, batch_id)
    if retired:
        log("[Pool]", "pool_stopped", batch_id=batch_id, machines=len(retired), destroyed=destroyed,
            stopped=sum(1 for m in retired if m.standing) - unstopped or None, reason=reason[:200])
    return len(retired)


def sweep_ended(services: Services, batch_id: str) -> int | None:
    """An ended batch, once more (store.SWEEP_DELAY_MS after its end, then as long as a
    destroy or a stop is pending): machines the end's stop did not list (one that never boots
    would hold its in-flight slot for ever) are retired and destroyed (standing ones
    stopped), and destroys and stops Fly did not confirm are tried again. When the next
    sweep is due; None once nothing is left."""
    stop_pool(services, batch_id, "batch ended")
    retry_destroys(services, batch_id)
    due = store.next_destroy_due(batch_id)
    if standing_store.started_for(batch_id, limit=1):  # a stop Fly refused: again after the error delay
        retry = now_ms() + services.settings.alarm_delay_error_retry_ms
        due = retry if due is None else min(due, retry)
    return due
