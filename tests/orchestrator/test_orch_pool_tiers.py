"""The pool's memory tiers (issue 18, item 2; chalicelib/pool/large.py, pool/tiers.py): a task
that ran out of memory, or whose worker read a header needing more, waits for the next tier
or the one that fits; the pass brings up machines of that tier; they take smaller work too."""

from __future__ import annotations

import pytest

from chalicelib import store
from chalicelib.pool.large import retry_band, tier_of_name
from chalicelib.settings import Settings, SettingsError
from chalicelib.store.task_reads import LARGE_BAND, band_of

from .conftest import drive, get_status, make_services, post_admin, run_pass
from .pool_machine import PlayedMachine
from .test_orch_pool import POOL, in_flight, start

TIERS = {"MAX_POOL_MACHINES_PER_BATCH": "3", "ALARM_DELAY_ERROR_RETRY": "50"}


def pool(client, fly) -> list[PlayedMachine]:
    return [PlayedMachine(client, r) for r in fly.created() if "MACHINE_NAME" in r["body"]["config"]["env"]]


def memory_of(machine: PlayedMachine) -> int:
    return machine.request["body"]["config"]["guest"]["memory_mb"]


def of_memory(client, fly, memory_mb: int) -> list[PlayedMachine]:
    return [m for m in pool(client, fly) if memory_of(m) == memory_mb]


def task_band(task_id: str) -> int:
    return band_of(store.get_task("batch_abc", task_id))


def test_the_default_tiers_double_pool_memory_while_fly_allows():
    assert Settings.from_env({}).pool_tiers == (2048, 4096, 8192)
    assert Settings.from_env({"POOL_MEMORY_MB": "4096"}).pool_tiers == (4096, 8192)
    assert Settings.from_env({"POOL_CPUS": "2", "POOL_MEMORY_MB": "4096"}).pool_tiers == (4096, 8192, 16384)
    assert Settings.from_env({"POOL_MEMORY_TIERS_MB": "none"}).pool_tiers == (2048,)
    assert Settings.from_env({"POOL_MEMORY_TIERS_MB": "6144"}).pool_tiers == (2048, 6144)


@pytest.mark.parametrize("raw, words", [
    ("4096,3072", "must ascend"), ("2048", "must ascend"), ("4000", "not a multiple of 256"),
    ("16384", "from 2048 to 8192"), ("big", "MB numbers"),
])
def test_bad_tiers_fail_at_start_up_saying_why(raw, words):
    with pytest.raises(SettingsError, match=words):
        Settings.from_env({"POOL_MEMORY_TIERS_MB": raw})


def test_a_machine_names_its_tier_and_a_retry_goes_where_it_fits():
    settings = Settings.from_env({"MACHINE_MODE": "pool"})
    assert [tier_of_name(settings, n) for n in ("t-pool-ab12", "t-pool-m4096-ab12", "t-pool-m8192-ab12")] == [0, 1, 2]
    assert tier_of_name(settings, "t-pool-m6144-ab12") == 1  # a tier since removed: the largest below it
    base, middle, top = "t-pool-ab12", "t-pool-m4096-ab12", "t-pool-m8192-ab12"
    assert retry_band(settings, base, "out_of_memory") == 1
    assert retry_band(settings, middle, "out_of_memory") == 2
    assert retry_band(settings, top, "out_of_memory") == 2  # MAX_MACHINE_MEMORY_MB 8192: nothing larger
    bigger = Settings.from_env({"MACHINE_MODE": "pool", "MAX_MACHINE_MEMORY_MB": "16384"})
    assert retry_band(bigger, top, "out_of_memory") == LARGE_BAND
    assert retry_band(settings, base, "needs_memory", 3000) == 1
    assert retry_band(settings, base, "needs_memory", 5000) == 2
    assert retry_band(settings, base, "needs_memory", 50000) == 2  # none fits: the largest
    assert retry_band(settings, middle, "transfer_failed") == 1  # its tier again, never smaller
    assert retry_band(settings, base, "transfer_failed") == 0
    assert retry_band(settings, None, "out_of_memory") == LARGE_BAND  # it ran on a single-mode machine
    assert retry_band(Settings.from_env({"MACHINE_MODE": "single"}), base, "out_of_memory") == 0


def test_out_of_memory_is_retried_on_the_next_tiers_machine(services, client, fly, env):
    services = start(env, tiffs=2, MAX_POOL_MACHINES_PER_BATCH="1", ALARM_DELAY_ERROR_RETRY="50")
    run_pass(services)
    [base] = pool(client, fly)
    assert memory_of(base) == 2048 and "-pool-m" not in base.name
    big = base.pull()["task"]
    assert big["max_memory_mb"] == 8192  # the worker may say it needs a larger tier
    base.report(big, ok=False, error="ran out", error_code="out_of_memory")
    assert task_band(big["task_id"]) == 1 and int(store.get_batch("batch_abc").tasks_large) == 1
    small = base.pull_task()  # the smallest machine never takes the band-1 task
    assert small["task_id"] != big["task_id"]
    base.report(small)
    assert base.pull() == {"action": "exit", "reason": "no work left"}

    [middle] = drive(services, lambda: of_memory(client, fly, 4096))
    assert "-pool-m4096-" in middle.name
    assert middle.request["body"]["config"]["guest"] == {"cpu_kind": "performance", "cpus": 1, "memory_mb": 4096}
    again = middle.pull_task()
    assert again["task_id"] == big["task_id"] and again["attempt"] == 2
    assert store.get_task("batch_abc", big["task_id"]).memory_mb == 4096  # the claim records the tier's memory
    assert int(store.get_batch("batch_abc").tasks_large) == 0
    middle.report(again)
    assert middle.pull() == {"action": "exit", "reason": "no work left"}
    drive(services, lambda: get_status(client)["status"] == "DONE")
    batch = store.get_batch("batch_abc")
    assert int(batch.tasks_completed) == 2 and in_flight() == 0 and int(batch.machines_live) == 0
    assert [r for r in fly.created() if "TASK_ID" in r["body"]["config"]["env"]] == []  # no single-mode machine


