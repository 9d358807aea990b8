"""Standing pool machines' records (models.Standing): Fly machines that live across batches.

A standing machine is created once, stopped when its batch no longer needs it (only its
rootfs is billed then) and started again for the next batch. Its record says which batch it
is started for; each of its stints in a batch is a `Machine` record (store/machines.py),
which carries the batch's caps and counters as for any pool machine.

Every move is a conditional write on the record's state, so two passes never start one
machine for two batches: stopped -> starting (a pass took it) -> started -> stopped, and
any -> gone (destroyed). The live-index finds them: a stopped machine under `#stopped`
(newest first: the one most likely still cached on its host; its memory is a filter, so a
machine of a tier no longer configured is still found and retired), a machine started for
a batch under `{batch}#standing` (the batch's sweep stops those its end did not), a gone
one whose destroy Fly has not confirmed under `#standing#destroy`. A counter item
(`#standing-count`) holds POOL_MAX_MACHINES as a condition.
"""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import DoesNotExist, UpdateError

from ..models import STANDING_COUNT_KEY, InFlight, Standing, standing_key
from ..settings import Settings
from ..states import StandingState
from .dynamo import CONDITION_FAILED, lost_race, transact

PAGE = 100
_S = StandingState


class StandingPoolFull(RuntimeError):
    """A standing machine refused because POOL_MAX_MACHINES exist."""


STOPPED_KEY = "#stopped"
DESTROY_KEY = "#standing#destroy"


def started_key(batch_id: str) -> str:
    return f"{batch_id}#standing"


def new_standing(settings: Settings, name: str, memory_mb: int, version: str, batch_id: str, now: int) -> None:
    """The record of a standing machine about to be created for `batch_id` (before Fly is
    asked, as for any pool machine). StandingPoolFull when POOL_MAX_MACHINES exist."""
    record = Standing(standing_key(name), name=name, state=_S.CREATING.value, memory_mb=memory_mb,
                      config_version=version, batch=batch_id, live_batch=started_key(batch_id), live_seen=now,
                      created_at=now, starts=1, start_failures=0)

    def build(tx: Any) -> None:
        tx.save(record, condition=Standing.batch_id.does_not_exist())
        tx.update(InFlight(STANDING_COUNT_KEY), actions=[InFlight.machines.add(1)],
                  condition=InFlight.machines.does_not_exist() | (InFlight.machines < settings.pool_max_machines))

    reasons = transact(settings, build)
    if reasons is not None and reasons[1] == CONDITION_FAILED:
        raise StandingPoolFull(f"{settings.pool_max_machines} standing machines exist")
    if reasons is not None:
        raise RuntimeError(f"standing machine {name} exists already")


def _update(name: str, actions: list[Any], condition: Any) -> bool:
    try:
        Standing(standing_key(name)).update(actions=actions, condition=Standing.batch_id.exists() & condition)
    except UpdateError as exc:
        if lost_race(exc):
            return False
        raise
    return True


def created(name: str, machine_id: str) -> bool:
    """Fly created it (started): creating -> started, its id recorded."""
    return _update(name, [Standing.state.set(_S.STARTED.value), Standing.machine_id.set(machine_id)],
                   Standing.state == _S.CREATING.value)


def stopped_machines(memory_mb: int, limit: int) -> list[Standing]:
    """Stopped machines of one memory, the most recently stopped first."""
    if limit <= 0:
        return []
    return list(Standing.live_index.query(STOPPED_KEY, filter_condition=Standing.memory_mb == memory_mb,
                                          limit=limit, scan_index_forward=False))


def stopped_not_of(memory_mb: int, limit: int) -> list[Standing]:
    """Stopped machines of any other memory, the longest stopped first (a full pool's
    places to give: pool/places.py)."""
    return list(Standing.live_index.query(STOPPED_KEY, filter_condition=Standing.memory_mb != memory_mb,
                                          limit=limit, scan_index_forward=True))


def take_stopped(name: str, batch_id: str, now: int) -> bool:
    """stopped -> starting for `batch_id`: False when another pass took it first."""
    return _update(name, [Standing.state.set(_S.STARTING.value), Standing.batch.set(batch_id),
                          Standing.live_batch.set(started_key(batch_id)), Standing.live_seen.set(now),
                          Standing.starts.add(1)],
                   Standing.state == _S.STOPPED.value)


