"""Pool mode (issue 10, docs/pool.md): machines that pull tasks until none is left.

Machines are played through the real routes (pool_machine.PlayedMachine); Fly is the
loopback stub, DynamoDB is moto. Each test checks what the pool must hold: one attempt per
machine, counted once, machines counted once, and nothing left running.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import app
from chalicelib import signing, store
from chalicelib.ddb_metrics import RequestCounter
from chalicelib.models import IN_FLIGHT_KEY, TASK_SHARDS, InFlight
from chalicelib.pool import candidates, machine_api
from chalicelib.pool.candidates import Candidates

from .conftest import (
    BASE_ENV,
    LambdaContext,
    drive,
    get_status,
    list_tasks,
    make_services,
    message,
    post_admin,
    run_pass,
    sqs_event,
)
from .pool_machine import PlayedMachine

# Machines made for one batch and destroyed after it; the standing pool has its own tests
# (test_orch_standing.py).
POOL = {"MACHINE_MODE": "pool", "POOL_BOOT_MS": "0", "HEARTBEAT_INTERVAL_MS": "300", "POOL_STANDING": "false"}


def start(env, tiffs: int, **overrides: str):
    services = make_services(env, **{**POOL, **overrides})
    app.intake(sqs_event(message(tiffs=tiffs, others=1)), LambdaContext(30))
    return services


def machines(client, fly) -> list[PlayedMachine]:
    return [PlayedMachine(client, r) for r in fly.created()]


def in_flight() -> int:
    try:
        return int(InFlight.get(IN_FLIGHT_KEY, consistent_read=True).machines or 0)
    except InFlight.DoesNotExist:
        return 0


def test_a_pool_converts_a_batch_and_leaves_nothing_counted(services, client, fly, env):
    services = start(env, tiffs=6, MAX_POOL_MACHINES_PER_BATCH="2")
    run_pass(services)
    pool = machines(client, fly)
    assert len(pool) == 2  # the per-batch cap, not one machine per TIFF
    request = pool[0].request["body"]
    assert request["config"]["guest"] == {"cpu_kind": "performance", "cpus": 1, "memory_mb": 2048}
    assert "TASK_ID" not in pool[0].env and pool[0].env["WORKER_MODE"] == "pool"
    assert pool[0].token == signing.machine_token(BASE_ENV["CALLBACK_SIGNING_KEY"], "batch_abc", pool[0].name)

    ran = pool[0].work_until_exit() + pool[1].work_until_exit()
    assert sorted(t["task_id"] for t in ran) == sorted(t["task_id"] for t in list_tasks(client))
    assert all(t["attempt"] == 1 for t in ran)
    drive(services, lambda: get_status(client)["status"] == "DONE")
    status = get_status(client)
    assert status["progress"]["tasks_completed"] == 6 and status["progress"]["tasks_in_flight"] == 0
    batch = store.get_batch("batch_abc")
    assert int(batch.machines_live) == 0 and int(batch.machines_created) == 2
    assert in_flight() == 0
    assert {m.state for m in (store.get_machine("batch_abc", p.name) for p in pool)} == {"gone"}
    assert sum(int(store.get_machine("batch_abc", p.name).tasks_done) for p in pool) == 6
    assert len(fly.created()) == 2  # no machine was created after the work ran out


def test_concurrent_pulls_never_hand_one_attempt_to_two_machines(services, client, fly, env):
    services = start(env, tiffs=12, MAX_POOL_MACHINES_PER_BATCH="6")
    run_pass(services)
    pool = machines(client, fly)
    assert len(pool) == 6
    counter = RequestCounter().attach(services.settings)

    def pull_at_once(pulls: list[PlayedMachine]) -> list[dict]:
        barrier = threading.Barrier(len(pulls))

        def pull(machine: PlayedMachine) -> dict:
            barrier.wait()
            return machine_api.pull(services, machine.batch_id, machine.name, f"Bearer {machine.token}")

        with ThreadPoolExecutor(max_workers=len(pulls)) as workers:
            return list(workers.map(pull, pulls))

    first = pull_at_once([m for m in pool for _ in range(2)])
    # one process hands each pull its own candidate: every ready task goes out, no claim is
    # lost to another pull, and one read of the shards serves all twelve pulls
    assert [a["action"] for a in first] == ["task"] * 12
    requests_made = counter.take()
    assert requests_made["TransactWriteItems"] == 12 and requests_made["Query"] <= TASK_SHARDS
    then = pull_at_once(pool)
    assert {a["action"] for a in then} == {"exit"}  # the work ran out
    handed = [a["task"] for a in first]
    assert len({(t["task_id"], t["attempt"]) for t in handed}) == 12  # none handed twice
    processing = list_tasks(client, status="processing")
    assert len(processing) == len(handed) == get_status(client)["progress"]["tasks_in_flight"]
    held = {name for t in processing for name in [t["machine_name"]]}
    assert held <= {m.name for m in pool}


def test_a_candidate_claimed_through_another_process_is_not_handed_out_again(services, client, fly, env):
    """Two API processes (Lambda containers) keep their own candidates: one's may be stale
    by the time it hands it out. The claim's condition on the attempt read refuses it."""
    services = start(env, tiffs=2, MAX_POOL_MACHINES_PER_BATCH="2")
    run_pass(services)
    first, second = machines(client, fly)
    other = dataclasses.replace(services, candidates=Candidates(services.candidates.read_ready), pulled_batches={})

    def pull(via, machine: PlayedMachine) -> dict:
        return machine_api.pull(via, machine.batch_id, machine.name, f"Bearer {machine.token}")

    taken = pull(other, first)["task"]  # the other process reads both tasks, hands out one
    mine = pull(services, second)["task"]  # this one reads afresh: only the other task is ready
    assert mine["task_id"] != taken["task_id"]
    stale = pull(other, first)  # the other process's last candidate is the task just claimed here
    assert stale["action"] == "wait"
    assert {t["task_id"] for t in list_tasks(client, status="processing")} == {taken["task_id"], mine["task_id"]}
    assert get_status(client)["progress"]["tasks_in_flight"] == 2


