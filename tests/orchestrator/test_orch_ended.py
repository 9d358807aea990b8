"""Issue 8 §2: ended means ended. Every way into ERROR closes the batch's open tasks and
destroys their machines; callbacks for an ended batch count nothing; admin actions on a
finished batch are 409s that change nothing."""

from __future__ import annotations

import app
from chalicelib import store

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


def _start(services, fly, batch_id="batch_abc", tiffs=3):
    app.intake(sqs_event(message(batch_id, tiffs=tiffs, others=0)), LambdaContext(30))
    run_pass(services)
    return [r for r in fly.requests if callback_path(r)[1]["BATCH_ID"] == batch_id]


def test_too_many_failed_closes_open_tasks_destroys_machines_and_frees_the_cap(services, client, fly, env):
    services = make_services(env, MAX_FAILED_FRACTION="0.3", MAX_MACHINES_IN_FLIGHT="3")
    first, second, third = _start(services, fly)
    assert store.in_flight_machines() == 3
    post_callback(client, first, error_body(callback_path(first)[1], "Failed to convert TIFF: not a TIFF file"))
    run_pass(services)
    status = get_status(client)
    assert status["status"] == "ERROR" and "MAX_FAILED_FRACTION=0.3" in status["error"]
    # the two running tasks are closed with the batch's error, their machines destroyed
    assert status["progress"] == {"tasks_total": 3, "tasks_completed": 0, "tasks_failed": 3,
                                  "tasks_in_flight": 0, "tasks_pending": 0}
    assert list_tasks(client, status="processing") == []
    assert sorted(fly.deleted) == sorted([second["id"], third["id"]])
    assert store.in_flight_machines() == 0
    # their late results count nothing on the ended batch
    for request in (second, third):
        late = post_callback(client, request)
        assert late.status_code == 200 and late.json_body["ignored"] is True
    assert get_status(client)["progress"] == status["progress"]
    # and the cap they held is free for the next batch
    assert len(_start(services, fly, "batch_two")) == 3


def test_a_callback_for_an_ended_batch_counts_nothing_even_if_its_task_is_still_open(services, client, fly):
    first, _, _ = _start(services, fly)
    # ERROR written, but the tasks not yet closed (a reset in progress, or one that died)
    assert store.fail_batch(services.settings, "batch_abc", "stopped", 1, 1)
    answer = post_callback(client, first)
    assert answer.status_code == 200 and answer.json_body["ignored"] is True
    assert get_status(client)["progress"]["tasks_completed"] == 0
    [task] = [t for t in list_tasks(client) if t["task_id"] == callback_path(first)[1]["TASK_ID"]]
    assert task["status"] == "processing"


def test_giving_up_after_failed_passes_closes_the_batch_too(services, client, fly, env):
    services = make_services(env, MAX_RETRY_ATTEMPTS="2", MAX_MACHINES_IN_FLIGHT="2")
    first, second = _start(services, fly, tiffs=2)
    # every pass now fails (ORCHESTRATOR_URL disappears, so spawning refuses)
    broken = make_services(env, MAX_RETRY_ATTEMPTS="2", MAX_MACHINES_IN_FLIGHT="2", ORCHESTRATOR_URL="")
    drive(broken, lambda: get_status(client)["status"] == "ERROR", timeout=15)
    status = get_status(client)
    assert status["error"].startswith("Gave up after 2 failed passes")
    assert status["progress"]["tasks_in_flight"] == 0 and status["progress"]["tasks_failed"] == 2
    assert list_tasks(client, status="processing") == []
    assert sorted(fly.deleted) == sorted([first["id"], second["id"]])
    assert store.in_flight_machines() == 0


def test_reset_of_a_done_batch_is_409_and_changes_nothing(services, client, fly, ingest):
    requests = _start(services, fly, tiffs=2)
    for request in requests:
        post_callback(client, request)
    drive(services, lambda: get_status(client)["status"] == "DONE")
    before = get_status(client)
    answer = post_admin(client, "reset")
    assert answer.status_code == 409 and "DONE" in answer.json_body["error"]
    assert get_status(client) == before
    # nothing to retry on a DONE batch without failures, and no second delivery either
    assert post_admin(client, "retry").status_code == 409
    drive(services, lambda: True)
    run_pass(services)
    assert len(ingest.received) == 1


def test_retry_with_nothing_failed_is_409_even_in_error(services, client, fly, ingest, env):
    services = make_services(env, MAX_RETRY_ATTEMPTS="1")
    ingest.script = [500]
    requests = _start(services, fly, tiffs=1)
    post_callback(client, requests[0])
    drive(services, lambda: get_status(client)["status"] == "ERROR")
    assert get_status(client)["progress"]["tasks_failed"] == 0
    answer = post_admin(client, "retry")
    assert answer.status_code == 409 and "/admin/redeliver" in answer.json_body["error"]
    assert get_status(client)["status"] == "ERROR"
    assert len(ingest.received) == 1  # redelivery only through /admin/redeliver
    assert post_admin(client, "redeliver").status_code == 200


def test_retry_of_a_batch_whose_manifest_was_missing_is_409(services, client, ingest):
    body = message(tiffs=1)
    body.pop("directories")
    body["manifest_r2_key"] = "staging/batch_abc/manifest.json"
    app.intake(sqs_event(body), LambdaContext(30))
    assert get_status(client)["status"] == "ERROR"
    answer = post_admin(client, "retry")
    assert answer.status_code == 409
    assert get_status(client)["status"] == "ERROR" and ingest.received == []
