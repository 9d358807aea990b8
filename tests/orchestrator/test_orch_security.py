"""Issue 5's doors: signed callbacks, authenticated admin routes (reset, retry, redeliver),
presigned URLs instead of R2 keys on machines, MAX_FAILED_FRACTION, and bad ids."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import app

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
    signed_headers,
    sqs_event,
    success_body,
)

JSON = {"Content-Type": "application/json"}


def _start(services, fly, tiffs=2, others=0):
    app.intake(sqs_event(message(tiffs=tiffs, others=others)), LambdaContext(30))
    run_pass(services)
    assert len(fly.created()) == tiffs
    return fly.requests


def _progress(client):
    return get_status(client)["progress"]


def test_callback_without_or_with_a_wrong_token_is_401_and_changes_nothing(services, client, fly):
    first, second = _start(services, fly)
    route, env = callback_path(first)
    _, other_env = callback_path(second)
    body = json.dumps(success_body(env))
    attempts = [
        {},  # no token
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer {other_env['CALLBACK_TOKEN']}"},  # another task's token
        {"Authorization": env["CALLBACK_TOKEN"]},  # not a Bearer header
    ]
    for extra in attempts:
        answer = client.http.post(route, headers={**JSON, **extra}, body=body)
        assert answer.status_code == 401, (extra, answer.body)
        assert set(answer.json_body) == {"error"}
    # attempt 1's token on the same task's attempt-2 route, and a route with no attempt
    path2 = route.replace("attempt=1", "attempt=2")
    assert client.http.post(path2, headers={**JSON, "Authorization": f"Bearer {env['CALLBACK_TOKEN']}"},
                            body=body).status_code == 401
    no_attempt = route.split("?")[0]
    assert client.http.post(no_attempt, headers={**JSON, "Authorization": f"Bearer {env['CALLBACK_TOKEN']}"},
                            body=body).status_code == 401
    assert _progress(client)["tasks_completed"] == 0
    assert {t["status"] for t in list_tasks(client)} == {"processing"}
    # the machine's own token opens its own route
    assert post_callback(client, first).json_body == {"ok": True}
    assert _progress(client)["tasks_completed"] == 1


def test_unsigned_compatibility_mode_accepts_the_seed_worker(services, client, fly, env):
    services = make_services(env, ACCEPT_UNSIGNED_CALLBACKS="true")
    assert client.http.get("/health").json_body["unsigned_callbacks_accepted"] is True
    first, _ = _start(services, fly)
    route, machine_env = callback_path(first)
    seed_route = route.split("?")[0]  # the seed's worker knows no ?attempt= either
    answer = client.http.post(seed_route, headers=JSON, body=json.dumps(success_body(machine_env)))
    assert answer.json_body == {"ok": True}
    assert _progress(client)["tasks_completed"] == 1
    # a token, when one is sent, must still be right
    _, second_env = callback_path(fly.requests[1])
    wrong = client.http.post(callback_path(fly.requests[1])[0], body=json.dumps(success_body(second_env)),
                             headers={**JSON, "Authorization": "Bearer forged"})
    assert wrong.status_code == 401


def test_admin_routes_need_the_admin_token(services, client, fly):
    _start(services, fly)
    for action in ("reset", "retry", "redeliver"):
        missing = client.http.post(f"/admin/{action}/batch_abc")
        assert missing.status_code == 401 and set(missing.json_body) == {"error"}
        wrong = post_admin(client, action, Authorization="Bearer guess")
        assert wrong.status_code == 403 and set(wrong.json_body) == {"error"}
        also_wrong = post_admin(client, action, **{"X-Admin-Token": "admin-test-token-but-longer"})
        assert also_wrong.status_code == 403
    assert get_status(client)["status"] == "TIFF_CONVERSION"
    assert {t["status"] for t in list_tasks(client)} == {"processing"}
    ok = post_admin(client, "reset", **{"X-Admin-Token": "admin-test-token"})
    assert ok.status_code == 200 and ok.json_body["message"] == "Batch reset"
    assert client.http.post("/admin/nonsense/batch_abc", headers={"Authorization": "Bearer admin-test-token"}
                            ).status_code == 404


def test_retry_reruns_only_failed_tasks_and_delivers_again(services, client, fly, ingest):
    first, second = _start(services, fly)
    _, env1 = callback_path(first)
    _, env2 = callback_path(second)
    post_callback(client, first, error_body(env1, "Failed to download TIFF: 404 Not Found"))
    post_callback(client, second)
    drive(services, lambda: get_status(client)["status"] == "DONE")
    assert len(ingest.accepted()) == 1
    assert post_admin(client, "retry", "batch_nope").status_code == 404

    answer = post_admin(client, "retry")
    assert answer.status_code == 200, answer.body
    assert answer.json_body == {"ok": True, "message": "Failed tasks retried", "status": "TIFF_CONVERSION",
                                "tasks_retried": 1}
    status = get_status(client)
    assert status["status"] == "TIFF_CONVERSION" and status["completed_at"] is None
    assert status["progress"]["tasks_failed"] == 0 and status["progress"]["tasks_completed"] == 1
    [again] = list_tasks(client, status="pending")
    # attempt numbers never go back: the retry's budget restarts, the numbering does not
    assert again["task_id"] == env1["TASK_ID"] and again["attempts"] == 1
    assert again["attempts_since_retry"] == 0
    assert [h["attempt"] for h in again["history"]] == [1]
    assert again["history"][0]["outcome"] == "fail" and "404" in again["history"][0]["error"]
    assert post_admin(client, "retry").status_code == 409  # not ended: nothing to redrive

    drive(services, lambda: len(fly.created()) == 3)
    third = fly.requests[2]
    env3 = callback_path(third)[1]
    assert env3["TASK_ID"] == env1["TASK_ID"]  # only the failed one runs
    # a new attempt: a new machine name, a new token; the old attempt's token counts nothing
    assert env3["ATTEMPT"] == "2" and third["body"]["name"] == first["body"]["name"] + "-2"
    assert env3["CALLBACK_TOKEN"] != env1["CALLBACK_TOKEN"]
    late = post_callback(client, first)
    assert late.status_code == 200 and late.json_body["ignored"] is True
    post_callback(client, third)
    drive(services, lambda: get_status(client)["status"] == "DONE")
    assert len(ingest.accepted()) == 2
    files = ingest.accepted()[1]["body"]["files"]
    assert all(f["content_type"] == "image/jpeg" for f in files)
    assert post_admin(client, "retry").status_code == 409  # DONE with nothing failed


def test_redeliver_resends_a_failed_final_callback(services, client, fly, ingest, env):
    services = make_services(env, MAX_RETRY_ATTEMPTS="2")
    ingest.script = [500, 500]
    first, second = _start(services, fly)
    post_callback(client, first)
    assert post_admin(client, "redeliver").status_code == 409  # still converting
    post_callback(client, second)
    drive(services, lambda: get_status(client)["status"] == "ERROR")
    assert get_status(client)["delivery"]["attempts"] == 2

    answer = post_admin(client, "redeliver")
    assert answer.status_code == 200 and answer.json_body["status"] == "FINALIZING"
    drive(services, lambda: get_status(client)["status"] == "DONE")
    status = get_status(client)
    assert status["error"] is None and status["delivery"]["last_error"] is None
    assert len(ingest.accepted()) == 1 and len(ingest.received) == 3
    assert post_admin(client, "redeliver").status_code == 409  # delivered already


def test_machines_get_presigned_urls_not_r2_keys(services, client, fly, env):
    services = make_services(env, TASK_TIMEOUT_TIFF_CONVERSION="300000", PRESIGN_MARGIN_MS="600000")
    [request] = _start(services, fly, tiffs=1)
    machine_env = request["body"]["config"]["env"]
    assert not {"R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"} & set(machine_env)
    assert "r2-secret" not in json.dumps(request["body"])
    key = machine_env["INPUT_R2_KEY"]
    for name, object_key in (("INPUT_URL", key), ("OUTPUT_URL", key.rsplit(".", 1)[0] + ".jpg")):
        url = urlsplit(machine_env[name])
        query = parse_qs(url.query)
        assert url.netloc == "acct.r2.cloudflarestorage.com"
        assert url.path == f"/arke-staging/{object_key}"
        assert query["X-Amz-Expires"] == ["900"]  # task timeout + margin, in seconds
        assert query["X-Amz-Signature"][0]
    assert "content-type" in parse_qs(urlsplit(machine_env["OUTPUT_URL"]).query)["X-Amz-SignedHeaders"][0]


def test_too_many_failures_stop_the_batch(services, client, fly, env):
    services = make_services(env, MAX_FAILED_FRACTION="0.3")
    first, second, third = _start(services, fly, tiffs=3)
    _, env1 = callback_path(first)
    post_callback(client, first, error_body(env1, "Failed to convert TIFF: not a TIFF file"))
    run_pass(services)
    status = get_status(client)
    assert status["status"] == "ERROR"
    assert status["error"] == ("1 of 3 tasks failed in TIFF_CONVERSION, more than "
                               "MAX_FAILED_FRACTION=0.3 allows")
    created = len(fly.requests)
    run_pass(services)
    assert len(fly.requests) == created


def test_bad_ids_are_400_everywhere(services, client):
    for bad in ("a..b", "a%2Fb", "x%01y", "a" * 129, "%20lead"):
        for method, path in (("GET", f"/status/{bad}"), ("GET", f"/status/{bad}/tasks"),
                             ("POST", f"/callback/{bad}/tiff_x?attempt=1"),
                             ("POST", f"/callback/batch_abc/{bad}?attempt=1")):
            answer = client.http.request(method, path, headers=signed_headers(path), body=b"{}")
            assert answer.status_code == 400, (path, answer.body)
            assert set(answer.json_body) == {"error"}
        admin = post_admin(client, "reset", bad)
        assert admin.status_code == 400, (bad, admin.body)
