"""Pool machines' records: one item per machine, apart from the tasks it runs.

A record is written before Fly is asked for the machine (state `creating`), in the same
transaction as the batch's pool counter (conditioned on the per-batch cap) and the shared
machines-in-flight counter (conditioned on MAX_MACHINES_IN_FLIGHT). So both caps count
machines and are conditions DynamoDB checks, as for single-mode attempts.

A machine leaves by `retire_machine` only (told to exit holding nothing, silent, its
creation failed, its batch ended), which moves the counters back exactly once: the
record's own state is the condition. A machine told to stop while one of its slots still
converts is `draining` first (`drain_machine`): it leaves the batch's pool count at once
(the pool shrinks to its target) but keeps its in-flight slot until it really ends.
While not gone, `live_batch`/`live_seen` put it in the sparse live-index; a gone machine
that still has to be destroyed stays in that index under its batch's destroy key until
Fly confirms the destroy (`machines_to_destroy`), so a failed destroy is tried again.
"""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import DoesNotExist, UpdateError

from ..models import Batch, Machine, machine_key
from ..settings import Settings
from ..states import MachineState
from .dynamo import CONDITION_FAILED, lost_race, transact
from .tasks import InFlightCapReached, machine_takes_work, move_in_flight

LIVE_PAGE = 100


class BatchPoolFull(RuntimeError):
    """A machine refused because the batch has MAX_POOL_MACHINES_PER_BATCH live ones."""


def add_machine(settings: Settings, batch_id: str, phase: str, name: str, now: int, standing: bool = False) -> bool:
    """The record of a machine about to be created (or, `standing`, started: a standing
    machine's stint in this batch; a stint of it that ended may be replaced). False if the
    batch left `phase`; raises InFlightCapReached or BatchPoolFull when a cap is full."""
    cap = settings.max_pool_machines_per_batch
    new = Machine.batch_id.does_not_exist()

    def build(tx: Any) -> None:
        if standing:
            _new_stint(tx, batch_id, name, now, new)
        else:
            tx.save(Machine(machine_key(batch_id, name), batch=batch_id, name=name,
                            state=MachineState.CREATING.value, live_batch=batch_id, live_seen=now,
                            created_at=now, last_seen=now, tasks_done=0), condition=new)
        tx.update(Batch(batch_id),
                  actions=[Batch.machines_live.add(1), Batch.machines_created.add(1), Batch.updated_at.set(now)],
                  condition=(Batch.status == phase) & (Batch.machines_live.does_not_exist()
                                                       | (Batch.machines_live < cap)))
        move_in_flight(tx, 1, cap=settings.max_machines_in_flight)

    reasons = transact(settings, build)
    if reasons is None:
        return True
    if reasons[2] == CONDITION_FAILED and reasons[1] != CONDITION_FAILED:
        raise InFlightCapReached(f"{settings.max_machines_in_flight} machines in flight")
    if reasons[1] == CONDITION_FAILED:
        batch = Batch.get(batch_id, consistent_read=True)
        if batch.status == phase:
            raise BatchPoolFull(f"{cap} machines in the batch's pool")
    return False


def _new_stint(tx: Any, batch_id: str, name: str, now: int, new: Any) -> None:
    """A standing machine's stint: its record in the batch, made or (its earlier stint in
    this batch ended) made live again, the stint counted in `stints` so the batch's
    `machines_created` still equals what its records say (the sum of their stints)."""
    gone = (Machine.state == MachineState.GONE.value) & Machine.live_batch.does_not_exist()
    tx.update(Machine(machine_key(batch_id, name)), condition=new | gone, actions=[
        Machine.batch.set(batch_id), Machine.name.set(name), Machine.state.set(MachineState.CREATING.value),
        Machine.live_batch.set(batch_id), Machine.live_seen.set(now), Machine.created_at.set(now),
        Machine.last_seen.set(now), Machine.tasks_done.set(Machine.tasks_done | 0), Machine.standing.set(True),
        Machine.stints.add(1), Machine.gone_at.remove(), Machine.gone_reason.remove(), Machine.holding.remove(),
        Machine.destroy_tries.remove()])


def record_machine_id(batch_id: str, name: str, machine_id: str) -> None:
    """Fly's id, once its creation answered (kept after the machine is gone: a destroy
    by id needs it)."""
    Machine(machine_key(batch_id, name)).update(actions=[Machine.machine_id.set(machine_id)],
                                                condition=Machine.batch_id.exists())


def destroy_key(batch_id: str) -> str:
    """The live-index key of a batch's gone machines still to be destroyed (no batch id
    contains '#', so it never meets a batch's own live machines)."""
    return f"{batch_id}#destroy"


def touch_machine(batch_id: str, name: str, now: int) -> bool:
    """A pull that claimed nothing: heard from now, `running` from its first request. False
    once it is gone, or draining (it takes no more work)."""
    try:
        Machine(machine_key(batch_id, name)).update(
            actions=[Machine.state.set(MachineState.RUNNING.value), Machine.last_seen.set(now),
                     Machine.live_seen.set(now)],
            condition=machine_takes_work())
    except UpdateError as exc:
        if lost_race(exc):
            return False
        raise
    return True


