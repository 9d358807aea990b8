"""Guards that only a test at their edge can see (issue 8 item 7): each test here fails when
one condition of tools/mutations.toml is broken (`make mutation` applies them).

The boundary of MAX_FAILED_FRACTION, the in-flight cap across batches, a 429's Retry-After
as the task's retry time, a DONE batch leaving the active index, admin retry only on an
ended batch, delivery and pass-failure backoff, and spawning refused without a way back.
"""

from __future__ import annotations

import time

import app
from chalicelib import scheduler, store
from chalicelib.clock import now_ms
from chalicelib.models import SWEEPING
from chalicelib.services import build_services

from .conftest import (
    LambdaContext,
    callback_path,
    drive,
    error_body,
    get_status,
    list_tasks,
    make_services,
    message,
    post_admin,
    post_callback,
    run_pass,
    sqs_event,
)

PERMANENT = "Failed to download TIFF: 404 Not Found"


def _start(batch_id: str = "batch_abc", tiffs: int = 2, others: int = 0) -> None:
    app.intake(sqs_event(message(batch_id, tiffs=tiffs, others=others), message_id=batch_id),
               LambdaContext(30))


def test_exactly_max_failed_fraction_failed_keeps_the_batch_going(services, client, fly, ingest, env):
    # 1 of 4 failed is exactly 0.25: allowed ("more than MAX_FAILED_FRACTION" ends it)
    services = make_services(env, MAX_FAILED_FRACTION="0.25")
    _start(tiffs=4)
    run_pass(services)
    first, *rest = fly.requests
    post_callback(client, first, error_body(callback_path(first)[1], PERMANENT))
    run_pass(services)
    status = get_status(client)
    assert status["status"] == "TIFF_CONVERSION" and status["error"] is None
    assert status["progress"]["tasks_failed"] == 1

    for request in rest:
        assert post_callback(client, request).json_body == {"ok": True}
    drive(services, lambda: get_status(client)["status"] == "DONE")
    assert get_status(client)["progress"]["tasks_completed"] == 3
    assert len(ingest.accepted()) == 1


def test_two_batches_in_one_round_share_the_in_flight_cap(services, client, fly, env):
    services = make_services(env, MAX_MACHINES_IN_FLIGHT="3")
    _start("batch_one", tiffs=3)
    _start("batch_two", tiffs=3)
    report = run_pass(services)
    assert report.passes == 2
    assert len(fly.created()) == 3  # not 3 for each batch
    in_flight = [get_status(client, b)["progress"]["tasks_in_flight"] for b in ("batch_one", "batch_two")]
    assert sum(in_flight) == 3

    # two slots free up: the next round fills exactly those two, over both batches
    for request in fly.requests[:2]:
        assert post_callback(client, request).json_body == {"ok": True}
    run_pass(services)
    assert len(fly.created()) == 5
    in_flight = [get_status(client, b)["progress"]["tasks_in_flight"] for b in ("batch_one", "batch_two")]
    assert sum(in_flight) == 3


def test_429_retry_time_is_retry_after_even_for_another_process(services, client, fly, env):
    """The gate closes in the process that saw the 429; the task's own retry time must say
    the same, or a fresh process (a new Lambda container) creates it at once."""
    services = make_services(env, SPAWN_CONCURRENCY="1")
    fly.script = [429]
    fly.retry_after = "2"
    _start(tiffs=1)
    run_pass(services)
    limited_at_ms = now_ms()
    [task] = list_tasks(client)
    stored = store.get_task("batch_abc", task["task_id"])
    retry_at = int(stored.open_due) - store.PENDING_OFFSET
    assert retry_at >= int(stored.updated_at) + 2000 - 50
    assert task["status"] == "pending" and task["attempts"] == 0

    other = build_services(services.settings)  # own gate, open
    while now_ms() < limited_at_ms + 1500:
        run_pass(other, owner="tick-other")
        assert len(fly.requests) == 1, "created before Retry-After ran out"
    drive(other, lambda: len(fly.created()) == 1, timeout=5, owner="tick-other")
    assert fly.created()[0]["at"] - fly.requests[0]["at"] >= 2.0 - 0.1