def start_answered(name: str, batch_id: str, version: str | None = None) -> bool:
    """Fly started it: starting -> started (with `version`: its config was updated first)."""
    actions = [Standing.state.set(_S.STARTED.value)]
    if version is not None:
        actions.append(Standing.config_version.set(version))
    return _update(name, actions, (Standing.state == _S.STARTING.value) & (Standing.batch == batch_id))


def stopped(name: str, batch_id: str | None, now: int, *, failed_start: bool = False) -> bool:
    """-> stopped, back in the pool: its batch let it go (the machine exits and Fly stops
    it, or the batch's end stopped it), or Fly refused to start it (host full: it is tried
    after every machine stopped later). With `batch_id`, only while it works for that batch."""
    condition = Standing.state.is_in(_S.STARTING.value, _S.STARTED.value)
    if batch_id is not None:
        condition &= Standing.batch == batch_id
    when = 0 if failed_start else now
    actions = [Standing.state.set(_S.STOPPED.value), Standing.batch.remove(), Standing.stopped_at.set(now),
               Standing.live_batch.set(STOPPED_KEY), Standing.live_seen.set(when)]
    if failed_start:
        actions.append(Standing.start_failures.add(1))
    return _update(name, actions, condition)


def standing_gone(settings: Settings, name: str, reason: str, destroy: bool = False, now: int = 0,
                  expect_state: str | None = None, batch_id: str | None = None) -> bool:
    """-> gone, the count of standing machines back once. `destroy`: the caller destroys it
    now, and it waits in the destroy queue until `machine_destroyed` (a destroy Fly did not
    confirm is tried again); `expect_state`: only from that state (a stopped machine being
    retired must not be one a pass just took); `batch_id`: only while it works for that
    batch (one that went back to the stopped pool, or on to another batch, is not its)."""
    queue = ([Standing.live_batch.set(DESTROY_KEY), Standing.live_seen.set(now)] if destroy
             else [Standing.live_batch.remove(), Standing.live_seen.remove()])
    condition = Standing.batch_id.exists() & (Standing.state != _S.GONE.value)
    if expect_state is not None:
        condition &= Standing.state == expect_state
    if batch_id is not None:
        condition &= Standing.batch == batch_id

    def build(tx: Any) -> None:
        tx.update(Standing(standing_key(name)),
                  actions=[Standing.state.set(_S.GONE.value), Standing.batch.remove(), *queue,
                           Standing.gone_reason.set(reason[:300])],
                  condition=condition)
        tx.update(InFlight(STANDING_COUNT_KEY), actions=[InFlight.machines.add(-1)])

    return transact(settings, build) is None


def to_destroy(now: int, limit: int = PAGE) -> list[Standing]:
    """Gone standing machines whose destroy is due."""
    return list(Standing.live_index.query(DESTROY_KEY, Standing.live_seen <= now, limit=limit))


def machine_destroyed(name: str) -> None:
    _update(name, [Standing.live_batch.remove(), Standing.live_seen.remove()],
            (Standing.state == _S.GONE.value) & (Standing.live_batch == DESTROY_KEY))


def destroy_failed(name: str, retry_at: int) -> None:
    _update(name, [Standing.live_seen.set(retry_at), Standing.destroy_tries.add(1)],
            (Standing.state == _S.GONE.value) & (Standing.live_batch == DESTROY_KEY))


def get_standing(name: str) -> Standing | None:
    try:
        return Standing.get(standing_key(name), consistent_read=True)
    except DoesNotExist:
        return None


def started_for(batch_id: str, limit: int = PAGE) -> list[Standing]:
    """Standing machines started (or starting) for a batch."""
    return list(Standing.live_index.query(started_key(batch_id), limit=limit))


def all_stopped(limit: int) -> list[Standing]:
    """Every stopped machine (up to `limit`), the most recently stopped first."""
    return list(Standing.live_index.query(STOPPED_KEY, limit=limit, scan_index_forward=False))


def standing_count() -> int:
    try:
        return int(InFlight.get(STANDING_COUNT_KEY, consistent_read=True).machines or 0)
    except DoesNotExist:
        return 0
