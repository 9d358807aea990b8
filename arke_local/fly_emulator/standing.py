"""Start and update of stopped machines: what a standing pool needs (create once with
`skip_launch`, keep stopped, start on claim, update a stale config, stop after the batch).

Decides whether a start or update may go ahead (the machine's state, its version, the start
faults) and answers in Fly's shapes; the supervisor does the change. Never speaks HTTP.
"""

from __future__ import annotations

import logging
from typing import NoReturn

from .errors import ApiError, precondition_failed, rate_limited, unprocessable
from .faults import FaultInjector, StartFault
from .machines import Machine, MachineState
from .stats import Stats
from .supervisor import Supervisor
from .validation import CreateRequest, parse_update

log = logging.getLogger("arke_local.fly_emulator")
P = "[FlyEmulator]"
S = MachineState
INJECTED = "(injected by the Fly emulator)"
HOST_FULL = "aborted: could not reserve resource for machine: insufficient memory available to fulfill request"


class StandingOps:
    """`start` and `update` of an app's stopped machines."""

    def __init__(self, supervisor: Supervisor, faults: FaultInjector, stats: Stats,
                 start_latency_s: float):
        self._supervisor = supervisor
        self._faults = faults
        self._stats = stats
        self._latency = start_latency_s

    def start(self, app: str, machine_id: str) -> dict:
        """Start a stopped machine: `starting` at once, `started` after the start latency.
        Fly's answer: `{"previous_state", "migrated", "new_host"}`. 412 unless stopped."""
        self._stats.incr("starts_received")
        with self._supervisor.lock:
            m = self._supervisor.machine(app, machine_id)
            if m.state is not S.STOPPED:
                self._stats.incr("starts_refused")
                raise precondition_failed(f"unable to start machine from current state: '{m.state.value}'")
            fault = self._faults.start_fault()
            if fault.refused:
                self._refuse(m, fault)
            new_host = m.migrate() if fault.migrated else ""
            self._supervisor.begin_start(m, self._latency + fault.delay_s,
                                         {"migrated": fault.migrated})
        self._stats.incr("starts_accepted")
        if fault.migrated:
            self._stats.incr("starts_migrated")
            self._stats.injected("start_migrated", m.id, m.name)
            log.info("%s fault: start of machine %s (%s) migrated to host %s (+%.1fs)%s", P, m.id,
                     m.name, new_host, fault.delay_s, " (scripted)" if fault.scripted else "")
        return {"previous_state": S.STOPPED.value, "migrated": fault.migrated, "new_host": new_host}

    def _refuse(self, m: Machine, fault: StartFault) -> NoReturn:
        self._stats.incr("starts_refused")
        self._stats.incr("injected_start_failures")
        self._stats.injected("start_refused", m.id, m.name)
        log.info("%s fault: start of machine %s (%s) answered %d (%s)", P, m.id, m.name,
                 fault.status, "scripted" if fault.scripted else "random")
        if fault.status == 429:
            raise rate_limited(1)
        if fault.status == 409:
            raise ApiError(409, f"{HOST_FULL} {INJECTED}")
        if fault.status == 412:
            raise precondition_failed(f"unable to start machine from current state {INJECTED}")
        raise ApiError(fault.status, f"internal: failed to start machine: host unavailable {INJECTED}")

    def update(self, app: str, machine_id: str, body: object) -> dict:
        """Give a stopped machine a new config; it stays stopped. The updated Machine."""
        try:
            req, version = parse_update(body)
            with self._supervisor.lock:
                m = self._supervisor.machine(app, machine_id)
                _check_updatable(m, req, version)
                self._supervisor.reconfigure(m, req)
                answer = m.to_api()
        except ApiError as exc:
            self._stats.incr("updates_refused")
            log.info("%s update of machine %s refused (%d): %s", P, machine_id, exc.status, exc.message)
            raise
        self._stats.incr("updates_accepted")
        return answer


def _check_updatable(m: Machine, req: CreateRequest, version: str | None) -> None:
    if m.state in (S.DESTROYING, S.DESTROYED):
        raise precondition_failed(f"machine {m.id} is {m.state.value}")
    if m.state is not S.STOPPED:
        raise unprocessable(f"updating a {m.state.value} machine is not emulated (Fly replaces and "
                            "restarts it); stop it first")
    if version is not None and version != m.instance_id:
        raise ApiError(409, f"machine {m.id} is at version {m.instance_id}, not {version}")
    if req.name is not None and req.name != m.name:
        raise unprocessable("renaming a machine is not emulated")
    if req.region is not None and req.region != m.region:
        raise unprocessable("moving a machine to another region is not emulated")
