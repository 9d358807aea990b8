"""Pool mode under concurrency (issue 17): what an adversarial reviewer found, each driven
through the real routes and store against moto.

- a machine with two slots is not retired while one slot still converts;
- a pool over its target sheds only its surplus, and a pass raising the target tells no
  pull to exit;
- a heartbeat of a machine that is gone moves nothing;
- non-ASCII bearer tokens are a 401 like any wrong token.
"""

from __future__ import annotations

import time

from chalicelib import store
from chalicelib.pool import machine_api

from .conftest import get_status, list_tasks, make_services, run_pass
from .ddb_hooks import DynamoHooks
from .pool_machine import PlayedMachine
from .test_orch_pool import POOL, in_flight, machines, start


def now_ms() -> int:
    return int(time.time() * 1000)


def machine_state(played: PlayedMachine) -> str:
    return store.get_machine(played.batch_id, played.name).state


# ---- 1. two slots on one machine ---------------------------------------------------------

def test_a_slot_told_no_work_does_not_retire_a_machine_whose_other_slot_converts(services, client, fly, env):
    services = start(env, tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1", WORKER_CONCURRENCY="2")
    run_pass(services)
    [machine] = machines(client, fly)
    task = machine.pull()["task"]  # slot 1: the batch's last task
    assert machine.pull() == {"action": "exit", "reason": "no work left"}  # slot 2 ends
    assert machine_state(machine) == "running"  # slot 1 still holds its task
    assert in_flight() == 1
    assert machine.heartbeat(task)["action"] == "continue"  # not killed mid-conversion
    assert machine.report(task) == {"ok": True}
    assert machine.pull() == {"action": "exit", "reason": "no work left"}  # the last slot
    assert machine_state(machine) == "gone" and in_flight() == 0
    assert get_status(client)["progress"]["tasks_completed"] == 1


def test_a_machine_holding_a_task_is_not_retired_when_its_pull_is_refused(services, client, fly, env):
    """The retire of an idle machine is a condition of its own transaction: a claim that
    lands between the pull's read and the retire keeps the machine."""
    services = start(env, tiffs=2, MAX_POOL_MACHINES_PER_BATCH="1", WORKER_CONCURRENCY="2")
    run_pass(services)
    [machine] = machines(client, fly)
    machine.pull()
    held = machine.pull()["task"]
    assert not store.retire_machine(services.settings, "batch_abc", machine.name, "no work left", now_ms(),
                                    idle_only=True)
    assert machine_state(machine) == "running" and machine.heartbeat(held)["action"] == "continue"


# ---- 2. a pool over its target ------------------------------------------------------------

def test_a_pool_over_its_target_sheds_only_its_surplus(services, client, fly, env):
    services = start(env, tiffs=8, MAX_POOL_MACHINES_PER_BATCH="4")
    run_pass(services)
    pool = machines(client, fly)
    assert len(pool) == 4
    store.record_pool_pass("batch_abc", 2, "fair share", 3000, {"total": 0, "count": 0})  # another batch came
    answers = [m.pull() for m in pool]  # all within the pulls' one-second view of the batch
    assert sorted(a["action"] for a in answers) == ["exit", "exit", "task", "task"]
    assert {a["reason"] for a in answers if a["action"] == "exit"} == {"pool over its target"}
    assert int(store.get_batch("batch_abc").machines_live) == 2 and in_flight() == 2
    assert sorted(machine_state(m) for m in pool) == ["gone", "gone", "running", "running"]


def test_a_pull_during_a_pass_that_raises_the_target_is_not_told_to_exit(services, client, fly, env):
    services = start(env, tiffs=40, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [first] = machines(client, fly)
    first.report(first.pull()["task"])
    services = make_services(env, **POOL, MAX_POOL_MACHINES_PER_BATCH="5")  # the cap rose: so does the target
    hooks = DynamoHooks(services.settings)
    answers: list[dict] = []

    def adds_a_machine(operation: str, params: dict) -> bool:
        return operation == "TransactWriteItems" and "#machine#" in str(params) and "Put" in str(params)

    # right after the pass's first new machine is recorded, the old machine pulls
    hooks.once(adds_a_machine, lambda: answers.append(machine_api.pull(
        services, first.batch_id, first.name, f"Bearer {first.token}")))
    try:
        time.sleep(machine_api.BATCH_CACHE_S)  # the pull's view of the batch is renewed
        run_pass(services)
    finally:
        hooks.detach()
    assert len(fly.created()) > 2
    assert answers and answers[0]["action"] == "task", answers
    assert machine_state(first) == "running"


# ---- 3. a heartbeat of a machine that is gone ---------------------------------------------

def test_a_heartbeat_of_a_retired_machine_moves_no_deadline(services, client, fly, env):
    services = start(env, tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = machines(client, fly)
    task = machine.pull()["task"]
    before = int(store.get_task("batch_abc", task["task_id"]).open_due)
    assert store.retire_machine(services.settings, "batch_abc", machine.name, "silent", now_ms())
    time.sleep(0.05)
    assert machine.heartbeat(task) == {"action": "drop"}
    assert int(store.get_task("batch_abc", task["task_id"]).open_due) == before


# ---- 4. tokens that are not ASCII ---------------------------------------------------------

def test_a_non_ascii_token_is_a_401_on_pull_heartbeat_and_callback(services, client, fly, env):
    services = start(env, tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = machines(client, fly)
    task = machine.pull()["task"]
    for token in ("é", "tøken-" + "a" * 58, "\u2603" * 64):
        for kind in ("pull", "heartbeat"):
            response = machine._post(kind, {"task_id": task["task_id"], "attempt": task["attempt"]}, token=token)
            assert response.status_code == 401, (kind, token, response.body)
            assert "error" in response.json_body
        forged = {**task, "callback_token": token}
        path = task["callback_url"].split("orchestrator.test", 1)[1]
        response = client.http.post(path, body=b'{}', headers={"Content-Type": "application/json",
                                                               "Authorization": f"Bearer {forged['callback_token']}"})
        assert response.status_code == 401 and "error" in response.json_body
    assert list_tasks(client, status="processing")[0]["attempts"] == 1


def test_a_surplus_machine_whose_other_slot_converts_drains_and_keeps_its_slot_until_it_ends(services, client,
                                                                                              fly, env):
    services = start(env, tiffs=6, MAX_POOL_MACHINES_PER_BATCH="2", WORKER_CONCURRENCY="2")
    run_pass(services)
    busy, other = machines(client, fly)
    held = busy.pull()["task"]  # slot 1 of each machine converts
    other.pull()
    store.record_pool_pass("batch_abc", 1, "fair share", 3000, {"total": 0, "count": 0})
    time.sleep(machine_api.BATCH_CACHE_S)  # the pulls' view of the batch is renewed
    assert busy.pull() == {"action": "exit", "reason": "pool over its target"}  # slot 2: no more work
    assert machine_state(busy) == "draining"
    assert int(store.get_batch("batch_abc").machines_live) == 1  # left the pool's count at once
    assert in_flight() == 2  # but its in-flight slot stays while it converts
    # the pool is at its target now, though this process's view says otherwise: the other
    # machine, busy too, is not drained, and its free slot takes work
    assert other.pull()["action"] == "task" and machine_state(other) == "running"
    assert busy.heartbeat(held)["action"] == "continue"
    assert busy.pull()["action"] == "exit"  # a draining machine takes no more work
    assert busy.report(held) == {"ok": True}
    assert busy.pull()["action"] == "exit"  # its last slot: now it ends
    assert machine_state(busy) == "gone" and in_flight() == 1
    assert int(store.get_batch("batch_abc").machines_live) == 1  # counted out once, not twice
