"""Issue 8 §5: no orphan machines, no cap overrun. Machines are named per attempt, so one
whose creation was never recorded is found again by name and destroyed; a machine recorded
while a reset runs is not missed; the in-flight cap holds across ticks running at once."""

from __future__ import annotations

import threading
import time

import pytest

import app
from chalicelib import scheduler, store
from chalicelib.models import task_key

from .conftest import (
    LambdaContext,
    drive,
    get_status,
    list_tasks,
    make_services,
    message,
    post_admin,
    post_callback,
    run_pass,
    sqs_event,
)
from .ddb_hooks import (
    Crash,
    DynamoHooks,
    reads_in_flight_counter,
    reads_open_tasks,
    records_machine,
)


def test_a_pass_that_dies_between_creating_and_recording_a_machine_leaves_no_orphan(services, client, fly, env):
    services = make_services(env, LEASE_MS="1000", TASK_TIMEOUT_TIFF_CONVERSION="300")
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    hooks = DynamoHooks(services.settings)
    hooks.crash_before(records_machine)
    with pytest.raises(Crash):
        run_pass(services)
    hooks.detach()
    [orphan] = fly.created()
    [task] = list_tasks(client)
    assert task["status"] == "processing" and task["machine_id"] is None
    assert task["machine_name"] == orphan["body"]["name"]

    time.sleep(1.0)  # the dead pass's lease expires; the task's deadline passes
    drive(services, lambda: len(fly.created()) == 2)
    assert fly.deleted == [orphan["id"]]  # found by its name, destroyed
    retry = fly.requests[1]
    assert retry["body"]["name"] == orphan["body"]["name"] + "-2"
    # the orphan's late result counts nothing; the new attempt's does, once
    assert post_callback(client, orphan).json_body["ignored"] is True
    assert post_callback(client, retry).json_body == {"ok": True}
    drive(services, lambda: get_status(client)["status"] == "DONE")
    assert get_status(client)["progress"]["tasks_completed"] == 1


def test_a_creation_that_timed_out_but_happened_is_destroyed(services, client, fly):
    fly.script = ["timeout"]
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    run_pass(services)
    [behind_timeout] = fly.created()
    assert fly.deleted == [behind_timeout["id"]]
    [task] = list_tasks(client)
    assert task["status"] == "pending" and "timed out" in task["last_error"]


def test_a_machine_recorded_while_reset_reads_is_still_destroyed(services, client, fly):
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    [pending] = store.ready_tasks("batch_abc", 2**62, 10)
    # a pass claimed the task and is creating its machine ...
    name = f"tiff-{pending.task_id}"
    assert store.claim_task(services.settings, pending, "TIFF_CONVERSION", name, 2**62, 1) == 1
    hooks = DynamoHooks(services.settings)
    # ... and records it right after reset read the open tasks of the task's shard (reset
    # reads the shards one by one), before reset's transaction
    shard = task_key("batch_abc", pending.task_id)[0]

    def reads_the_tasks_shard(operation: str, params: dict) -> bool:
        return reads_open_tasks(operation, params) and shard in str(params.get("ExpressionAttributeValues"))

    hooks.once(reads_the_tasks_shard, lambda: store.record_machine("batch_abc", pending.task_id, 1, "m-late"))
    answer = post_admin(client, "reset")
    hooks.detach()
    assert answer.status_code == 200
    assert answer.json_body["tasks_closed"] == 1 and answer.json_body["machines_destroyed"] == 1
    assert fly.deleted == ["m-late"]
    assert store.in_flight_machines() == 0


def test_two_ticks_at_once_never_exceed_the_in_flight_cap(services, client, fly, env):
    services = make_services(env, MAX_MACHINES_IN_FLIGHT="5")
    for batch_id in ("batch_one", "batch_two"):
        app.intake(sqs_event(message(batch_id, tiffs=5, others=0)), LambdaContext(30))
    hooks = DynamoHooks(services.settings)
    barrier = threading.Barrier(2, timeout=10)
    for name in ("tick-a", "tick-b"):  # both have read the counter before either claims
        hooks.once(reads_in_flight_counter, barrier.wait, thread=name)
    time.sleep(services.settings.alarm_delay_tiff_conversion_ms / 1000 + 0.01)
    ticks = [threading.Thread(target=scheduler.run_due_passes, args=(services, name), name=name)
             for name in ("tick-a", "tick-b")]
    for tick in ticks:
        tick.start()
    for tick in ticks:
        tick.join(30)
    hooks.detach()
    assert len(fly.created()) == 5
    assert store.in_flight_machines() == 5
    # the cap frees as machines finish: the rest start, still never above it
    for request in list(fly.requests):
        assert post_callback(client, request).json_body == {"ok": True}
    run_pass(services)
    assert len(fly.created()) == 10 and store.in_flight_machines() == 5



def test_a_batch_left_no_capacity_in_a_round_tries_no_claim(services, fly, env):
    """The cap is the counter's condition; the round's capacity, passed on from batch to
    batch, keeps a batch that cannot get a machine from even trying (a claim refused by
    the cap is a transaction paid for nothing)."""
    services = make_services(env, MAX_MACHINES_IN_FLIGHT="3")
    for batch_id in ("batch_one", "batch_two"):
        app.intake(sqs_event(message(batch_id, tiffs=3, others=0)), LambdaContext(30))
    hooks = DynamoHooks(services.settings)
    run_pass(services)
    hooks.detach()
    assert len(fly.created()) == 3
    assert [op for _, op in hooks.calls].count("TransactWriteItems") == 3  # the three claims
    # the next round starts from the shared counter: still full, so no claim is tried at all
    hooks = DynamoHooks(services.settings)
    run_pass(services)
    hooks.detach()
    assert [op for _, op in hooks.calls].count("TransactWriteItems") == 0 and len(fly.created()) == 3
