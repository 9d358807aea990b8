"""A pass's pool: how many machines the batch should have now, and creating the missing ones.

The size comes from `pool_sizing.decide` (pure): the ready and running tasks, the create
rate this batch may use, the observed seconds per task and the caps. Each creation takes a
token (the shared bucket and 429 gate), then, in standing mode, a place in the standing
pool (pool/places.py), then writes the machine's record (both caps are conditions of that
transaction), then asks Fly. A creation that failed or was refused is retired at once; one
that may have happened unanswered (timeout, 5xx) waits in the batch's destroy queue and is
destroyed by name (shutdown.retry_destroys). When the pool still wants machines at the end
of the pass's slice, the batch is due again at once, so creations run at the bucket's rate.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from .. import pool_sizing, store
from ..clock import now_ms
from ..errors import FlyError, FlyRateLimitedError
from ..logs import log
from ..models import Batch, Standing
from ..phases import Phase
from ..services import Services
from ..settings import SettingsError
from ..spawner import SpawnReport
from ..store import standing as standing_store
from .large import tier_name_part
from .places import StandingPlaces
from .request import pool_machine_request, standing_machine_request
from .standing import StandingStarter

PREFIX = "[Pool]"


class PoolCreator:
    def __init__(self, services: Services, batch: Batch, capacity: int, token_deadline: float,
                 pooled_batches: int = 1, tier: int = 0) -> None:
        self.services, self.settings, self.batch = services, services.settings, batch
        self.capacity, self.token_deadline = capacity, token_deadline
        self.pooled_batches = max(1, pooled_batches)
        self.report = SpawnReport()
        self.refused = False  # a cap said no, or the batch left its phase: stop this pass's creations
        self.decision: pool_sizing.PoolDecision | None = None
        self.tier = tier  # the memory tier it creates (pool/tiers.py sizes the larger ones)
        self.memory_mb = self.settings.pool_tiers[tier]
        self.places = StandingPlaces(services, batch.batch_id, tier)  # standing records, POOL_MAX_MACHINES
        # the batch's machines of larger tiers, live and wanted (pool/tiers.py): not this pool's,
        # and first in the batch cap (only they may take their tasks)
        self.tier_live = self.tier_target = 0
        self.stopped: list[Standing] = []  # the standing pool's stopped machines this pass may start
        self.started = 0
        self._lock = threading.Lock()

    @property
    def batch_id(self) -> str:
        return self.batch.batch_id

    def wants_more(self) -> bool:
        """Machines were wanted that this pass could not create (its slice ran out)."""
        return self.decision is not None and self.report.spawned < self.decision.create and not self.refused

    def inputs(self, task_ms: float) -> pool_sizing.PoolInputs:
        b, s = self.batch, self.settings
        total, done, failed = int(b.tasks_total or 0), int(b.tasks_completed or 0), int(b.tasks_failed or 0)
        running, live = int(b.tasks_in_flight or 0), max(0, int(b.machines_live or 0) - self.tier_live)
        large = int(b.tasks_large or 0)  # pending, but for a larger machine (pool/large.py)
        others = max(0, s.max_machines_in_flight - self.capacity - int(b.machines_live or 0))
        return pool_sizing.PoolInputs(
            ready=max(0, total - done - failed - running - large), running=running, live=live,
            stopped=len(self.stopped), start_s=s.pool_start_ms / 1000,
            task_s=task_ms / 1000, create_rate=s.fly_create_rate / self.pooled_batches,
            boot_s=s.pool_boot_ms / 1000, per_machine=s.worker_concurrency,
            batch_cap=max(0, s.max_pool_machines_per_batch - self.tier_target), free_slots=self.capacity,
            fair_share=pool_sizing.fair_share(s.max_machines_in_flight, self.pooled_batches, live, others))

    def size(self, task_ms: float) -> pool_sizing.PoolDecision:
        """This pass's target (pool_sizing.decide), logged. The caller records it before
        `grow` creates anything: pulls compare the pool with the recorded target, and a
        target recorded after the creations would have the new machines' count taken for
        a surplus by every pull meanwhile."""
        settings = self.settings
        if not settings.orchestrator_url:
            raise SettingsError("ORCHESTRATOR_URL is not set; pool machines could not pull work")
        if not self.services.secrets().get("CALLBACK_SIGNING_KEY"):
            raise SettingsError("CALLBACK_SIGNING_KEY is not set; pool machines need it for their tokens")
        if settings.pool_standing and self._has_ready():
            self.stopped = standing_store.stopped_machines(self.memory_mb, settings.max_pool_machines_per_batch)
        inputs = self.inputs(task_ms)
        decision = self.decision = pool_sizing.decide(inputs)
        log(PREFIX, "pool_sized", batch_id=self.batch_id, target=decision.target, live=inputs.live,
            create=decision.create, reason=decision.reason, ready=inputs.ready, running=inputs.running,
            stopped=inputs.stopped or None, task_ms=round(task_ms))
        return decision

    def _has_ready(self) -> bool:
        """Whether the pool may grow at all: tasks pending for it (else no stopped machine is read)."""
        b = self.batch
        return (int(b.tasks_total or 0) - int(b.tasks_completed or 0) - int(b.tasks_failed or 0)
                - int(b.tasks_in_flight or 0) - int(b.tasks_large or 0)) > 0

    def grow(self, phase: Phase) -> None:
        """Bring up the machines `size` decided: the standing pool's stopped ones first (a
        start is limited per machine, not per app: all at once), then creations under the
        bucket, the gate and both caps."""
        want = self.decision.create if self.decision is not None else 0
        if want > 0 and self.stopped:
            starter = StandingStarter(self.services, self.batch_id, phase, self.memory_mb)
            self.started = starter.start(self.stopped, want, self._count_started)
            self.refused |= starter.report.capped
        create = want - self.started
        if create > 0 and not self.refused:
            workers = min(self.settings.spawn_concurrency, create)
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pool") as pool:
                list(pool.map(lambda _: self.create_one(phase), range(create)))
        self.report.capacity_used = self.report.spawned

    def _count_started(self) -> None:
        with self._lock:
            self.report.spawned += 1

    def create_one(self, phase: Phase) -> bool:
        services, settings = self.services, self.settings
        if self.refused or not services.bucket.take(self.token_deadline, services.gate):
            return False
        name = phase.pool_machine_name(tier_name_part(settings, self.tier))
        standing = self.places.place(name)
        if standing is None:  # the standing pool is full: it only starts (pool/places.py)
            self.refused = True
            services.bucket.give_back()
            return False
        try:
            added = store.add_machine(settings, self.batch_id, phase.name, name, now_ms(), standing=standing)
        except (store.InFlightCapReached, store.BatchPoolFull) as exc:
            log(PREFIX, "pool_cap_reached", batch_id=self.batch_id, cap=str(exc))
            added = False
        if not added:  # a cap said no, or the batch left its phase
            self.refused = True
            services.bucket.give_back()
            self._forget_standing(name, standing, "its batch did not take it")
            return False
        machine = self._create(name, standing)
        if machine is None:
            return False
        store.record_machine_id(self.batch_id, name, machine["id"])
        if standing:
            standing_store.created(name, machine["id"])
        with self._lock:
            self.report.spawned += 1
        log(PREFIX, "machine_started", batch_id=self.batch_id, machine_id=machine["id"], name=name,
            standing=standing or None, memory_mb=self.memory_mb)
        return True

    def _create(self, name: str, standing: bool) -> dict | None:
        """Ask Fly for the machine; its answer, or None (the stint given back)."""
        services, settings = self.services, self.settings
        secrets = services.secrets()
        request = (standing_machine_request(settings, secrets, name, self.memory_mb) if standing
                   else pool_machine_request(settings, secrets, self.batch_id, name, self.memory_mb))
        try:
            return services.fly().create_machine(request)
        except FlyRateLimitedError as exc:
            # the gate holds every creator for Retry-After; the pass goes on behind it (a 429
            # is Fly's bucket and ours drifting apart, not a reason to wait a whole pass)
            services.gate.close_for(exc.retry_after_s)
            store.retire_machine(settings, self.batch_id, name, "Fly said 429 before creating it", now_ms())
            self._forget_standing(name, standing, "Fly said 429 before creating it")
            log(PREFIX, "spawn_rate_limited", batch_id=self.batch_id, machine_name=name,
                retry_after_s=exc.retry_after_s)
        except FlyError as exc:
            # no answer or a 5xx: it may exist all the same, so it waits in the destroy queue
            maybe = exc.status is None or exc.status >= 500
            store.retire_machine(settings, self.batch_id, name, f"Machine creation failed: {exc}"[:300], now_ms(),
                                 destroy=maybe)
            self._forget_standing(name, standing, "its creation failed")
            log(PREFIX, "spawn_failed", batch_id=self.batch_id, machine_name=name, status=exc.status,
                error=str(exc)[:300])
        return None

    def _forget_standing(self, name: str, standing: bool, reason: str) -> None:
        if standing:
            self.places.give_back(name, reason)