def test_candidates_older_than_their_age_are_read_again(services, client, fly, env):
    services = start(env, tiffs=3, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = machines(client, fly)
    clock = [1000.0]
    services = dataclasses.replace(services, candidates=Candidates(store.ready_tasks_from, clock=lambda: clock[0]))
    counter = RequestCounter().attach(services.settings)

    def queries_of_a_pull(after_s: float) -> int:
        clock[0] += after_s
        counter.take()
        assert machine_api.pull(services, machine.batch_id, machine.name, f"Bearer {machine.token}")["action"] == "task"
        return counter.take()["Query"]

    assert queries_of_a_pull(0) >= 1  # the first pull reads the candidates
    assert queries_of_a_pull(candidates.MAX_AGE_S - 0.5) == 0  # still fresh: handed out unread
    assert queries_of_a_pull(candidates.MAX_AGE_S + 0.5) >= 1  # too old: read again


def test_a_retired_machines_pull_leaves_its_candidate_to_the_next_pull(services, client, fly, env):
    services = start(env, tiffs=2, MAX_POOL_MACHINES_PER_BATCH="2")
    run_pass(services)
    keeper, retired = machines(client, fly)
    first = keeper.pull()["task"]  # reads both ready tasks into the process's candidates
    assert store.retire_machine(services.settings, "batch_abc", retired.name, "test", int(time.time() * 1000))
    counter = RequestCounter().attach(services.settings)
    assert retired.pull() == {"action": "exit", "reason": "test"}
    second = keeper.pull()["task"]
    assert second["task_id"] != first["task_id"]
    assert counter.take()["Query"] == 0  # the retired machine's candidate came back, unread again


def test_a_machine_killed_mid_task_has_its_task_retried_after_the_heartbeat_timeout(services, client, fly, env):
    services = start(env, tiffs=1, HEARTBEAT_TIMEOUT_MS="1000", MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [dead] = machines(client, fly)
    first = dead.pull()["task"]  # then it dies: no heartbeat, no result
    assert first["deadline_ms"] - time.time() * 1000 < 1500

    drive(services, lambda: len(fly.created()) == 2, timeout=15)
    assert dead.request["id"] in fly.deleted  # silent: destroyed, and counted gone once
    assert store.get_machine("batch_abc", dead.name).state == "gone"
    replacement = machines(client, fly)[1]
    second = replacement.pull_task()
    assert (second["task_id"], second["attempt"]) == (first["task_id"], 2)
    assert dead.report(first)["ignored"] is True  # its late result counts nothing
    assert replacement.report(second) == {"ok": True}
    drive(services, lambda: get_status(client)["status"] == "DONE")
    assert get_status(client)["progress"]["tasks_completed"] == 1
    assert in_flight() == 0


def test_heartbeats_keep_a_slow_task_and_a_reassigned_attempt_is_dropped(services, client, fly, env):
    services = start(env, tiffs=1, HEARTBEAT_TIMEOUT_MS="1000", MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = machines(client, fly)
    task = machine.pull()["task"]
    for _ in range(6):  # 2.4 s: longer than the heartbeat timeout, alive all along
        time.sleep(0.4)
        assert machine.heartbeat(task)["action"] == "continue"
        run_pass(services)
    assert list_tasks(client)[0]["attempts"] == 1 and len(fly.created()) == 1
    stale = {**task, "attempt": task["attempt"] + 1}
    assert machine.heartbeat(stale) == {"action": "drop"}  # not an attempt it holds
    assert machine.report(task) == {"ok": True}
    assert machine.heartbeat(task) == {"action": "drop"}  # ended: nothing to keep


def test_a_forged_or_other_batchs_machine_token_gets_401(services, client, fly, env):
    services = start(env, tiffs=2, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = machines(client, fly)
    key = BASE_ENV["CALLBACK_SIGNING_KEY"]
    for token in ("forged", signing.machine_token(key, "batch_other", machine.name),
                  signing.machine_token(key, "batch_abc", "tiff-pool-someoneelse"),
                  signing.callback_token(key, "batch_abc", machine.name, 1)):
        for kind in ("pull", "heartbeat"):
            response = machine._post(kind, {"task_id": "tiff_x", "attempt": 1}, token=token)
            assert response.status_code == 401, (kind, token)
    response = client.http.post(f"/pool/batch_abc/machines/{machine.name}/pull")
    assert response.status_code == 401
    assert list_tasks(client, status="processing") == []  # nothing was claimed


def test_reset_stops_the_pool_and_destroys_its_machines(services, client, fly, env):
    services = start(env, tiffs=4, MAX_POOL_MACHINES_PER_BATCH="3")
    run_pass(services)
    pool = machines(client, fly)
    held = pool[0].pull()["task"]
    assert post_admin(client, "reset").status_code == 200
    assert sorted(fly.deleted) == sorted(m.request["id"] for m in pool)
    assert in_flight() == 0 and int(store.get_batch("batch_abc").machines_live) == 0
    assert all(store.get_machine("batch_abc", m.name).state == "gone" for m in pool)
    assert pool[1].pull()["action"] == "exit"
    assert pool[0].report(held)["ignored"] is True
    assert pool[0].heartbeat(held) == {"action": "drop"}


def test_a_pull_after_the_batch_ended_is_told_no_work(services, client, fly, env):
    services = start(env, tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = machines(client, fly)
    machine.report(machine.pull()["task"])
    assert "batch_abc" in services.candidates
    drive(services, lambda: get_status(client)["status"] == "DONE")
    time.sleep(machine_api.BATCH_CACHE_S)  # the pull sees the batch's end once its view is renewed
    assert machine.pull()["action"] == "exit"
    assert in_flight() == 0
    assert "batch_abc" not in services.candidates  # an ended batch's reads are not kept


def test_a_callback_url_naming_the_wrong_machine_still_counts_once(services, client, fly, env):
    services = start(env, tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = machines(client, fly)
    task = machine.pull()["task"]
    wrong = task["callback_url"].replace(f"machine={machine.name}", "machine=tiff-pool-nobody")
    assert machine.report(task, url=wrong) == {"ok": True}
    assert machine.report(task)["ignored"] is True
    assert get_status(client)["progress"]["tasks_completed"] == 1
    assert store.get_machine("batch_abc", machine.name).holding is None


def test_a_retry_waiting_out_its_backoff_keeps_the_machine_waiting(services, client, fly, env):
    services = start(env, tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1", ALARM_DELAY_ERROR_RETRY="3000")
    run_pass(services)
    [machine] = machines(client, fly)
    task = machine.pull()["task"]
    assert machine.report(task, ok=False, error="flaky network", error_code="transfer_failed") == {"ok": True}
    answer = machine.pull()
    assert answer["action"] == "wait" and 200 <= answer["retry_after_ms"] <= 5000
    assert store.get_machine("batch_abc", machine.name).state == "running"


def test_a_429_on_a_pool_creation_gives_the_machine_back(services, client, fly, env):
    fly.script = [429]
    services = start(env, tiffs=3, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    assert fly.created() == [] and in_flight() == 0
    assert int(store.get_batch("batch_abc").machines_live) == 0
    time.sleep(2.1)  # the Retry-After
    drive(services, lambda: len(fly.created()) == 1)
    assert in_flight() == 1


def test_each_pass_logs_the_pool_target_and_its_reason(services, client, fly, env, logs):
    services = start(env, tiffs=5, MAX_POOL_MACHINES_PER_BATCH="2")
    run_pass(services)
    line = next(line for line in logs.readouterr().out.splitlines() if "pool_sized" in line)
    assert "[Pool]" in line and "batch_abc" in line and "target" in line and "batch cap" in line


def test_a_machine_told_to_exit_is_counted_gone_at_once(services, client, fly, env):
    services = start(env, tiffs=2, MAX_POOL_MACHINES_PER_BATCH="2")
    run_pass(services)
    first, second = machines(client, fly)
    assert in_flight() == 2
    first.report(first.pull()["task"])
    first.report(first.pull()["task"])
    assert second.pull() == {"action": "exit", "reason": "no work left"}
    assert store.get_machine("batch_abc", second.name).state == "gone"
    assert in_flight() == 1 and int(store.get_batch("batch_abc").machines_live) == 1


def test_another_machines_heartbeat_or_callback_url_moves_nothing_of_its_own(services, client, fly, env):
    services = start(env, tiffs=2, MAX_POOL_MACHINES_PER_BATCH="2")
    run_pass(services)
    holder, other = machines(client, fly)
    task = holder.pull()["task"]
    before = list_tasks(client, status="processing")[0]["attempts"]
    assert other.heartbeat(task) == {"action": "drop"}  # its own token, not its task
    # a result whose URL names the other (live) machine: counted on the machine that held it
    wrong = task["callback_url"].replace(f"machine={holder.name}", f"machine={other.name}")
    assert holder.report(task, url=wrong) == {"ok": True}
    assert int(store.get_machine("batch_abc", holder.name).tasks_done) == 1
    assert int(store.get_machine("batch_abc", other.name).tasks_done) == 0
    assert before == 1


def test_a_slow_task_times_out_without_destroying_its_healthy_machine(services, client, fly, env):
    services = start(env, tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1", TASK_TIMEOUT_TIFF_CONVERSION="1500")
    run_pass(services)
    [machine] = machines(client, fly)
    task = machine.pull()["task"]
    answers = []
    for _ in range(8):  # heartbeats all along, but the conversion runs past the task timeout
        time.sleep(0.3)
        answers.append(machine.heartbeat(task)["action"])
    assert answers[0] == "continue" and answers[-1] == "drop"
    drive(services, lambda: list_tasks(client)[0]["status"] == "pending" or list_tasks(client)[0]["attempts"] > 1)
    assert fly.deleted == []  # the machine spoke all along: only its task's attempt ended
    again = machine.pull()
    assert again["action"] in ("task", "wait")


def test_pool_machines_count_in_the_shared_in_flight_cap(services, client, fly, env):
    services = start(env, tiffs=6, MAX_POOL_MACHINES_PER_BATCH="5", MAX_MACHINES_IN_FLIGHT="2")
    run_pass(services)
    run_pass(services)
    assert len(fly.created()) == 2 and in_flight() == 2


def test_machine_records_hold_both_caps_and_count_a_machine_gone_once(services, env):
    services = make_services(env, **POOL, MAX_POOL_MACHINES_PER_BATCH="2")
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    settings, phase, now = services.settings, "TIFF_CONVERSION", int(time.time() * 1000)
    assert store.add_machine(settings, "batch_abc", phase, "m-1", now)
    assert store.add_machine(settings, "batch_abc", phase, "m-2", now)
    try:
        store.add_machine(settings, "batch_abc", phase, "m-3", now)
        raise AssertionError("a third machine was added over a per-batch cap of 2")
    except store.BatchPoolFull:
        pass
    assert in_flight() == 2
    assert not store.retire_machine(settings, "batch_abc", "m-1", "silent", now, silent_before=now - 1)
    assert store.get_machine("batch_abc", "m-1").state == "creating"  # it spoke since: kept
    assert store.retire_machine(settings, "batch_abc", "m-1", "done", now)
    assert not store.retire_machine(settings, "batch_abc", "m-1", "done again", now)
    assert in_flight() == 1 and int(store.get_batch("batch_abc").machines_live) == 1
    assert [m.name for m in store.live_machines("batch_abc")] == ["m-2"]
    # a machine retired between its pull's read and its claim claims nothing
    [task] = list(store.iter_tasks("batch_abc"))
    try:
        store.claim_for_machine(settings, task, phase, "m-1", now + 1000, now)
        raise AssertionError("a retired machine claimed a task")
    except store.MachineNotLive:
        pass
    assert store.get_task("batch_abc", task.task_id).status == "pending"
    assert store.claim_for_machine(settings, task, phase, "m-2", now + 1000, now) == 1


def test_the_shared_in_flight_cap_is_a_condition_of_each_machine_record(services, env):
    services = make_services(env, **POOL, MAX_MACHINES_IN_FLIGHT="1")
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    settings, now = services.settings, int(time.time() * 1000)
    assert store.add_machine(settings, "batch_abc", "TIFF_CONVERSION", "m-1", now)
    try:
        store.add_machine(settings, "batch_abc", "TIFF_CONVERSION", "m-2", now)
        raise AssertionError("a machine was added over MAX_MACHINES_IN_FLIGHT=1")
    except store.InFlightCapReached:
        pass
    assert in_flight() == 1 and store.get_machine("batch_abc", "m-2") is None
