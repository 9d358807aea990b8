"""Callbacks that must not count: duplicates, late ones after a retry; permanent vs retryable
worker errors (design.md invariant 1, issue 2 items 1, 2 and 14)."""

from __future__ import annotations

import json

import app

from .conftest import (
    LambdaContext,
    callback_path,
    drive,
    error_body,
    get_status,
    list_tasks,
    message,
    post_callback,
    run_pass,
    signed_headers,
    sqs_event,
    success_body,
    without_spawned,
)


def _task(client, task_id, batch_id="batch_abc"):
    found = [t for t in list_tasks(client, batch_id) if t["task_id"] == task_id]
    assert len(found) == 1
    return found[0]


def _progress(client, batch_id="batch_abc"):
    return get_status(client, batch_id)["progress"]


def test_duplicate_success_counts_once(services, client, fly):
    app.intake(sqs_event(message(tiffs=2, others=0)), LambdaContext(30))
    run_pass(services)
    assert len(fly.created()) == 2
    first = fly.requests[0]

    answer = post_callback(client, first)
    assert answer.status_code == 200 and answer.json_body == {"ok": True}
    before = _progress(client)
    assert before["tasks_completed"] == 1 and before["tasks_in_flight"] == 1

    for _ in range(3):  # the same success again, as a retried HTTP POST would send it
        again = post_callback(client, first)
        assert again.status_code == 200
        assert again.json_body["ok"] is True and again.json_body["ignored"] is True
        assert "completed" in again.json_body["detail"]
    assert _progress(client) == before

    # An error callback for the same, already completed attempt changes nothing either.
    _, env = callback_path(first)
    late_error = post_callback(client, first, error_body(env, "Upload failed: connection reset"))
    assert late_error.status_code == 200 and late_error.json_body["ignored"] is True
    task = _task(client, env["TASK_ID"])
    assert task["status"] == "completed" and task["last_error"] is None and task["attempts"] == 1

    # One of two tasks is done, however often it said so: the phase has not ended.
    run_pass(services)
    status = get_status(client)
    assert status["status"] == "TIFF_CONVERSION"
    assert status["progress"]["tasks_completed"] == 1 and status["progress"]["tasks_in_flight"] == 1


def test_duplicate_error_callback_counts_once(services, client, fly, env):
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    run_pass(services)
    request = fly.requests[0]
    _, machine_env = callback_path(request)

    # retryable: the task goes back to pending, attempt 1 used
    body = error_body(machine_env, "Failed to upload JPEG: 503 Service Unavailable")
    assert post_callback(client, request, body).json_body == {"ok": True}
    again = post_callback(client, request, body)
    assert again.status_code == 200 and again.json_body["ignored"] is True
    task = _task(client, machine_env["TASK_ID"])
    assert task["status"] == "pending" and task["attempts"] == 1
    progress = _progress(client)
    assert progress["tasks_failed"] == 0 and progress["tasks_in_flight"] == 0

    # permanent: failed once, a duplicate does not fail it twice
    drive(services, lambda: len(fly.created()) == 2)
    second = fly.requests[1]
    _, env2 = callback_path(second)
    fatal = error_body(env2, "Failed to download TIFF: 404 Not Found")
    assert post_callback(client, second, fatal).json_body == {"ok": True}
    assert post_callback(client, second, fatal).json_body["ignored"] is True
    progress = _progress(client)
    assert progress["tasks_failed"] == 1 and progress["tasks_completed"] == 0


