"""The final callback to the ingest service (contracts §5): retried with backoff, and only
declared ERROR, with the delivery's error shown, once attempts run out."""

from __future__ import annotations

import app

from .conftest import (
    LambdaContext,
    drive,
    get_status,
    make_services,
    message,
    post_admin,
    post_callback,
    run_pass,
    sqs_event,
)


def _convert_all(services, client, fly):
    app.intake(sqs_event(message(tiffs=2, others=1)), LambdaContext(30))
    run_pass(services)
    for request in fly.requests:
        assert post_callback(client, request).json_body == {"ok": True}


def test_delivery_is_retried_then_done(services, client, fly, ingest):
    ingest.script = [500, 500]
    _convert_all(services, client, fly)

    drive(services, lambda: len(ingest.received) >= 1)
    status = get_status(client)
    assert status["status"] == "FINALIZING"
    assert status["delivery"]["attempts"] == 1
    assert status["delivery"]["last_error"].startswith("enqueue-processed answered 500")
    assert status["completed_at"] is None and status["error"] is None

    drive(services, lambda: get_status(client)["status"] == "DONE")
    status = get_status(client)
    assert [r["status"] for r in ingest.received] == [500, 500, 200]
    assert status["delivery"]["attempts"] == 3
    assert status["delivery"]["last_error"] is None
    assert status["delivery"]["delivered_at"] is not None and status["completed_at"] is not None
    assert status["error"] is None
    # every attempt carried the same, complete file list
    bodies = [r["body"] for r in ingest.received]
    assert bodies[0] == bodies[1] == bodies[2] and len(bodies[0]["files"]) == 3
    assert ingest.received[0]["path"] == "/api/batches/batch_abc/enqueue-processed"

    for _ in range(3):  # DONE is final: nothing delivered twice
        run_pass(services)
    assert len(ingest.received) == 3


def test_delivery_exhausted_is_error_with_the_delivery_error(services, client, fly, ingest, env):
    services = make_services(env, MAX_RETRY_ATTEMPTS="2")
    ingest.script = [500, 503, 200]
    _convert_all(services, client, fly)

    drive(services, lambda: get_status(client)["status"] == "ERROR")
    status = get_status(client)
    assert [r["status"] for r in ingest.received] == [500, 503]
    assert status["delivery"]["attempts"] == 2
    assert status["delivery"]["last_error"].startswith("enqueue-processed answered 503")
    assert status["delivery"]["delivered_at"] is None
    assert status["error"].startswith("Final callback failed after 2 attempts: enqueue-processed answered 503")
    assert status["completed_at"] is not None
    # the work itself was done and stays visible
    assert status["progress"]["tasks_completed"] == 2 and status["progress"]["tasks_failed"] == 0

    for _ in range(3):
        run_pass(services)
    assert len(ingest.received) == 2


def test_unreachable_ingest_counts_as_a_failed_delivery(services, client, fly, ingest, env):
    ingest.stop()  # nobody listens any more
    services = make_services(env, MAX_RETRY_ATTEMPTS="2")
    _convert_all(services, client, fly)
    drive(services, lambda: get_status(client)["status"] == "ERROR")
    status = get_status(client)
    assert status["delivery"]["attempts"] == 2
    assert status["delivery"]["last_error"] == "enqueue-processed unreachable: ConnectionError"
    assert status["error"] == ("Final callback failed after 2 attempts: "
                               "enqueue-processed unreachable: ConnectionError")


def test_placeholder_worker_url_fails_the_batch_at_once_without_a_request(services, client, fly, ingest, env):
    # The dev stage ships WORKER_URL as a placeholder, so a dev batch never reaches production.
    from chalicelib.ingest import WORKER_URL_UNSET

    services = make_services(env, WORKER_URL=WORKER_URL_UNSET)
    _convert_all(services, client, fly)
    drive(services, lambda: get_status(client)["status"] == "ERROR")
    status = get_status(client)
    assert ingest.received == []
    assert status["delivery"]["attempts"] == 1  # no retries: none would help
    assert status["error"] == (
        "Final callback failed after 1 attempts: WORKER_URL is not set for stage dev (it is the "
        "placeholder https://worker-url-not-set.invalid): set it to the ingest service or a test "
        "receiver, then redeliver the batch")

    # Once it is set, the operator redelivers and the batch is delivered and DONE.
    services = make_services(env)
    assert post_admin(client, "redeliver").status_code == 200
    drive(services, lambda: get_status(client)["status"] == "DONE")
    assert [r["status"] for r in ingest.received] == [200]
