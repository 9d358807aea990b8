"""Pool machines that went silent (shutdown.stop_pool stops a whole pool).

A machine is heard from at every pull and heartbeat. One not heard from for
HEARTBEAT_TIMEOUT_MS (crashed, hung, never booted) is retired first (conditioned on still
being silent: the live-index read may be stale) and then destroyed, so a machine is counted
gone once and is never destroyed while it still speaks; a destroy Fly does not confirm is
tried again by later passes (shutdown.retry_destroys). Its held tasks time out by their
own deadlines, which heartbeats no longer move (timeouts.py retries them).
"""

from __future__ import annotations

from .. import store
from ..clock import now_ms
from ..logs import log
from ..services import Services
from ..shutdown import destroy_retired

PREFIX = "[Pool]"


def retire_silent(services: Services, batch_id: str) -> int:
    settings, now = services.settings, now_ms()
    before = now - settings.heartbeat_timeout_ms
    retired = []
    for machine in store.silent_machines(batch_id, before):
        reason = f"silent for {settings.heartbeat_timeout_ms} ms (last seen {now - int(machine.last_seen)} ms ago)"
        if store.retire_machine(settings, batch_id, machine.name, reason, now, silent_before=before, destroy=True):
            log(PREFIX, "machine_silent", batch_id=batch_id, machine_name=machine.name,
                machine_id=machine.machine_id, state=machine.state)
            machine.gone_reason = reason  # as retired: a standing one's record goes with it
            retired.append(machine)
    destroy_retired(services, retired)  # a hung standing machine is not kept for the next batch
    return len(retired)
