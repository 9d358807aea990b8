"""A pass's machines of the pool's larger memory tiers (docs/pool.md "Memory tiers").

The pool's smallest machines (POOL_MEMORY_MB) are sized by `pool_sizing.decide` from the
batch's counters. A larger tier's machines are wanted only for tasks waiting in its band
(pool/large.py says which: an attempt that ran out of memory, or a TIFF whose header needs
more): each pass counts the ready ones of each band and the tier's live machines, and
brings up what is missing: one machine for each WORKER_CONCURRENCY ready tasks, the
standing pool's stopped ones of that memory first, within what the batch cap leaves. A
tier's machines also take smaller bands' work, and, like every pool machine, exit when
no band they may take has any: a pass never retires them. Their count is part of the
batch's recorded `pool_target`, so the smallest machines do not take them for a surplus.

The reads cost a pass something only while the batch has work for a larger tier or
machines of one (`tasks_large`, and the last pass's `pool_tier_machines`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .. import store
from ..clock import now_ms
from ..logs import log
from ..models import Batch
from ..phases import Phase
from ..pool_sizing import PoolDecision
from ..services import Services
from ..spawner import SpawnReport
from ..store import standing as standing_store
from .creator import PREFIX, PoolCreator
from .large import tier_of_name

TIER_DEMAND = "tier demand"


@dataclass(frozen=True)
class TierNeed:
    tier: int
    ready: int  # tasks ready in its band
    live: int  # its machines not gone
    want: int  # the machines it should have after this pass (never fewer than live)


class TierPool:
    """One pass's larger-tier machines for one batch: `plan`, then (after the target is
    recorded) `grow`."""

    def __init__(self, services: Services, batch: Batch, token_deadline: float, pooled_batches: int = 1) -> None:
        self.services, self.settings, self.batch = services, services.settings, batch
        self.token_deadline, self.pooled_batches = token_deadline, pooled_batches
        self.needs: list[TierNeed] = []
        self.creators: list[PoolCreator] = []

    @property
    def live(self) -> int:
        return sum(need.live for need in self.needs)

    @property
    def target(self) -> int:
        return sum(need.want for need in self.needs)

    def plan(self, room: int) -> int:
        """The larger tiers' machines the batch should have after this pass, within `room`
        more machines than it has (the batch cap's); reads nothing when it cannot have any."""
        b, s = self.batch, self.settings
        if len(s.pool_tiers) == 1 or (not int(b.tasks_large or 0) and not int(b.pool_tier_machines or 0)):
            return 0
        live = Counter(tier_of_name(s, m.name) for m in store.live_machines(b.batch_id))
        now, per_machine = now_ms(), max(1, s.worker_concurrency)
        limit = s.max_pool_machines_per_batch * per_machine
        for tier in range(1, len(s.pool_tiers)):
            ready = len(store.ready_tasks(b.batch_id, now, limit, band=tier)) if int(b.tasks_large or 0) else 0
            more = min(max(0, room), max(0, -(-ready // per_machine) - live[tier]))
            room -= more
            self.needs.append(TierNeed(tier, ready, live[tier], live[tier] + more))
            if ready or live[tier]:
                log(PREFIX, "tier_sized", batch_id=b.batch_id, memory_mb=s.pool_tiers[tier], ready=ready,
                    live=live[tier], create=more or None)
        return self.target

    def grow(self, phase: Phase, capacity: int) -> SpawnReport:
        """Bring up what `plan` found missing, tier by tier: stopped machines of the tier's
        memory first, then creations (the same creator, caps and bucket as the smallest
        machines'). `capacity`: the global cap's free slots this pass has left."""
        report = SpawnReport()
        for need in self.needs:
            create = need.want - need.live
            if create <= 0 or capacity <= 0:
                continue
            creator = PoolCreator(self.services, self.batch, capacity, self.token_deadline,
                                  self.pooled_batches, tier=need.tier)
            creator.decision = PoolDecision(need.want, create, TIER_DEMAND)
            if self.settings.pool_standing:
                creator.stopped = standing_store.stopped_machines(creator.memory_mb, create)
            creator.grow(phase)
            self.creators.append(creator)
            report.spawned += creator.report.spawned
            capacity -= creator.report.spawned
        report.capacity_used = report.spawned
        return report

    def wants_more(self) -> bool:
        return any(creator.wants_more() for creator in self.creators)
