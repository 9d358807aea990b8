"""Tasks too large for a pool machine (issue 17, item 8; chalicelib/pool/large.py): in a pool
of one memory (POOL_MEMORY_TIERS_MB=none; the tiers are test_orch_pool_tiers.py), a pool
attempt that ran out of memory is retried on a single-mode machine with twice the memory,
not on the next pool machine of the same size."""

from __future__ import annotations

from chalicelib import store

from .conftest import drive, get_status, post_admin, post_callback, run_pass, success_body
from .pool_machine import PlayedMachine
from .test_orch_pool import in_flight, start


def single_mode_requests(fly) -> list[dict]:
    return [r for r in fly.created() if "TASK_ID" in r["body"]["config"]["env"]]


def machines(client, fly) -> list[PlayedMachine]:
    """The pool's machines (the single-mode ones are played through their callbacks)."""
    return [PlayedMachine(client, r) for r in fly.created() if "MACHINE_NAME" in r["body"]["config"]["env"]]


def test_a_pool_attempt_out_of_memory_is_retried_on_a_larger_single_machine(services, client, fly, env):
    services = start(env, tiffs=2, MAX_POOL_MACHINES_PER_BATCH="1", ALARM_DELAY_ERROR_RETRY="50", POOL_MEMORY_TIERS_MB="none")
    run_pass(services)
    [pooled] = machines(client, fly)
    big = pooled.pull()["task"]
    assert pooled.report(big, ok=False, error="needs more memory", error_code="out_of_memory") == {"ok": True}
    assert int(store.get_batch("batch_abc").tasks_large) == 1
    small = pooled.pull_task()  # the pool's next task is the other one, never the large one
    assert small["task_id"] != big["task_id"]
    pooled.report(small)
    assert pooled.pull() == {"action": "exit", "reason": "no work left"}

    drive(services, lambda: single_mode_requests(fly))
    [request] = single_mode_requests(fly)
    body = request["body"]
    assert body["config"]["env"]["TASK_ID"] == big["task_id"]
    assert body["config"]["guest"]["memory_mb"] == 2 * services.settings.pool_memory_mb
    assert int(store.get_batch("batch_abc").tasks_large) == 0
    assert len(machines(client, fly)) == 1  # no second pool machine was made for it
    assert post_callback(client, request, success_body(body["config"]["env"])).status_code == 200
    drive(services, lambda: get_status(client)["status"] == "DONE")
    assert get_status(client)["progress"]["tasks_completed"] == 2 and in_flight() == 0


def test_a_large_tasks_retry_waits_for_a_larger_machine_again(services, client, fly, env):
    services = start(env, tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1", ALARM_DELAY_ERROR_RETRY="50", POOL_MEMORY_TIERS_MB="none")
    run_pass(services)
    [pooled] = machines(client, fly)
    pooled.report(pooled.pull()["task"], ok=False, error="oom", error_code="out_of_memory")
    drive(services, lambda: single_mode_requests(fly))
    [first] = single_mode_requests(fly)
    env_of = first["body"]["config"]["env"]
    oom = {"task_id": env_of["TASK_ID"], "batch_id": "batch_abc", "status": "error", "error": "oom",
           "error_code": "out_of_memory"}
    assert post_callback(client, first, oom).status_code == 200
    assert int(store.get_batch("batch_abc").tasks_large) == 1
    drive(services, lambda: len(single_mode_requests(fly)) == 2)
    second = single_mode_requests(fly)[1]
    assert second["body"]["config"]["guest"]["memory_mb"] == 4 * services.settings.pool_memory_mb


def test_a_reset_closes_a_large_task_and_its_count(services, client, fly, env):
    services = start(env, tiffs=2, MAX_POOL_MACHINES_PER_BATCH="1", ALARM_DELAY_ERROR_RETRY="60000", POOL_MEMORY_TIERS_MB="none")
    run_pass(services)
    [pooled] = machines(client, fly)
    pooled.report(pooled.pull()["task"], ok=False, error="oom", error_code="out_of_memory")
    assert int(store.get_batch("batch_abc").tasks_large) == 1
    assert post_admin(client, "reset").status_code == 200
    batch = store.get_batch("batch_abc")
    assert int(batch.tasks_large) == 0 and int(batch.tasks_failed) == 2