def test_delivered_batch_leaves_the_active_index(services, client, fly, ingest):
    _start(tiffs=1, others=1)
    run_pass(services)
    post_callback(client, fly.requests[0])
    drive(services, lambda: get_status(client)["status"] == "DONE")
    assert "batch_abc" not in {b.batch_id for b in store.list_active_batches()}
    batch = store.get_batch("batch_abc")
    assert batch.active == SWEEPING  # its machines are looked for once more, then it leaves the index

    for _ in range(3):  # no pass picks it up again
        report = run_pass(services)
        assert report.passes == 0 and report.errors == 0
    store.end_sweep("batch_abc", "nobody", None)  # not the sweep's lease: nothing moves
    assert store.get_batch("batch_abc").active == SWEEPING
    drive(services, lambda: scheduler.run_due_sweeps(services, "test-tick"), timeout=15)
    batch = store.get_batch("batch_abc")
    assert batch.active is None and batch.due_at is None and batch.lease_owner is None
    status = get_status(client)
    assert status["status"] == "DONE" and status["error"] is None
    assert len(ingest.received) == 1


def _one_failed_one_running(services, client, fly):
    _start(tiffs=2)
    run_pass(services)
    failing, running = fly.requests
    post_callback(client, failing, error_body(callback_path(failing)[1], PERMANENT))
    return failing, running


def test_retry_on_a_running_batch_is_409_and_changes_nothing(services, client, fly, ingest):
    _, running = _one_failed_one_running(services, client, fly)
    before_status, before_tasks = get_status(client), list_tasks(client)
    answer = post_admin(client, "retry")
    assert answer.status_code == 409
    # says why: the batch has not ended (not that it had nothing to retry, which is false)
    assert answer.json_body["error"] == ("batch batch_abc is TIFF_CONVERSION; only a DONE or ERROR "
                                         "batch can be retried")
    assert list_tasks(client) == before_tasks
    after = get_status(client)
    assert after["progress"] == before_status["progress"] and after["status"] == "TIFF_CONVERSION"

    # the batch goes on normally: the failed task stays failed, never run again
    post_callback(client, running)
    drive(services, lambda: get_status(client)["status"] == "DONE")
    assert len(fly.requests) == 2
    assert get_status(client)["progress"]["tasks_failed"] == 1


def test_store_reopens_failed_tasks_only_of_an_ended_batch(services, client, fly):
    """The store's own condition, for a retry that read the batch as ended just before a
    restart or another retry made it run again."""
    _one_failed_one_running(services, client, fly)
    [failed] = list_tasks(client, status="failed")
    reopened = store.reopen_failed_tasks(services.settings, "batch_abc", "TIFF_CONVERSION", now_ms())
    assert reopened == 0
    assert list_tasks(client, status="failed") == [failed]
    assert get_status(client)["progress"]["tasks_failed"] == 1


def test_delivery_retry_waits_its_backoff(services, client, fly, ingest, env):
    # the first failed delivery waits min(ALARM_DELAY_ERROR_RETRY, 1000 * 2^1) = 1 s
    services = make_services(env, ALARM_DELAY_ERROR_RETRY="1000")
    ingest.script = [500]
    _start(tiffs=1)
    run_pass(services)
    post_callback(client, fly.requests[0])
    drive(services, lambda: ingest.received)
    batch = store.get_batch("batch_abc")
    assert batch.status == "FINALIZING"
    assert int(batch.due_at) - int(batch.updated_at) == 1000

    while now_ms() < int(batch.due_at) - 150:
        run_pass(services)
        assert len(ingest.received) == 1, "delivered again before its backoff"
    drive(services, lambda: get_status(client)["status"] == "DONE", timeout=5)
    assert [r["status"] for r in ingest.received] == [500, 200]


def _rounds_until_error(services, client, limit: int = 10) -> int:
    """Tick rounds (each after the batch's pass-error backoff) until the batch is ERROR;
    returns how many passes failed."""
    failures = 0
    for _ in range(limit):
        if get_status(client)["status"] == "ERROR":
            return failures
        time.sleep(0.25)  # ALARM_DELAY_ERROR_RETRY=200 caps the pass-error backoff
        failures += scheduler.run_due_passes(services, "test-tick").errors
    raise AssertionError("the batch never ended in ERROR")


def test_no_machine_without_orchestrator_url_and_give_up_after_max_passes(services, client, fly, env):
    services = make_services(env, ORCHESTRATOR_URL="", MAX_RETRY_ATTEMPTS="2")
    _start(tiffs=1)
    assert _rounds_until_error(services, client) == 2
    assert fly.requests == []
    error = get_status(client)["error"]
    assert error.startswith("Gave up after 2 failed passes: SettingsError: ORCHESTRATOR_URL is not set")


def test_no_machine_without_a_signing_key(services, client, fly, env):
    services = make_services(env, CALLBACK_SIGNING_KEY="", MAX_RETRY_ATTEMPTS="1")
    _start(tiffs=1)
    assert _rounds_until_error(services, client) == 1
    assert fly.requests == []
    assert "CALLBACK_SIGNING_KEY is not set" in get_status(client)["error"]