def retire_machine(settings: Settings, batch_id: str, name: str, reason: str, now: int, *,
                   silent_before: int | None = None, idle_only: bool = False, over_target: bool = False,
                   destroy: bool = False) -> bool:
    """-> gone, its counters back once; False if it was gone already, or a condition asked
    for does not hold. With `silent_before`: only if not heard from since (the live-index
    read may be stale); `idle_only`: only while it holds no task (another slot may still
    convert); `over_target`: only while the batch's pool is above its target (read fresh,
    in the transaction: a cached view would retire the whole pool); `destroy`: the caller
    destroys it, so it stays in the destroy queue until `machine_destroyed`.

    A working machine gives back its place in the pool and its in-flight slot; a draining
    one gave the first already, so only the second moves."""
    reasons = transact(settings, lambda tx: _retire(tx, batch_id, name, reason, now, silent_before, idle_only,
                                                    over_target, destroy, draining=False))
    if reasons is None:
        return True
    if over_target or reasons[0] != CONDITION_FAILED:
        return False  # only a working machine is surplus; or the batch's condition said no
    return transact(settings, lambda tx: _retire(tx, batch_id, name, reason, now, silent_before, idle_only,
                                                 False, destroy, draining=True)) is None


def _retire(tx: Any, batch_id: str, name: str, reason: str, now: int, silent_before: int | None,
            idle_only: bool, over_target: bool, destroy: bool, draining: bool) -> None:
    working = (MachineState.CREATING.value, MachineState.RUNNING.value)
    condition = Machine.batch_id.exists() & (
        (Machine.state == MachineState.DRAINING.value) if draining else Machine.state.is_in(*working))
    if silent_before is not None:
        condition &= Machine.last_seen < silent_before
    if idle_only:
        condition &= Machine.holding.does_not_exist()  # DynamoDB drops a set its last element left
    queue = ([Machine.live_batch.set(destroy_key(batch_id)), Machine.live_seen.set(now)] if destroy
             else [Machine.live_batch.remove(), Machine.live_seen.remove()])
    tx.update(Machine(machine_key(batch_id, name)),
              actions=[Machine.state.set(MachineState.GONE.value), Machine.gone_at.set(now),
                       Machine.gone_reason.set(reason[:300]), *queue],
              condition=condition)
    batch_condition = Batch.batch_id.exists()
    if over_target:
        batch_condition &= Batch.machines_live > Batch.pool_target
    tx.update(Batch(batch_id), actions=[Batch.updated_at.set(now), *([] if draining else [Batch.machines_live.add(-1)])],
              condition=batch_condition)
    move_in_flight(tx, -1)


def drain_machine(settings: Settings, batch_id: str, name: str, reason: str, now: int) -> bool:
    """running -> draining: a surplus machine whose other slot still converts takes no more
    work. It leaves the batch's pool count now, conditioned (fresh) on the pool being above
    its target; its in-flight slot comes back when it is retired, once it holds nothing."""

    def build(tx: Any) -> None:
        tx.update(Machine(machine_key(batch_id, name)),
                  actions=[Machine.state.set(MachineState.DRAINING.value), Machine.gone_reason.set(reason[:300])],
                  condition=(Machine.state == MachineState.RUNNING.value) & Machine.holding.exists())
        tx.update(Batch(batch_id), actions=[Batch.machines_live.add(-1), Batch.updated_at.set(now)],
                  condition=Batch.machines_live > Batch.pool_target)

    return transact(settings, build) is None


def machines_to_destroy(batch_id: str, now: int, limit: int = LIVE_PAGE) -> list[Machine]:
    """Gone machines whose destroy is due (never confirmed by Fly yet)."""
    return list(Machine.live_index.query(destroy_key(batch_id), Machine.live_seen <= now, limit=limit))


def next_destroy_due(batch_id: str) -> int | None:
    """When the batch's earliest pending destroy is due; None when none is pending."""
    pending = list(Machine.live_index.query(destroy_key(batch_id), limit=1))
    return int(pending[0].live_seen) if pending else None


def machine_destroyed(batch_id: str, name: str) -> None:
    """Fly confirmed the destroy: the record leaves the destroy queue."""
    _update_gone(batch_id, name, [Machine.live_batch.remove(), Machine.live_seen.remove()])


def destroy_failed(batch_id: str, name: str, retry_at: int) -> None:
    """Fly did not confirm the destroy: try again at `retry_at`."""
    _update_gone(batch_id, name, [Machine.live_seen.set(retry_at), Machine.destroy_tries.add(1)])


def _update_gone(batch_id: str, name: str, actions: list[Any]) -> None:
    try:
        Machine(machine_key(batch_id, name)).update(
            actions=actions, condition=(Machine.state == MachineState.GONE.value)
            & (Machine.live_batch == destroy_key(batch_id)))
    except UpdateError as exc:
        if not lost_race(exc):
            raise


def get_machine(batch_id: str, name: str) -> Machine | None:
    try:
        return Machine.get(machine_key(batch_id, name), consistent_read=True)
    except DoesNotExist:
        return None


def silent_machines(batch_id: str, before: int, limit: int = LIVE_PAGE) -> list[Machine]:
    """Live machines not heard from since `before` (the index is eventually consistent: a
    machine heard from a moment ago may still show; the retire's caller checks again)."""
    return list(Machine.live_index.query(batch_id, Machine.live_seen < before, limit=limit))


def live_machines(batch_id: str) -> list[Machine]:
    return list(Machine.live_index.query(batch_id))
