"""The standing pool kept in bounds: machines of an ended batch stopped, idle ones destroyed.

- `stop_standing`: every standing machine still started for a batch that ended is stopped
  (Fly `stop`; only its rootfs is billed afterwards) and goes back to the stopped pool. One
  Fly did not stop stays under the batch's key and the batch's next sweep tries again (one
  Fly no longer knows, 404, is gone; one it refuses to stop, 412, is destroyed); one whose
  creation never answered is found by name and destroyed.
- `retire_idle`: a stopped machine idle longer than POOL_IDLE_RETENTION_S is destroyed,
  except the POOL_MIN_MACHINES most recently stopped; a destroy Fly does not confirm waits
  in the standing destroy queue and is tried again (`retry_destroys`).

The tick runs `retire_idle` with the ended batches' sweeps (every SWEEP_POLL_MS).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..backoff import exponential_ms
from ..clock import now_ms
from ..errors import FlyError
from ..logs import log
from ..models import Standing
from ..services import Services
from ..states import StandingState
from ..store import standing as standing_store

PREFIX = "[Pool]"
DESTROY_RETRY_CAP_MS = 600_000
T = TypeVar("T")


def each(items: list[T], act: Callable[[T], bool], workers: int = 8) -> list[bool]:
    """`act` on every item, a few at once (Fly calls are per machine)."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(items)), thread_name_prefix="standing") as pool:
        return list(pool.map(act, items))


def stop_standing(services: Services, batch_id: str) -> int:
    """Stop the standing machines still started for `batch_id`; how many are left to stop."""
    fly = services.fly()

    def stop(machine: Standing) -> bool:
        if not machine.machine_id:  # its creation never answered: it may exist, by name
            return _destroy_unanswered(services, machine)
        try:
            fly.stop_machine(machine.machine_id)
        except FlyError as exc:
            log(PREFIX, "stop_failed", batch_id=batch_id, machine_name=machine.name, machine_id=machine.machine_id,
                status=exc.status)
            if exc.status == 404:  # Fly no longer knows it: nothing to stop, nothing to keep
                return standing_store.standing_gone(services.settings, machine.name, "Fly does not know it (404 on stop)")
            if exc.status == 412:  # Fly will never stop it (destroyed, or stuck): not kept
                return _give_up(services, machine, batch_id)
            return False
        if standing_store.stopped(machine.name, batch_id, now_ms()):
            log(PREFIX, "machine_stopped", batch_id=batch_id, machine_name=machine.name, machine_id=machine.machine_id)
        return True

    results = each(standing_store.started_for(batch_id), stop)
    return results.count(False)


def _give_up(services: Services, machine: Standing, batch_id: str) -> bool:
    """A machine Fly refuses to stop (412: it is destroyed, or in a state a stop cannot
    leave) would be tried again at every sweep, for ever: it is destroyed instead."""
    if destroy_one(services, machine, "Fly refused to stop it (412)", batch_id=batch_id):
        log(PREFIX, "stop_given_up", batch_id=batch_id, machine_name=machine.name, machine_id=machine.machine_id)
    return True


def destroy_one(services: Services, machine: Standing, reason: str, *, expect_state: str | None = None,
                batch_id: str | None = None) -> bool:
    """-> gone (only from `expect_state`, or while it works for `batch_id`), then destroyed;
    a destroy Fly does not confirm waits in the standing destroy queue. False: the record's
    condition no longer held, nothing done."""
    if not standing_store.standing_gone(services.settings, machine.name, reason, destroy=True, now=now_ms(),
                                        expect_state=expect_state, batch_id=batch_id):
        return False
    destroy(services, [machine])
    return True


def _destroy_unanswered(services: Services, machine: Standing) -> bool:
    found = services.fly().find_machine_ids({machine.name})
    if found is None:
        return False
    if not all([services.fly().destroy_machine(i) for i in found.get(machine.name, [])]):
        return False
    standing_store.standing_gone(services.settings, machine.name, "its creation never answered")
    return True


def retire_idle(services: Services) -> int:
    """Destroy the stopped machines idle past the retention, beyond the minimum kept; how many."""
    settings, now = services.settings, now_ms()
    before = now - settings.pool_idle_retention_s * 1000
    stopped = standing_store.all_stopped(settings.pool_max_machines)
    idle = [m for m in stopped[settings.pool_min_machines:] if int(m.stopped_at or 0) < before]
    retired = [m for m in idle if standing_store.standing_gone(
        settings, m.name, f"stopped for over {settings.pool_idle_retention_s} s", destroy=True, now=now,
        expect_state=StandingState.STOPPED.value)]
    if retired:
        log(PREFIX, "idle_machines_retired", machines=len(retired), retention_s=settings.pool_idle_retention_s)
    return destroy(services, retired) + retry_destroys(services)


def retry_destroys(services: Services) -> int:
    """Destroy the gone standing machines whose earlier destroy Fly did not confirm."""
    return destroy(services, standing_store.to_destroy(now_ms()))


def destroy(services: Services, machines: list[Standing]) -> int:
    """Destroy gone standing machines by id; each confirmed leaves the destroy queue."""
    fly, now = services.fly(), now_ms()
    results = each(machines, lambda m: fly.destroy_machine(m.machine_id) if m.machine_id else True)
    for machine, gone in zip(machines, results, strict=True):
        if gone:
            standing_store.machine_destroyed(machine.name)
        else:
            tries = int(machine.destroy_tries or 0) + 1
            standing_store.destroy_failed(machine.name, now + exponential_ms(tries, DESTROY_RETRY_CAP_MS))
            log(PREFIX, "destroy_failed", machine_name=machine.name, machine_id=machine.machine_id, tries=tries)
    return sum(results)
