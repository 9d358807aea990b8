"""Pool machines' records: one item per machine, apart from the tasks it runs.

A record is written before Fly is asked for the machine (state `creating`), in the same
transaction as the batch's pool counter (conditioned on the per-batch cap) and the shared
machines-in-flight counter (conditioned on MAX_MACHINES_IN_FLIGHT). So both caps count
machines and are conditions DynamoDB checks, as for single-mode attempts. A machine leaves
by `retire_machine` only (told to exit, destroyed as silent, its creation failed, its
batch ended), which moves both counters back exactly once: the record's own state is the
condition. While live, `live_batch`/`live_seen` put it in the sparse live-index.
"""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import DoesNotExist, UpdateError

from ..models import Batch, Machine, machine_key
from ..settings import Settings
from ..states import MachineState
from .dynamo import CONDITION_FAILED, lost_race, transact
from .tasks import InFlightCapReached, machine_not_gone, move_in_flight

LIVE_PAGE = 100


class BatchPoolFull(RuntimeError):
    """A machine refused because the batch has MAX_POOL_MACHINES_PER_BATCH live ones."""


def add_machine(settings: Settings, batch_id: str, phase: str, name: str, now: int) -> bool:
    """The record of a machine about to be created. False if the batch left `phase`;
    raises InFlightCapReached or BatchPoolFull when a cap is full."""
    record = Machine(machine_key(batch_id, name), batch=batch_id, name=name, state=MachineState.CREATING.value,
                     live_batch=batch_id, live_seen=now, created_at=now, last_seen=now, tasks_done=0)
    cap = settings.max_pool_machines_per_batch

    def build(tx: Any) -> None:
        tx.save(record, condition=Machine.batch_id.does_not_exist())
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


def record_machine_id(batch_id: str, name: str, machine_id: str) -> None:
    """Fly's id, once its creation answered (kept after the machine is gone: a destroy
    by id needs it)."""
    Machine(machine_key(batch_id, name)).update(actions=[Machine.machine_id.set(machine_id)],
                                                condition=Machine.batch_id.exists())


def touch_machine(batch_id: str, name: str, now: int) -> bool:
    """Heard from: last seen now, `running` from its first request. False once it is gone."""
    try:
        Machine(machine_key(batch_id, name)).update(
            actions=[Machine.state.set(MachineState.RUNNING.value), Machine.last_seen.set(now),
                     Machine.live_seen.set(now)],
            condition=machine_not_gone())
    except UpdateError as exc:
        if lost_race(exc):
            return False
        raise
    return True


def retire_machine(settings: Settings, batch_id: str, name: str, reason: str, now: int,
                   silent_before: int | None = None) -> bool:
    """-> gone, both counters back; False if it was gone already (counted once), or, with
    `silent_before`, if it was heard from since (the live-index read may be stale)."""
    condition = machine_not_gone()
    if silent_before is not None:
        condition &= Machine.last_seen < silent_before

    def build(tx: Any) -> None:
        tx.update(Machine(machine_key(batch_id, name)),
                  actions=[Machine.state.set(MachineState.GONE.value), Machine.live_batch.remove(),
                           Machine.live_seen.remove(), Machine.gone_at.set(now),
                           Machine.gone_reason.set(reason[:300])],
                  condition=condition)
        tx.update(Batch(batch_id), actions=[Batch.machines_live.add(-1), Batch.updated_at.set(now)],
                  condition=Batch.batch_id.exists())
        move_in_flight(tx, -1)

    return transact(settings, build) is None


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
