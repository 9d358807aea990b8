"""Admin actions on a batch. Reset: stop it for good, close its open tasks, kill machines."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from . import store
from .clock import now_ms
from .errors import NotFoundError
from .logs import log
from .services import Services
from .states import RESET_ERROR


def reset_batch(services: Services, batch_id: str) -> dict[str, int]:
    """ERROR first (so no pass claims another task), then every open task failed with the
    counters in the same transactions, then the running machines destroyed (best effort)."""
    batch = store.get_batch(batch_id)
    if batch is None:
        raise NotFoundError(f"batch {batch_id} not found")
    now = now_ms()
    store.fail_batch(batch_id, RESET_ERROR, now)
    closed, machines = store.close_open_tasks(services.settings, batch_id, RESET_ERROR, now)
    destroyed = 0
    if machines:
        fly = services.fly()
        with ThreadPoolExecutor(max_workers=min(8, len(machines))) as pool:
            destroyed = sum(pool.map(fly.destroy_machine, machines))
    log("[Batch]", "batch_reset", batch_id=batch_id, tasks_closed=closed, machines=len(machines),
        machines_destroyed=destroyed)
    return {"tasks_closed": closed, "machines_destroyed": destroyed}
