"""Pool mode leaks nothing (issue 17, item 6): a machine the end of its batch did not list,
and a destroy Fly did not confirm, are both found again (an ended batch's sweep, the destroy
queue), so no machine keeps an in-flight slot or runs unbilled-for."""

from __future__ import annotations

import time

from chalicelib import scheduler, store

from .conftest import drive, run_pass
from .ddb_hooks import DynamoHooks
from .test_orch_pool import in_flight, machines, start
from .test_orch_pool_races import machine_state, now_ms

RESET = {"Authorization": "Bearer admin-test-token"}


def test_a_silent_machines_failed_destroy_is_tried_again_until_fly_confirms_it(services, client, fly, env):
    services = start(env, tiffs=2, HEARTBEAT_TIMEOUT_MS="1000", MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [dead] = machines(client, fly)
    dead.pull()  # then it hangs: no heartbeat, no pull
    fly.delete_script = [503]
    time.sleep(1.1)
    run_pass(services)  # silent: retired, and its destroy fails
    assert machine_state(dead) == "gone" and dead.request["id"] not in fly.deleted
    assert [m.name for m in store.machines_to_destroy("batch_abc", now_ms() + 10**9)] == [dead.name]
    drive(services, lambda: dead.request["id"] in fly.deleted, timeout=15)
    assert fly.delete_tries.count(dead.request["id"]) == 2  # 503, then confirmed
    assert dead.name not in {m.name for m in store.machines_to_destroy("batch_abc", now_ms() + 10**9)}
    assert int(store.get_machine("batch_abc", dead.name).destroy_tries) == 1


def test_a_machine_the_end_did_not_list_is_found_by_the_sweep_and_gives_its_slot_back(services, client, fly,
                                                                                       env):
    """The live-index is eventually consistent: a machine recorded a moment before a reset
    may be missing from the reset's read. One that never boots would hold its in-flight
    slot for ever; the batch's sweep finds it."""
    services = start(env, tiffs=2, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [late] = machines(client, fly)
    record = store.get_machine("batch_abc", late.name)
    hooks = DynamoHooks(services.settings)

    def reads_live_machines(operation: str, params: dict) -> bool:
        return operation == "Query" and params.get("IndexName") == "live-index"

    def hide() -> None:  # the index has not caught up with the record yet
        record.update(actions=[type(record).live_batch.remove()])

    hooks.once(reads_live_machines, hide, before=True)
    try:
        assert client.http.post("/admin/reset/batch_abc", headers=RESET).status_code == 200
    finally:
        hooks.detach()
    assert machine_state(late) == "creating" and in_flight() == 1  # missed
    record.update(actions=[type(record).live_batch.set("batch_abc")])  # now the index shows it
    assert scheduler.run_due_sweeps(services, "test-tick") == 0  # not due yet: SWEEP_DELAY_MS
    time.sleep(services.settings.sweep_delay_ms / 1000)
    assert scheduler.run_due_sweeps(services, "test-tick") == 1
    assert machine_state(late) == "gone" and in_flight() == 0
    assert late.request["id"] in fly.deleted
    batch = store.get_batch("batch_abc")
    assert batch.active is None and batch.lease_owner is None  # nothing left: out of the index


def test_a_destroy_that_fails_at_the_batchs_end_is_retried_by_its_sweeps(services, client, fly, env):
    services = start(env, tiffs=2, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = machines(client, fly)
    fly.delete_script = [500, 500]
    assert client.http.post("/admin/reset/batch_abc", headers=RESET).status_code == 200
    assert machine.request["id"] not in fly.deleted and in_flight() == 0
    sweep_until(services, lambda: machine.request["id"] in fly.deleted)
    assert fly.delete_tries.count(machine.request["id"]) == 3  # at the reset, at a sweep, confirmed at the next
    sweep_until(services, lambda: store.get_batch("batch_abc").active is None)  # nothing left: out of the index


def sweep_until(services, done, timeout: float = 15) -> None:
    """Run the tick's sweeps until `done()`; an ended batch stays in the sweeps' partition
    of the index meanwhile."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not reached in time"
        assert store.get_batch("batch_abc").active in ("sweep", None)
        time.sleep(0.1)
        scheduler.run_due_sweeps(services, "test-tick")
