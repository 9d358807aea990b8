"""The standing pool (issue 18, docs/pool.md "Standing pool"): machines created once, stopped
between batches, started for the next. Played through the real routes against moto and the
loopback Fly stand-in; each test checks a machine serves one batch at a time, is counted
once, and is stopped, not destroyed, unless it is idle too long, hung or refused."""

from __future__ import annotations

import time

import app
from chalicelib import scheduler, shutdown, signing, store
from chalicelib.pool import retention
from chalicelib.store import standing as standing_store

from .conftest import (
    BASE_ENV,
    LambdaContext,
    drive,
    get_status,
    make_services,
    message,
    post_admin,
    run_pass,
    sqs_event,
)
from .pool_machine import PlayedMachine
from .test_orch_pool import in_flight

STANDING = {"MACHINE_MODE": "pool", "POOL_BOOT_MS": "0", "POOL_START_MS": "0", "HEARTBEAT_INTERVAL_MS": "300",
            "POOL_STANDING": "true"}


class StandingMachine(PlayedMachine):
    """A standing machine as the worker plays it: its first pull after a start on the
    machine's own route, the next ones on the `pull_url` the answer gave."""

    def __init__(self, client, request) -> None:
        super().__init__(client, request)
        self.pull_path: str | None = None

    def pull(self, token: str | None = None) -> dict:
        path = self.pull_path or f"/pool/machines/{self.name}/pull"
        response = self.client.http.post(path, body=b"{}", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {token or self.token}"})
        assert response.status_code == 200, response.body
        answer = response.json_body
        if "pull_url" in answer:
            self.pull_path = answer["pull_url"].split("orchestrator.test", 1)[1]
            self.batch_id = self.pull_path.split("/")[2]
        if answer["action"] == "exit":
            self.pull_path = None  # the worker exits; the next start pulls on the machine's route
        return answer


def start_batch(env, batch_id: str, tiffs: int, **overrides: str):
    services = make_services(env, **{**STANDING, **overrides})
    app.intake(sqs_event(message(batch_id=batch_id, tiffs=tiffs, others=0), message_id=batch_id), LambdaContext(30))
    return services


def standing(client, fly) -> list[StandingMachine]:
    return [StandingMachine(client, r) for r in fly.created()]


def state_of(machine: PlayedMachine) -> str:
    return standing_store.get_standing(machine.name).state


def starts(fly) -> list[dict]:
    return [a for a in fly.actions if a["action"] == "start"]


def one_batch_done(env, client, fly) -> StandingMachine:
    """A one-TIFF batch worked to DONE by one standing machine, now stopped."""
    services = start_batch(env, "batch_one", tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = standing(client, fly)
    machine.work_until_exit()
    drive(services, lambda: get_status(client, "batch_one")["status"] == "DONE")
    return machine


def one_machine_working(env, client, fly):
    """A two-TIFF batch's one standing machine, started and holding its first task."""
    services = start_batch(env, "batch_one", tiffs=2, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = standing(client, fly)
    machine.pull()
    return services, machine


def test_a_standing_machine_is_created_for_no_batch_and_stopped_when_its_work_ends(services, client, fly, env):
    services = start_batch(env, "batch_one", tiffs=2, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = standing(client, fly)
    config = machine.request["body"]["config"]
    assert "BATCH_ID" not in config["env"] and config["auto_destroy"] is False
    assert machine.token == signing.standing_token(BASE_ENV["CALLBACK_SIGNING_KEY"], machine.name)
    ran = machine.work_until_exit()
    assert len(ran) == 2 and {t["batch_id"] for t in ran} == {"batch_one"}
    assert state_of(machine) == "stopped" and fly.deleted == []  # kept for the next batch
    assert in_flight() == 0 and standing_store.standing_count() == 1
    drive(services, lambda: get_status(client, "batch_one")["status"] == "DONE")


def test_the_next_batch_starts_the_stopped_machine_instead_of_creating_one(services, client, fly, env):
    machine = one_batch_done(env, client, fly)
    services = start_batch(env, "batch_two", tiffs=3, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    assert len(fly.created()) == 1 and [a["id"] for a in starts(fly)] == [machine.request["id"]]
    assert state_of(machine) == "started" and store.get_standing(machine.name).batch == "batch_two"
    ran = machine.work_until_exit()
    assert {t["batch_id"] for t in ran} == {"batch_two"} and len(ran) == 3
    drive(services, lambda: get_status(client, "batch_two")["status"] == "DONE")
    assert int(store.get_standing(machine.name).starts) == 2 and fly.deleted == []


def test_a_start_fly_refuses_falls_back_to_a_creation(services, client, fly, env):
    first = one_batch_done(env, client, fly)
    fly.start_script = [409]  # its host is full
    services = start_batch(env, "batch_two", tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    assert [a["answer"] for a in starts(fly)] == [409]
    assert len(fly.created()) == 2  # created instead, in the same pass
    record = store.get_standing(first.name)
    assert record.state == "stopped" and int(record.start_failures) == 1 and int(record.live_seen) == 0
    assert store.get_machine("batch_two", first.name).state == "gone"  # its stint given back
    assert int(store.get_batch("batch_two").machines_live) == 1 and in_flight() == 1


def test_a_machine_fly_no_longer_knows_is_gone(services, client, fly, env):
    first = one_batch_done(env, client, fly)
    fly.start_script = [404]
    services = start_batch(env, "batch_two", tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    assert state_of(first) == "gone" and standing_store.standing_count() == 1  # the new one only


def test_a_stale_machine_gets_the_new_config_before_it_starts(services, client, fly, env):
    machine = one_batch_done(env, client, fly)
    services = start_batch(env, "batch_two", tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1",
                           FLY_WORKER_IMAGE="registry.fly.io/arke-tiff-worker:v2")
    run_pass(services)
    update, start = fly.actions[-2:]
    assert (update["action"], start["action"]) == ("update", "start")
    assert update["body"]["config"]["image"] == "registry.fly.io/arke-tiff-worker:v2"
    assert update["body"]["config"]["auto_destroy"] is False
    before = store.get_standing(machine.name).config_version
    machine.work_until_exit()
    assert store.get_standing(machine.name).config_version == before  # recorded at the start


def test_a_reset_stops_standing_machines_rather_than_destroying_them(services, client, fly, env):
    services = start_batch(env, "batch_one", tiffs=4, MAX_POOL_MACHINES_PER_BATCH="2")
    run_pass(services)
    pool = standing(client, fly)
    held = pool[0].pull()["task"]
    assert post_admin(client, "reset", "batch_one").status_code == 200
    assert fly.deleted == []
    assert sorted(a["id"] for a in fly.actions if a["action"] == "stop") == sorted(m.request["id"] for m in pool)
    assert {state_of(m) for m in pool} == {"stopped"} and in_flight() == 0
    assert pool[0].report(held)["ignored"] is True
    assert pool[0].pull()["action"] == "exit"  # its record is stopped: not started for a batch
    assert store.machines_to_destroy("batch_one", 10**15) == []  # no later sweep destroys them


def test_a_machine_fly_did_not_stop_at_the_end_is_stopped_by_the_sweep(services, client, fly, env):
    services, machine = one_machine_working(env, client, fly)
    fly.stop_script = [503, 503]  # Fly fails the end's stop and the first sweep's
    assert post_admin(client, "reset", "batch_one").status_code == 200
    assert state_of(machine) == "started"
    deadline = time.monotonic() + 15
    while state_of(machine) != "stopped":
        assert time.monotonic() < deadline, "never stopped"
        time.sleep(0.1)
        scheduler.run_due_sweeps(services, "test-tick")
    assert [a["answer"] for a in fly.actions if a["action"] == "stop"] == [503, 503, 200]
    scheduler.run_due_sweeps(services, "test-tick")


def test_a_machine_fly_no_longer_knows_at_the_end_is_gone_not_stopped_for_ever(services, client, fly, env):
    services, machine = one_machine_working(env, client, fly)
    fly.stop_script = [404]
    assert post_admin(client, "reset", "batch_one").status_code == 200
    assert state_of(machine) == "gone" and standing_store.standing_count() == 0
    assert standing_store.started_for("batch_one") == []  # the sweep has nothing left to stop


def test_machines_idle_past_the_retention_are_destroyed_but_the_minimum_is_kept(services, client, fly, env):
    services = start_batch(env, "batch_one", tiffs=3, MAX_POOL_MACHINES_PER_BATCH="3",
                           POOL_IDLE_RETENTION_S="0", POOL_MIN_MACHINES="1")
    run_pass(services)
    pool = standing(client, fly)
    assert len(pool) == 3
    for m in pool:
        m.work_until_exit()
    patient = make_services(env, **{**STANDING, "POOL_MIN_MACHINES": "1"})  # the default hour
    assert retention.retire_idle(patient) == 0 and fly.deleted == []
    time.sleep(0.01)
    assert retention.retire_idle(services) == 2
    assert sorted(state_of(m) for m in pool) == ["gone", "gone", "stopped"]
    assert len(fly.deleted) == 2 and standing_store.standing_count() == 1
    kept = next(m for m in pool if state_of(m) == "stopped")
    assert kept.name == standing_store.all_stopped(10)[0].name  # the most recently stopped


def test_a_failed_destroy_of_an_idle_machine_is_tried_again(services, client, fly, env):
    services = start_batch(env, "batch_one", tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1", POOL_IDLE_RETENTION_S="0")
    run_pass(services)
    [machine] = standing(client, fly)
    machine.work_until_exit()
    fly.delete_script = [503]
    assert retention.retire_idle(services) == 0
    assert [m.name for m in standing_store.to_destroy(10**15)] == [machine.name]
    time.sleep(2.1)  # the first retry's backoff
    assert retention.retire_idle(services) == 1
    assert machine.request["id"] in fly.deleted and standing_store.to_destroy(10**15) == []


def test_the_standing_pool_stops_growing_at_its_maximum(services, client, fly, env):
    services = start_batch(env, "batch_one", tiffs=6, MAX_POOL_MACHINES_PER_BATCH="6", POOL_MAX_MACHINES="2")
    run_pass(services)
    run_pass(services)
    assert len(fly.created()) == 2 and standing_store.standing_count() == 2


def test_two_batches_never_start_one_machine(services, client, fly, env):
    services = start_batch(env, "batch_one", tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = standing(client, fly)
    machine.work_until_exit()
    now = int(time.time() * 1000)
    assert standing_store.take_stopped(machine.name, "batch_two", now)
    assert not standing_store.take_stopped(machine.name, "batch_three", now)
    assert store.get_standing(machine.name).batch == "batch_two"


def test_a_standing_token_claims_nothing_in_a_batch_it_was_not_started_for(services, client, fly, env):
    services = start_batch(env, "batch_one", tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1")
    app.intake(sqs_event(message(batch_id="batch_other", tiffs=2, others=0), message_id="o"), LambdaContext(30))
    run_pass(services)
    machines = standing(client, fly)
    stranger = next(m for m in machines if store.get_standing(m.name).batch == "batch_one")
    response = client.http.post(f"/pool/batch_other/machines/{stranger.name}/pull", body=b"{}", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {stranger.token}"})
    held = [t for t in store.iter_tasks("batch_other") if t.pool_machine == stranger.name]
    assert response.status_code in (200, 404) and held == []
    if response.status_code == 200:
        assert response.json_body["action"] != "task"


def test_a_silent_standing_machine_is_destroyed_not_kept(services, client, fly, env):
    services = start_batch(env, "batch_one", tiffs=2, MAX_POOL_MACHINES_PER_BATCH="1", HEARTBEAT_TIMEOUT_MS="1000")
    run_pass(services)
    [hung] = standing(client, fly)
    hung.pull()
    time.sleep(1.1)
    run_pass(services)
    assert hung.request["id"] in fly.deleted and state_of(hung) == "gone"
    assert standing_store.standing_count() == 0
    drive(services, lambda: len(fly.created()) == 2)
    assert standing_store.standing_count() == 1  # only its replacement


def test_a_standing_machines_heartbeat_and_result_count_on_its_batch_routes(services, client, fly, env):
    services = start_batch(env, "batch_one", tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1")
    run_pass(services)
    [machine] = standing(client, fly)
    task = machine.pull()["task"]
    assert machine.heartbeat(task)["action"] == "continue"  # its heartbeat route takes its token
    assert machine.report(task) == {"ok": True}
    assert get_status(client, "batch_one")["progress"]["tasks_completed"] == 1


def test_a_machine_started_twice_in_one_batch_is_one_record_of_two_stints(services, client, fly, env):
    """A standing machine that exited may be started again in the same batch: its record
    is made live again (not a second one), and `stints` keeps the batch's machines_created
    equal to what its records say."""
    services = start_batch(env, "batch_one", tiffs=2)
    settings, phase = services.settings, get_status(client, "batch_one")["status"]
    name = "tiff-pool-0123456789ab"
    assert store.add_machine(settings, "batch_one", phase, name, 1, standing=True)
    assert not store.add_machine(settings, "batch_one", phase, name, 2, standing=True)  # live: not twice
    assert store.retire_machine(settings, "batch_one", name, "told to exit", 3)
    assert store.add_machine(settings, "batch_one", phase, name, 4, standing=True)
    record, batch = store.get_machine("batch_one", name), store.get_batch("batch_one")
    assert (record.state, int(record.stints), record.gone_reason) == ("creating", 2, None)
    assert (int(batch.machines_created), int(batch.machines_live)) == (2, 1) and in_flight() == 1


def test_a_larger_tiers_stopped_machine_is_started_for_the_next_batchs_large_task(services, client, fly, env):
    def bounced_then_converted(batch_id: str) -> None:
        services = start_batch(env, batch_id, tiffs=1, MAX_POOL_MACHINES_PER_BATCH="2", ALARM_DELAY_ERROR_RETRY="50")
        run_pass(services)
        base = next(m for m in standing(client, fly) if "-pool-m" not in m.name)
        task = base.pull()["task"]
        base.report(task, ok=False, error_code="needs_memory", memory_mb=3000)
        assert base.pull()["action"] == "exit"  # the smallest machine never takes the band-1 task
        [machine] = drive(services, lambda: [m for m in standing(client, fly) if "-pool-m4096-" in m.name
                                             and state_of(m) == "started"])
        assert machine.work_until_exit()[0]["task_id"] == task["task_id"]
        drive(services, lambda: get_status(client, batch_id)["status"] == "DONE")

    def tiered() -> StandingMachine:
        [machine] = [m for m in standing(client, fly) if "-pool-m4096-" in m.name]
        return machine

    bounced_then_converted("batch_one")
    assert state_of(tiered()) == "stopped" and int(store.get_standing(tiered().name).memory_mb) == 4096
    bounced_then_converted("batch_two")
    assert len(fly.created()) == 2  # both machines started again, none created
    assert tiered().request["id"] in [a["id"] for a in starts(fly)]
    assert int(store.get_standing(tiered().name).starts) == 2 and fly.deleted == []


def test_a_machine_fly_refuses_to_stop_at_the_end_is_destroyed_not_stopped_for_ever(services, client, fly, env):
    # 412: Fly will not stop it (destroyed behind our back, or stuck); every sweep would ask again
    services, machine = one_machine_working(env, client, fly)
    fly.stop_script = [412]
    assert post_admin(client, "reset", "batch_one").status_code == 200
    assert state_of(machine) == "gone" and standing_store.standing_count() == 0
    assert machine.request["id"] in fly.deleted and standing_store.to_destroy(10**15) == []
    assert standing_store.started_for("batch_one") == []


def _killed_after_retiring(services, machine: PlayedMachine, batch_id: str) -> None:
    """What a pass killed inside pool/liveness.retire_silent leaves: the stint retired for a
    destroy, its standing record not yet gone, nothing destroyed."""
    assert store.retire_machine(services.settings, batch_id, machine.name, "silent", int(time.time() * 1000),
                                destroy=True)


def test_a_pass_killed_between_a_silent_stints_retire_and_its_standing_record_leaves_none_started(
        services, client, fly, env):
    # found by the pool chaos test: the record stayed started for the ended batch and every
    # sweep's stop got a 412 from the machine the destroy queue had removed
    services, machine = one_machine_working(env, client, fly)
    _killed_after_retiring(services, machine, "batch_one")
    assert shutdown.retry_destroys(services, "batch_one") == 1
    assert machine.request["id"] in fly.deleted
    assert state_of(machine) == "gone" and standing_store.standing_count() == 0
    assert standing_store.started_for("batch_one") == []


def test_a_retired_stint_does_not_destroy_a_machine_that_went_back_to_the_stopped_pool(services, client, fly, env):
    services, machine = one_machine_working(env, client, fly)
    _killed_after_retiring(services, machine, "batch_one")
    assert standing_store.stopped(machine.name, "batch_one", int(time.time() * 1000))  # the end stopped it
    assert shutdown.retry_destroys(services, "batch_one") == 0
    assert fly.deleted == [] and state_of(machine) == "stopped" and standing_store.standing_count() == 1
    assert store.machines_to_destroy("batch_one", 10**15) == []  # no later sweep destroys it


def _bounce_to_tier_one(services, client, fly) -> dict:
    """The batch's smallest machine pulls its task and answers needs_memory: band 1 waits."""
    run_pass(services)
    base = next(m for m in standing(client, fly) if "-pool-m" not in m.name and state_of(m) == "started")
    task = base.pull()["task"]
    base.report(task, ok=False, error_code="needs_memory", memory_mb=3000)
    return task


def test_a_full_standing_pool_gives_a_stopped_machine_of_another_memory_s_place_to_a_tier(
        services, client, fly, env):
    # found by the fleet simulation: a pool full of the smallest machines stalled large TIFFs
    # until POOL_IDLE_RETENTION_S destroyed stopped ones
    full = {"POOL_MAX_MACHINES": "1", "ALARM_DELAY_ERROR_RETRY": "50"}
    first = one_batch_done(env, client, fly)  # the whole pool: one stopped machine of 2048 MB
    services = start_batch(env, "batch_two", tiffs=1, MAX_POOL_MACHINES_PER_BATCH="2", **full)
    task = _bounce_to_tier_one(services, client, fly)  # `first`, started again
    assert first.pull()["action"] == "exit" and state_of(first) == "stopped"
    [tiered] = drive(services, lambda: [m for m in standing(client, fly) if "-pool-m4096-" in m.name])
    assert state_of(first) == "gone" and first.request["id"] in fly.deleted  # it gave its place
    assert state_of(tiered) == "started" and standing_store.standing_count() == 1
    assert tiered.work_until_exit()[0]["task_id"] == task["task_id"]
    drive(services, lambda: get_status(client, "batch_two")["status"] == "DONE")
    assert state_of(tiered) == "stopped"  # kept for the next batch's large TIFFs


def test_a_full_standing_pool_in_use_creates_a_tier_machine_for_its_batch_only(services, client, fly, env):
    services = start_batch(env, "batch_one", tiffs=2, MAX_POOL_MACHINES_PER_BATCH="3", POOL_MAX_MACHINES="1",
                           ALARM_DELAY_ERROR_RETRY="50")
    task = _bounce_to_tier_one(services, client, fly)  # the pool's one machine, busy
    [request] = drive(services, lambda: [r for r in fly.created() if "-pool-m4096-" in r["body"]["name"]])
    tiered = PlayedMachine(client, request)
    assert tiered.env["BATCH_ID"] == "batch_one" and request["body"]["config"]["auto_destroy"] is True
    assert standing_store.get_standing(tiered.name) is None and standing_store.standing_count() == 1
    assert tiered.pull_task()["task_id"] == task["task_id"]
    [base] = [m for m in standing(client, fly) if "-pool-m" not in m.name]
    assert post_admin(client, "reset", "batch_one").status_code == 200
    assert fly.deleted == [request["id"]]  # the batch's own machine is destroyed at its end
    assert state_of(base) == "stopped" and base.request["id"] in [a["id"] for a in fly.actions
                                                                     if a["action"] == "stop"]
