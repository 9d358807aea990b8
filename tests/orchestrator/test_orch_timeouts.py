"""A machine that never calls back: its task is timed out, retried on a new machine (the old
one destroyed), and failed with a reason once attempts run out (design.md invariant 2)."""

from __future__ import annotations

import app

from .conftest import (
    LambdaContext,
    callback_path,
    drive,
    get_status,
    list_tasks,
    make_services,
    message,
    post_callback,
    sqs_event,
    without_spawned,
)


def test_silent_machine_is_timed_out_retried_then_failed(services, client, fly, ingest, env):
    services = make_services(env, TASK_TIMEOUT_TIFF_CONVERSION="200", MAX_RETRY_ATTEMPTS="2")
    app.intake(sqs_event(message(tiffs=1, others=1)), LambdaContext(30))

    drive(services, lambda: fly.created())
    first = fly.requests[0]
    _, env1 = callback_path(first)
    task_id = env1["TASK_ID"]

    # attempt 1 stays silent past 200 ms: retried as attempt 2, its machine destroyed
    drive(services, lambda: len(fly.created()) == 2)
    assert first["id"] in fly.deleted
    second = fly.requests[1]
    assert second["body"]["name"] == f"tiff-{task_id}-2"
    assert without_spawned(callback_path(second)[0]).endswith("?attempt=2")
    task = list_tasks(client)[0]
    assert task["attempts"] == 2
    assert task["last_error"].startswith("Timed out after 200 ms (attempt 1")

    # attempt 1's machine was only slow: its callback now counts nothing
    late = post_callback(client, first)
    assert late.status_code == 200 and late.json_body["ignored"] is True
    assert get_status(client)["progress"]["tasks_completed"] == 0

    # attempt 2 is silent too: MAX_RETRY_ATTEMPTS=2, so the task fails with the reason
    drive(services, lambda: list_tasks(client, status="failed"))
    assert second["id"] in fly.deleted
    [failed] = list_tasks(client, status="failed")
    assert failed["task_id"] == task_id and failed["attempts"] == 2
    assert failed["last_error"].startswith("Timed out after 200 ms (attempt 2")
    assert failed["machine_id"] == second["id"]
    assert len(fly.requests) == 2  # no third attempt

    # the batch is not stuck: it finishes, the unconverted TIFF delivered unchanged
    drive(services, lambda: get_status(client)["status"] == "DONE")
    status = get_status(client)
    assert status["progress"]["tasks_failed"] == 1 and status["progress"]["tasks_in_flight"] == 0
    files = ingest.accepted()[0]["body"]["files"]
    assert files[0]["r2_key"] == env1["INPUT_R2_KEY"] and "preprocessor_tags" not in files[0]
    assert len(fly.requests) == 2