def test_late_callback_after_retry_counts_nothing(services, client, fly):
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    run_pass(services)
    first = fly.requests[0]
    route1, env1 = callback_path(first)
    assert without_spawned(route1).endswith("?attempt=1")
    task_id = env1["TASK_ID"]
    assert first["body"]["name"] == f"tiff-{task_id}"

    retryable = error_body(env1, "Failed to upload JPEG: ECONNRESET")
    assert post_callback(client, first, retryable).json_body == {"ok": True}
    pending = _task(client, task_id)
    assert pending["status"] == "pending" and pending["attempts"] == 1
    assert pending["last_error"] == "Failed to upload JPEG: ECONNRESET"

    # While the task waits for its retry, attempt 1's success is late: nothing counts.
    late = post_callback(client, first)
    assert late.status_code == 200 and late.json_body["ignored"] is True
    assert _task(client, task_id)["status"] == "pending"

    drive(services, lambda: len(fly.created()) == 2)
    second = fly.requests[1]
    route2, env2 = callback_path(second)
    assert second["body"]["name"] == f"tiff-{task_id}-2"
    assert without_spawned(route2) == f"/callback/batch_abc/{task_id}?attempt=2"
    assert env2["TASK_ID"] == task_id
    running = _task(client, task_id)
    assert running["status"] == "processing" and running["attempts"] == 2
    assert running["machine_id"] == second["id"]

    # attempt 1's machine calls back now (success, then error): 200, nothing moves
    for body in (success_body(env1), error_body(env1, "Failed to upload JPEG: ECONNRESET")):
        late = post_callback(client, first, body)
        assert late.status_code == 200, late.body
        assert late.json_body["ignored"] is True
        assert "attempt 2" in late.json_body["detail"] and "attempt 1" in late.json_body["detail"]
    progress = _progress(client)
    assert progress["tasks_completed"] == 0 and progress["tasks_failed"] == 0
    assert progress["tasks_in_flight"] == 1
    assert _task(client, task_id)["status"] == "processing"

    # attempt 2's callback counts, and only once
    assert post_callback(client, second, success_body(env2, size=777)).json_body == {"ok": True}
    done = _task(client, task_id)
    assert done["status"] == "completed" and done["attempts"] == 2
    assert done["output_file_size"] == 777 and done["last_error"] is None
    assert post_callback(client, first).json_body["ignored"] is True
    progress = _progress(client)
    assert progress["tasks_completed"] == 1 and progress["tasks_in_flight"] == 0

    # a callback for an attempt that never started is ignored as well
    # attempt 2's token does not open attempt 3's route ...
    wrong = post_callback(client, second, path=f"/callback/batch_abc/{task_id}?attempt=3")
    assert wrong.status_code == 401
    # ... and a properly signed callback for an attempt never started counts nothing
    path3 = f"/callback/batch_abc/{task_id}?attempt=3"
    future = client.http.post(path3, headers=signed_headers(path3), body=json.dumps(success_body(env2)))
    assert future.status_code == 200 and future.json_body["ignored"] is True
    assert _progress(client)["tasks_completed"] == 1


def test_permanent_worker_error_fails_at_once(services, client, fly):
    app.intake(sqs_event(message(tiffs=2, others=0)), LambdaContext(30))
    run_pass(services)
    by_task = {callback_path(r)[1]["TASK_ID"]: r for r in fly.requests}
    permanent_id, retryable_id = sorted(by_task)

    _, penv = callback_path(by_task[permanent_id])
    _, renv = callback_path(by_task[retryable_id])
    post_callback(client, by_task[permanent_id], error_body(penv, "Failed to download TIFF: 404 Not Found"))
    post_callback(client, by_task[retryable_id],
                  error_body(renv, "Failed to upload JPEG: 500 Internal Server Error"))

    failed = _task(client, permanent_id)
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["last_error"] == "Failed to download TIFF: 404 Not Found"
    assert _progress(client)["tasks_failed"] == 1

    drive(services, lambda: len(fly.created()) == 3)
    for _ in range(3):
        run_pass(services)
    names = [r["body"]["name"] for r in fly.requests]
    assert names.count(f"tiff-{permanent_id}") == 1
    assert not any(n.startswith(f"tiff-{permanent_id}-") for n in names)  # never retried
    assert f"tiff-{retryable_id}-2" in names
    retried = _task(client, retryable_id)
    assert retried["status"] == "processing" and retried["attempts"] == 2
    assert retried["last_error"] == "Failed to upload JPEG: 500 Internal Server Error"
    failed_list = list_tasks(client, status="failed")
    assert [t["task_id"] for t in failed_list] == [permanent_id]
