"""The tick: the scheduled function standing in for the seed's Durable Object alarms.

EventBridge fires it once a minute, but a converting batch wants a pass every
few seconds (its phase's alarm delay: ALARM_DELAY_TIFF_CONVERSION, 5 s). So one invocation loops: it runs every due pass,
sleeps a poll interval (1 s, or the alarm delay when shorter),
and returns when fewer than TICK_MARGIN_MS remain of its timeout; the next scheduled
invocation takes over. Chosen over per-batch delayed SQS wake-ups because it needs no
second queue, keeps the token bucket and the 429 gate in one process (the function runs
with reserved concurrency 1), and costs one index query per poll when idle (and one more
every SWEEP_POLL_MS for ended batches' sweeps). Overlapping invocations are still safe: each
pass and sweep holds its batch's lease (a conditional write with an expiry), so two never
work one batch at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from . import metrics, store
from .clock import now_ms
from .logs import log
from .models import SWEEPING
from .pool.retention import retire_idle
from .runner import BatchPass, monotonic_deadline, pass_error_delay_ms
from .services import Services
from .shutdown import end_in_error, sweep_ended

POLL_MS = 1000
SWEEP_POLL_MS = 5000  # how often a tick looks for ended batches' sweeps (one index query)


@dataclass
class TickReport:
    passes: int = 0
    spawned: int = 0
    errors: int = 0
    loops: int = 0
    due_now: bool = False  # the last round left a batch due at once (its creations go on)
    sweeps: int = 0  # ended batches swept (shutdown.sweep_ended)


def run_due_passes(services: Services, owner: str, report: TickReport | None = None) -> TickReport:
    """One round: a pass for every batch that is due now. Returns what it did."""
    report = report or TickReport()
    report.due_now = False
    settings = services.settings
    now = now_ms()
    active = store.list_active_batches()
    # Advisory: each claim's transaction enforces the cap on the shared counter itself.
    capacity = max(0, settings.max_machines_in_flight - store.in_flight_machines())
    due = sorted((b for b in active if b.due_at is not None and b.due_at <= now), key=lambda b: b.due_at)
    # the fair share is split among batches that run a pool: not INTAKE, not FINALIZING
    pooling = sum(1 for b in active if b.status in services.registry)
    slice_s = shortest_alarm_delay_ms(services) / 1000 / max(1, len(due))
    for listed in due:
        batch = store.acquire_lease(listed.batch_id, owner, now_ms(), settings.lease_ms)
        if batch is None:
            continue
        batch_pass = BatchPass(services, batch, capacity, monotonic_deadline(slice_s), pooled_batches=pooling)
        try:
            next_due = batch_pass.run()
        except Exception as exc:  # noqa: BLE001 - any failure of a pass is a batch-level error
            report.errors += 1
            _pass_failed(services, batch.batch_id, owner, int(batch.pass_errors or 0) + 1, exc)
            continue
        capacity = max(0, capacity - batch_pass.report.capacity_used)
        metrics.pass_ended(settings.stage, batch, batch_pass.report.spawned, now_ms())
        report.passes += 1
        report.spawned += batch_pass.report.spawned
        errors_reset = 0 if batch.pass_errors else None
        store.release_lease(batch.batch_id, owner, next_due, errors_reset)
        report.due_now |= next_due is not None and next_due <= now_ms()
    return report


def run_due_sweeps(services: Services, owner: str) -> int:
    """A sweep (shutdown.sweep_ended) for every ended batch whose sweep is due, each under
    the batch's lease like a pass. How many ran."""
    swept = 0
    for listed in store.list_due_sweeps(now_ms()):
        if store.acquire_lease(listed.batch_id, owner, now_ms(), services.settings.lease_ms, SWEEPING) is None:
            continue
        next_due = None
        try:
            next_due = sweep_ended(services, listed.batch_id)
        except Exception as exc:  # noqa: BLE001 - Fly or DynamoDB failing: sweep again later
            next_due = now_ms() + services.settings.alarm_delay_error_retry_ms
            log("[Batch]", "sweep_failed", batch_id=listed.batch_id, error=f"{type(exc).__name__}: {exc}"[:300])
        store.end_sweep(listed.batch_id, owner, next_due)
        swept += 1
    return swept


def shortest_alarm_delay_ms(services: Services) -> int:
    """The shortest pass interval any phase asks for (each phase says its own: Phase.alarm_delay_ms)."""
    return min(phase.alarm_delay_ms(services.settings) for phase in services.registry.chain())


def _pass_failed(services: Services, batch_id: str, owner: str, failures: int, exc: Exception) -> None:
    error = f"{type(exc).__name__}: {exc}"[:500]
    now = now_ms()
    log("[Batch]", "pass_failed", batch_id=batch_id, failures=failures, error=error)
    try:
        if failures >= services.settings.max_retry_attempts:
            end_in_error(services, batch_id, f"Gave up after {failures} failed passes: {error}", "pass_failures")
            store.release_lease(batch_id, owner, None)
        else:
            store.release_lease(batch_id, owner, now + pass_error_delay_ms(services, failures), failures)
    except Exception as inner:  # noqa: BLE001 - DynamoDB itself is down: the lease expires
        log("[Batch]", "pass_failure_not_recorded", batch_id=batch_id, error=type(inner).__name__)


def run_tick(services: Services, remaining_ms: Callable[[], int], owner: str | None = None,
             sleep: Callable[[float], None] = time.sleep) -> TickReport:
    """Loop passes until the invocation's remaining time falls under the margin."""
    owner = owner or f"tick-{uuid.uuid4().hex[:12]}"
    report = TickReport()
    margin = services.settings.tick_margin_ms
    swept_at = -float("inf")
    while remaining_ms() > margin:
        report.loops += 1
        try:
            run_due_passes(services, owner, report)
            if time.monotonic() - swept_at >= SWEEP_POLL_MS / 1000:
                swept_at = time.monotonic()
                report.sweeps += run_due_sweeps(services, owner)
                retire_idle(services)  # the standing pool's idle machines
            # a batch still creating machines is due at once: a second's pause here would
            # cost the pool a second of the create rate every round
            wait_ms = 0 if report.due_now else min(POLL_MS, shortest_alarm_delay_ms(services))
        except Exception as exc:  # noqa: BLE001 - e.g. DynamoDB unreachable: try again shortly
            log("[Batch]", "tick_round_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            wait_ms = POLL_MS
        if remaining_ms() - margin <= 0:
            break
        sleep(max(0.05, min(wait_ms, remaining_ms() - margin)) / 1000)
    log("[Batch]", "tick_done", owner=owner, loops=report.loops, passes=report.passes,
        spawned=report.spawned, errors=report.errors, sweeps=report.sweeps)
    return report

