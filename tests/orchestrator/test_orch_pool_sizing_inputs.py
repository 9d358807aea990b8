"""What the pool is sized from (issue 17, item 5), through the real callbacks and passes: an
impossible duration stays out of the seconds per task, the first real window replaces the
prior, FINALIZING batches take no share of the global cap, and a 0 ms estimate does not
freeze the pool's growth."""

from __future__ import annotations

import json

import app
from chalicelib import pool_sizing, store

from .conftest import LambdaContext, message, run_pass, sqs_event
from .pool_machine import PlayedMachine
from .test_orch_pool import machines, start


def report_took(machine: PlayedMachine, task: dict, took_ms: int) -> dict:
    """A success callback whose performance says the task took `took_ms`."""
    body = {"task_id": task["task_id"], "batch_id": task["batch_id"], "status": "success",
            "output_r2_key": task["output_r2_key"], "output_file_name": "x.jpg", "output_file_size": 1,
            "performance": {"total_time_ms": took_ms}}
    path = task["callback_url"].split("orchestrator.test", 1)[1]
    response = machine.client.http.post(path, body=json.dumps(body), headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {task['callback_token']}"})
    assert response.status_code == 200, response.body
    return response.json_body


def test_an_impossible_duration_is_counted_done_but_not_averaged(services, client, fly, env):
    services = start(env, tiffs=3, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = machines(client, fly)
    assert report_took(machine, machine.pull()["task"], 2**62) == {"ok": True}
    assert report_took(machine, machine.pull()["task"], 1200) == {"ok": True}
    batch = store.get_batch("batch_abc")
    assert int(batch.tasks_completed) == 2
    assert (int(batch.task_ms_total), int(batch.task_ms_count)) == (1200, 1)  # the 2**62 is not in it
    run_pass(services)
    assert int(store.get_batch("batch_abc").task_ms_avg) == 1200


def test_the_first_window_of_results_replaces_the_prior(services, client, fly, env):
    services = start(env, tiffs=4, MAX_POOL_MACHINES_PER_BATCH="1", POOL_PRIOR_TASK_MS="3000")
    run_pass(services)  # no result yet: the prior is recorded
    assert int(store.get_batch("batch_abc").task_ms_avg) == 3000
    [machine] = machines(client, fly)
    for _ in range(2):
        report_took(machine, machine.pull()["task"], 800)
    run_pass(services)
    assert int(store.get_batch("batch_abc").task_ms_avg) == 800  # not 3000 + 0.3 * (800 - 3000)
    report_took(machine, machine.pull()["task"], 1800)
    run_pass(services)
    assert int(store.get_batch("batch_abc").task_ms_avg) == 1100  # later windows move 30%


def test_a_finalizing_batch_takes_no_share_of_the_global_cap(services, client, fly, env, ingest):
    ingest.script = [500] * 10  # its delivery keeps failing: the batch stays FINALIZING
    services = start(env, tiffs=0, MAX_MACHINES_IN_FLIGHT="4", MAX_POOL_MACHINES_PER_BATCH="4")
    app.intake(sqs_event(message(batch_id="batch_big", tiffs=8, others=0)), LambdaContext(30))
    run_pass(services)
    assert store.get_batch("batch_abc").status == "FINALIZING"
    big = store.get_batch("batch_big")
    assert int(big.pool_target) == 4 and big.pool_reason != pool_sizing.FAIR_SHARE  # alone in pooling: the whole cap
    assert len(fly.created()) == 4


def test_a_zero_ms_estimate_does_not_freeze_the_pool():
    estimate = pool_sizing.moving_average_ms(None, 0, 50, prior_ms=3000)  # workers reporting 0 ms
    assert estimate == pool_sizing.MIN_TASK_MS
    decision = pool_sizing.decide(pool_sizing.PoolInputs(
        ready=5000, running=10, live=10, task_s=estimate / 1000, create_rate=1, boot_s=5, per_machine=1,
        batch_cap=300, free_slots=990, fair_share=1000))
    assert decision.create > 0 and decision.reason == pool_sizing.QUEUE_EMPTIES


def test_one_absurd_window_moves_the_estimate_for_a_few_passes_not_a_hundred():
    """Unbounded, a 2**62 ms window took ~100 passes of 3 s results to come back within 10%."""
    avg = pool_sizing.moving_average_ms(3000, 2**62, 1, prior_ms=3000)
    assert avg <= 3000 * (1 + 0.3 * (pool_sizing.MAX_WINDOW_STEP - 1))  # at most 1.9x at once
    passes = 0
    while avg > 3300:  # normal windows of 3 s bring it back
        avg = pool_sizing.moving_average_ms(avg, 10 * 3000, 10, prior_ms=3000)
        passes += 1
    assert passes <= 7
