"""A place in the standing pool for a machine about to be created (POOL_MAX_MACHINES).

In standing mode a created machine first writes its standing record, conditioned on fewer
than POOL_MAX_MACHINES existing. When the pool is full:

- a stopped machine of another memory gives its place: the oldest is destroyed (through
  the standing destroy queue) and the record is tried once more, so a pool full of the
  smallest machines, or of a memory no longer configured, makes room for the tier a batch
  needs now instead of stalling its tasks until POOL_IDLE_RETENTION_S;
- with none to give, a larger tier's machine is created for its batch only (destroyed at
  the batch's end, as in a pool without standing machines): a large TIFF never waits for
  the pool's smallest machines to stop;
- the smallest tier's is not created: past POOL_MAX_MACHINES that pool only starts.

After one refusal a pass's creator asks no more (`full`): each ask is a transaction.
"""

from __future__ import annotations

from ..clock import now_ms
from ..logs import log
from ..services import Services
from ..states import StandingState
from ..store import standing as standing_store
from .request import config_version
from .retention import destroy_one

PREFIX = "[Pool]"
EVICT_CANDIDATES = 5  # stopped machines of other memories read per eviction (each may be taken first)


class StandingPlaces:
    """One pass's creator's places in the standing pool, for machines of one tier."""

    def __init__(self, services: Services, batch_id: str, tier: int) -> None:
        self.services, self.settings, self.batch_id, self.tier = services, services.settings, batch_id, tier
        self.memory_mb = self.settings.pool_tiers[tier]
        self.full = False

    def place(self, name: str) -> bool | None:
        """True: `name` has a standing record (a standing machine); False: create it for the
        batch only; None: create nothing (the smallest tier's pool is full)."""
        if not self.settings.pool_standing:
            return False
        if not self.full:
            if self._record(name) or (self._evict_one() and self._record(name)):
                return True
            self.full = True
            log(PREFIX, "standing_pool_full", batch_id=self.batch_id, cap=self.settings.pool_max_machines,
                memory_mb=self.memory_mb, batch_only=self.tier > 0 or None)
        return False if self.tier > 0 else None

    def give_back(self, name: str, reason: str) -> None:
        """The machine was not made after all: its place is free again."""
        standing_store.standing_gone(self.settings, name, reason)

    def _record(self, name: str) -> bool:
        try:
            standing_store.new_standing(self.settings, name, self.memory_mb,
                                        config_version(self.settings, self.memory_mb), self.batch_id, now_ms())
        except standing_store.StandingPoolFull:
            return False
        return True

    def _evict_one(self) -> bool:
        """The oldest stopped machine of another memory destroyed, its place free; False when
        there is none (every machine is started, or of this memory)."""
        reason = f"its place in the full standing pool went to a {self.memory_mb} MB machine"
        for machine in standing_store.stopped_not_of(self.memory_mb, EVICT_CANDIDATES):
            if destroy_one(self.services, machine, reason, expect_state=StandingState.STOPPED.value):
                log(PREFIX, "standing_evicted", batch_id=self.batch_id, machine_name=machine.name,
                    machine_id=machine.machine_id, memory_mb=int(machine.memory_mb), for_memory_mb=self.memory_mb)
                return True
        return False
