"""Starting the standing pool's stopped machines for a batch (docs/pool.md "Standing pool").

Fly creates about one machine a second per app, but starts each stopped machine on its own
limit (per machine): a pass that finds stopped machines starts as many as the pool wants, in
parallel, before it creates any. Each start takes the machine's record from the stopped
pool (a conditional write: one batch per machine), writes its stint in the batch (the
batch's caps, as for a created machine), updates its config when the image or guest
changed since it was made, and asks Fly to start it. A start Fly refuses (host full: 409;
not stopped yet: 412; rate limited: 429) gives the stint back and the machine back to the
stopped pool, behind every machine stopped later; one Fly no longer knows (404) is gone.
The pass then tries the next stopped machine, and creates what is still missing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import store
from ..clock import now_ms
from ..errors import FlyError
from ..logs import log
from ..models import Standing
from ..phases import Phase
from ..services import Services
from ..store import standing as standing_store
from .request import config_version, standing_config

PREFIX = "[Pool]"


@dataclass
class StartReport:
    started: int = 0
    refused: int = 0  # Fly refused the start: the machine is back in the stopped pool, or gone
    capped: bool = False  # a cap or the batch's end said no: start (and create) no more


@dataclass
class StandingStarter:
    """One pass's starts of stopped machines for one batch."""

    services: Services
    batch_id: str
    phase: Phase
    memory_mb: int
    report: StartReport = field(default_factory=StartReport)

    def start(self, candidates: list[Standing], wanted: int, on_started: Callable[[], None]) -> int:
        """Start up to `wanted` of `candidates` (in the order given), in parallel; how many
        started. A candidate is taken only while fewer than `wanted` are started or starting."""
        queue, lock = list(candidates), threading.Lock()
        count = {"started": 0, "starting": 0}

        def take() -> Standing | None:
            with lock:
                if not queue or self.report.capped or count["started"] + count["starting"] >= wanted:
                    return None
                count["starting"] += 1
                return queue.pop(0)

        def worker(_: int) -> None:
            while (candidate := take()) is not None:
                ok = self.start_one(candidate)
                with lock:
                    count["starting"] -= 1
                    count["started"] += ok
                if ok:
                    on_started()

        workers = min(self.services.settings.pool_start_concurrency, wanted, len(queue))
        if workers > 0:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="start") as pool:
                list(pool.map(worker, range(workers)))
        return count["started"]

    def start_one(self, machine: Standing) -> bool:
        settings, name, now = self.services.settings, machine.name, now_ms()
        if not standing_store.take_stopped(name, self.batch_id, now):
            return False  # another pass took it
        try:
            added = store.add_machine(settings, self.batch_id, self.phase.name, name, now, standing=True)
        except (store.InFlightCapReached, store.BatchPoolFull) as exc:
            log(PREFIX, "pool_cap_reached", batch_id=self.batch_id, cap=str(exc))
            added = False
        if not added:
            self.report.capped = True
            standing_store.stopped(name, self.batch_id, now_ms())
            return False
        if machine.machine_id:
            store.record_machine_id(self.batch_id, name, machine.machine_id)
        try:
            version = self._update_if_stale(machine)
            answer = self.services.fly().start_machine(machine.machine_id or "")
        except FlyError as exc:
            self._refused(machine, exc)
            return False
        standing_store.start_answered(name, self.batch_id, version)
        log(PREFIX, "machine_started", batch_id=self.batch_id, machine_id=machine.machine_id, name=name,
            standing=True, migrated=answer.get("migrated") or None, memory_mb=self.memory_mb)
        self.report.started += 1
        return True

    def _update_if_stale(self, machine: Standing) -> str | None:
        """The current config's version when the machine's was older (updated now), else None."""
        settings = self.services.settings
        version = config_version(settings, self.memory_mb)
        if machine.config_version == version:
            return None
        config = standing_config(settings, self.services.secrets(), machine.name, self.memory_mb)
        self.services.fly().update_machine(machine.machine_id or "", config)
        log(PREFIX, "machine_updated", batch_id=self.batch_id, machine_id=machine.machine_id, name=machine.name,
            config_version=version)
        return version

    def _refused(self, machine: Standing, exc: FlyError) -> None:
        """Give the stint back, and the machine to the stopped pool (or to nothing: Fly no
        longer knows it)."""
        settings, name, now = self.services.settings, machine.name, now_ms()
        self.report.refused += 1
        store.retire_machine(settings, self.batch_id, name, f"Fly refused its start: {exc}"[:300], now)
        if exc.status == 404:
            standing_store.standing_gone(settings, name, "Fly does not know it (404 on start)")
        else:
            standing_store.stopped(name, self.batch_id, now, failed_start=True)
        log(PREFIX, "start_refused", batch_id=self.batch_id, machine_id=machine.machine_id, name=name,
            status=exc.status, error=str(exc)[:300])
