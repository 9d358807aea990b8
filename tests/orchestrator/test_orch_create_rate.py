"""Issue 10, "use the whole create rate": a pass that runs out of tokens while machines are
still wanted leaves its batch due again at once (the next round, a second later, goes on
creating), not a whole alarm delay later; a pass that wants nothing more waits the delay."""

from __future__ import annotations

import time

import app
from chalicelib import scheduler, store

from .conftest import LambdaContext, make_services, message, sqs_event

SLOW = {"FLY_CREATE_RATE": "0.5", "FLY_CREATE_BURST": "1", "ALARM_DELAY_TIFF_CONVERSION": "2000"}


def _pass(services) -> tuple[int, int]:
    """One round now; (machines created, ms until the batch is due again)."""
    report = scheduler.run_due_passes(services, "test-tick")
    return report.spawned, int(store.get_batch("batch_abc").due_at) - int(time.time() * 1000)


def test_single_mode_out_of_tokens_is_due_again_at_once(services, fly, env):
    services = make_services(env, **SLOW)
    app.intake(sqs_event(message(tiffs=4, others=0)), LambdaContext(30))
    spawned, due_in = _pass(services)
    assert spawned == 1 and len(fly.created()) == 1  # the burst; the rest waits for tokens
    assert due_in <= 0  # not the 2000 ms alarm delay


def _pool(env, cap: str):
    return make_services(env, **SLOW, MACHINE_MODE="pool", POOL_BOOT_MS="0", HEARTBEAT_INTERVAL_MS="300",
                         MAX_POOL_MACHINES_PER_BATCH=cap)


def test_pool_mode_out_of_tokens_is_due_again_at_once(services, fly, env):
    services = _pool(env, cap="3")
    app.intake(sqs_event(message(tiffs=4, others=0)), LambdaContext(30))
    spawned, due_in = _pass(services)
    assert spawned == 1 and due_in <= 0  # wants 3, the bucket had 1: the next round goes on


def test_pool_mode_with_all_it_wants_waits_the_alarm_delay(services, fly, env):
    services = _pool(env, cap="1")
    app.intake(sqs_event(message(tiffs=4, others=0)), LambdaContext(30))
    spawned, due_in = _pass(services)
    assert spawned == 1 and due_in > 1000  # at its cap of 1: nothing more is wanted


def _tick_pauses(services, rounds: int) -> list[float]:
    """The pauses (s) a tick makes between its first `rounds` rounds."""
    pauses: list[float] = []
    scheduler.run_tick(services, remaining_ms=lambda: 60_000 if len(pauses) < rounds else 0,
                       owner="test-tick", sleep=pauses.append)
    return pauses


def test_a_tick_goes_straight_on_while_a_batch_still_wants_machines(services, fly, env):
    services = _pool(env, cap="3")
    app.intake(sqs_event(message(tiffs=4, others=0)), LambdaContext(30))
    pauses = _tick_pauses(services, rounds=2)
    assert len(fly.created()) >= 2 and max(pauses[:2]) < 0.01  # no second's pause between rounds


def test_a_tick_pauses_a_second_when_nothing_is_due(services, fly, env):
    services = _pool(env, cap="1")
    app.intake(sqs_event(message(tiffs=4, others=0)), LambdaContext(30))
    pauses = _tick_pauses(services, rounds=2)
    assert len(fly.created()) == 1 and pauses[:2] == [scheduler.POLL_MS / 1000] * 2
