"""POST /admin/reset: the batch stops for good (contracts §4)."""

from __future__ import annotations

import app
from chalicelib.states import RESET_ERROR

from .conftest import (
    LambdaContext,
    callback_path,
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


def test_reset_fails_open_tasks_and_destroys_machines(services, client, fly, ingest, env):
    services = make_services(env, BATCH_SIZE_TIFF_CONVERSION="3")
    app.intake(sqs_event(message(tiffs=4, others=1)), LambdaContext(30))
    run_pass(services)
    assert len(fly.created()) == 3  # the fourth task is still pending
    done, running = fly.requests[0], fly.requests[1:3]
    assert post_callback(client, done).json_body == {"ok": True}

    answer = post_admin(client, "reset", "batch_abc")
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert answer.json_body == {"ok": True, "message": "Batch reset", "tasks_closed": 3,
                                "machines_destroyed": 2}
    assert sorted(fly.deleted) == sorted(r["id"] for r in running)

    status = get_status(client)
    assert status["status"] == "ERROR" and status["error"] == RESET_ERROR
    assert status["completed_at"] is not None
    assert status["progress"] == {"tasks_total": 4, "tasks_completed": 1, "tasks_failed": 3,
                                  "tasks_in_flight": 0, "tasks_pending": 0}
    failed = list_tasks(client, status="failed")
    assert len(failed) == 3 and {t["last_error"] for t in failed} == {RESET_ERROR}
    assert list_tasks(client, status="pending") == list_tasks(client, status="processing") == []
    [completed] = list_tasks(client, status="completed")
    assert completed["task_id"] == callback_path(done)[1]["TASK_ID"]

    # the killed machines' callbacks arrive anyway: 200, nothing changes
    for request, body in ((running[0], None),
                          (running[1], error_body(callback_path(running[1])[1], "killed"))):
        late = post_callback(client, request, body)
        assert late.status_code == 200 and late.json_body["ignored"] is True
    assert post_callback(client, done).json_body["ignored"] is True
    assert get_status(client)["progress"] == status["progress"]

    # no pass touches the batch again: no creations, no delivery
    for _ in range(3):
        assert run_pass(services).passes == 0
    assert len(fly.requests) == 3 and ingest.received == []
    assert get_status(client)["status"] == "ERROR"

    # a second reset is harmless
    again = post_admin(client, "reset", "batch_abc")
    assert again.status_code == 200
    assert again.json_body == {"ok": True, "message": "Batch reset", "tasks_closed": 0,
                               "machines_destroyed": 0}
    assert get_status(client)["progress"] == status["progress"]


def test_reset_unknown_batch_is_404(client):
    answer = post_admin(client, "reset", "batch_nope")
    assert answer.status_code == 404
    assert answer.json_body == {"error": "batch batch_nope not found"}
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    bad = post_admin(client, "reset", "bad..id")
    assert bad.status_code == 400 and "error" in bad.json_body