def test_a_header_that_needs_more_memory_goes_to_the_tier_that_fits(services, client, fly, env):
    services = start(env, tiffs=1, **TIERS)
    run_pass(services)
    [base] = pool(client, fly)
    task = base.pull()["task"]
    base.report(task, ok=False, error="needs 5000 MB", error_code="needs_memory", memory_mb=5000)
    assert task_band(task["task_id"]) == 2  # 4096 would not do: the 8192 tier
    [top] = drive(services, lambda: of_memory(client, fly, 8192))
    assert of_memory(client, fly, 4096) == []
    got = top.pull_task()
    assert got["task_id"] == task["task_id"] and "max_memory_mb" not in got  # no larger tier to ask for
    top.report(got)
    drive(services, lambda: get_status(client)["status"] == "DONE")
    assert get_status(client)["progress"]["tasks_completed"] == 1


def test_a_needs_memory_callback_with_a_bad_memory_is_refused(services, client, fly, env):
    services = start(env, tiffs=1, **TIERS)
    run_pass(services)
    [base] = pool(client, fly)
    task = base.pull()["task"]
    for bad in ("5000", -1, True):
        with pytest.raises(AssertionError, match="memory_mb must be a positive integer"):
            base.report(task, ok=False, error_code="needs_memory", memory_mb=bad)
    assert store.get_task("batch_abc", task["task_id"]).status == "processing"


def test_a_larger_machine_takes_smaller_work_and_is_no_surplus(services, client, fly, env):
    services = start(env, tiffs=4, MAX_POOL_MACHINES_PER_BATCH="1", ALARM_DELAY_ERROR_RETRY="50")
    run_pass(services)
    [base] = pool(client, fly)
    big = base.pull()["task"]
    base.report(big, ok=False, error_code="out_of_memory")
    services = make_services(env, **{**POOL, "MAX_POOL_MACHINES_PER_BATCH": "2", "ALARM_DELAY_ERROR_RETRY": "50"})
    [middle] = drive(services, lambda: of_memory(client, fly, 4096))
    batch = store.get_batch("batch_abc")
    assert int(batch.pool_tier_machines) == 1
    assert int(batch.pool_target) >= int(batch.machines_live) == 2  # the tier's machine is in the target
    ran = [middle.pull_task()]
    assert ran[0]["task_id"] == big["task_id"]  # its own band first
    middle.report(ran[0])
    ran += middle.work_until_exit()  # then the smallest machines' band
    assert len(ran) >= 2
    left = base.work_until_exit()  # not told it is a surplus of a pool the larger machine joined
    assert len(ran) + len(left) == 4
    drive(services, lambda: get_status(client)["status"] == "DONE")
    assert get_status(client)["progress"]["tasks_completed"] == 4 and in_flight() == 0


def test_a_reset_closes_a_tier_task_and_its_count(services, client, fly, env):
    services = start(env, tiffs=2, MAX_POOL_MACHINES_PER_BATCH="1", ALARM_DELAY_ERROR_RETRY="60000")
    run_pass(services)
    [base] = pool(client, fly)
    base.report(base.pull()["task"], ok=False, error_code="out_of_memory")
    assert int(store.get_batch("batch_abc").tasks_large) == 1
    assert post_admin(client, "reset").status_code == 200
    batch = store.get_batch("batch_abc")
    assert int(batch.tasks_large) == 0 and int(batch.tasks_failed) == 2


def test_a_tier_task_left_by_pool_mode_is_run_in_single_mode(services, client, fly, env):
    services = start(env, tiffs=1, **TIERS)
    run_pass(services)
    [base] = pool(client, fly)
    task = base.pull()["task"]
    base.report(task, ok=False, error_code="out_of_memory")
    assert base.pull()["action"] == "exit"
    services = make_services(env, **{**POOL, "MACHINE_MODE": "single", "ALARM_DELAY_ERROR_RETRY": "50"})
    [request] = drive(services, lambda: [r for r in fly.created() if "TASK_ID" in r["body"]["config"]["env"]])
    assert request["body"]["config"]["env"]["TASK_ID"] == task["task_id"]
    assert request["body"]["config"]["guest"]["memory_mb"] == 4096  # what the out-of-memory end escalated to
    assert int(store.get_batch("batch_abc").tasks_large) == 0
