"""The HTTP API's answers on bad input and its shapes (contracts §4, design.md invariant 5),
and the tasks route (docs/interfaces.md)."""

from __future__ import annotations

import base64
import json
from datetime import datetime

import pytest

import app
from chalicelib.models import TASK_SHARDS, task_shard

from .conftest import (
    LambdaContext,
    callback_path,
    error_body,
    get_status,
    list_tasks,
    make_services,
    message,
    post_callback,
    run_pass,
    signed_headers,
    sqs_event,
    success_body,
)

CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Admin-Token"}
JSON = {"Content-Type": "application/json"}


def _has_cors(response):
    return all(response.headers.get(k) == v for k, v in CORS.items())


def _post(client, path, body):
    """POST with the token a machine would hold for the route (see signed_headers)."""
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.http.post(path, headers=signed_headers(path), body=raw)


@pytest.fixture
def running(services, client, fly):
    """A batch with three machines running; returns (request, route, env) of the first."""
    app.intake(sqs_event(message(tiffs=3, others=0)), LambdaContext(30))
    run_pass(services)
    route, env = callback_path(fly.requests[0])
    return fly.requests[0], route, env


def _unchanged(client, before):
    assert get_status(client)["progress"] == before["progress"]
    assert {t["status"] for t in list_tasks(client)} == {"processing"}


def test_callback_400s(client, running):
    request, route, env = running
    before = get_status(client)
    task_path = route.split("?")[0]
    ok = success_body(env)
    cases = [
        (route, b"{not json", "callback body is not JSON"),
        (route, b"\xff\xfe\x00", "callback body is not JSON"),
        (route, b"", "callback body is empty"),
        (route, b"[1, 2]", "callback body must be a JSON object"),
        (route, dict(ok, task_id="tiff_aaaaaaaaaaaaaaaa"), "must match the path"),
        (route, dict(ok, batch_id="batch_other"), "must match the path"),
        (route, {k: v for k, v in ok.items() if k != "task_id"}, "must match the path"),
        (route, dict(ok, status="done"), "status must be 'success' or 'error'"),
        (route, {k: v for k, v in ok.items() if k != "status"}, "status must be 'success' or 'error'"),
        (route, {"task_id": env["TASK_ID"], "batch_id": "batch_abc", "status": "error"},
         "an error callback needs a non-empty 'error' text"),
        (route, error_body(env, ""), "an error callback needs a non-empty 'error' text"),
        (route, dict(error_body(env, "x"), error=["x"]), "an error callback needs a non-empty 'error' text"),
        (route, {k: v for k, v in ok.items() if k != "output_r2_key"}, "output_r2_key"),
        (route, dict(ok, output_file_size=-1), "output_file_size must be a non-negative integer"),
        (route, dict(ok, output_file_size="12"), "output_file_size must be a non-negative integer"),
        (route, dict(ok, performance=[1]), "performance must be an object"),
        (route, dict(ok, performance={"total_time_ms": -5}), "performance.total_time_ms"),
        (route, json.dumps(dict(ok, performance={"total_time_ms": 1e400})), "performance.total_time_ms"),
        (route, json.dumps(dict(ok, performance={"total_time_ms": float("nan")})), "performance.total_time_ms"),
    ]
    for attempt in ("abc", "0", "-1", "1.5", "%C2%B2", "9" * 30, "99999999999999"):
        cases.append((f"{task_path}?attempt={attempt}", ok, "attempt must be a positive integer"))
    for path, body, reason in cases:
        answer = _post(client, path, body)
        assert answer.status_code == 400, (path, body, answer.body)
        assert set(answer.json_body) == {"error"} and reason in answer.json_body["error"], (body, answer.body)
        assert _has_cors(answer)
    _unchanged(client, before)

    # the same callback, well formed, still counts afterwards
    assert post_callback(client, request).json_body == {"ok": True}


def test_callback_404s_and_413(client, running):
    request, route, env = running
    before = get_status(client)
    unknown_task = "tiff_aaaaaaaaaaaaaaaa"
    cases = [
        (f"/callback/batch_nope/{env['TASK_ID']}?attempt=1", dict(success_body(env), batch_id="batch_nope"),
         "batch batch_nope not found"),
        (f"/callback/batch_abc/{unknown_task}?attempt=1", dict(success_body(env), task_id=unknown_task),
         f"task {unknown_task} not found in batch batch_abc"),
        ("/callback/batch_abc/zzz_1?attempt=1", dict(success_body(env), task_id="zzz_1"),
         "task zzz_1 not found in batch batch_abc"),
    ]
    for path, body, reason in cases:
        answer = _post(client, path, body)
        assert answer.status_code == 404, (path, answer.body)
        assert answer.json_body == {"error": reason}
        assert _has_cors(answer)

    big = dict(success_body(env), padding="x" * (1024 * 1024))
    answer = _post(client, route, big)
    assert answer.status_code == 413 and set(answer.json_body) == {"error"}
    assert _has_cors(answer)
    assert _post(client, route, b"x" * (1024 * 1024 + 1)).status_code == 413
    _unchanged(client, before)


def test_status_route_shapes(client, running):
    status = client.http.get("/status/batch_abc")
    assert status.status_code == 200 and _has_cors(status)
    body = status.json_body
    for key in ("batch_id", "status", "progress", "started_at", "updated_at", "completed_at", "error"):
        assert key in body
    assert {"tasks_total", "tasks_completed", "tasks_failed"} <= set(body["progress"])
    assert body["completed_at"] is None and body["error"] is None
    for stamp in (body["started_at"], body["updated_at"]):
        datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert body["delivery"] == {"attempts": 0, "last_error": None, "delivered_at": None}
    assert body["metadata"] == {"k": "v"}  # the queue message's, carried (contracts §1)

    missing = client.http.get("/status/batch_nope")
    assert missing.status_code == 404 and missing.json_body == {"error": "batch batch_nope not found"}
    assert _has_cors(missing)
    bad = client.http.get("/status/bad..id")
    assert bad.status_code == 400 and set(bad.json_body) == {"error"}


def test_tasks_route_rejects_bad_queries(client, running):
    def next_token(shard, key, status=None):
        return base64.urlsafe_b64encode(json.dumps({"shard": shard, "key": key, "status": status}).encode()).decode()

    n = task_shard("tiff_a")
    token = next_token(n, {"shard_key": {"S": f"batch_other#{n}"}, "task_id": {"S": "tiff_a"}})
    forged = [next_token((n + 1) % TASK_SHARDS,  # the task is not in that shard
                         {"shard_key": {"S": f"batch_abc#{(n + 1) % TASK_SHARDS}"}, "task_id": {"S": "tiff_a"}}),
              next_token(TASK_SHARDS, None), next_token(-1, None), next_token("0", None), next_token(True, None),
              next_token(0, [1]), next_token(n, {"shard_key": {"S": f"batch_abc#{n}"}}),
              next_token(0, None, "failed"),  # a token of another status (without status=)
              base64.urlsafe_b64encode(json.dumps({"batch_id": {"S": "batch_abc"},
                                                   "task_id": {"S": "tiff_a"}}).encode()).decode()]
    for query, reason in [("status=done", "status must be one of pending, processing, completed, failed"),
                          ("status=FAILED", "status must be one of"),
                          ("limit=0", "limit must be an integer from 1 to 500"),
                          ("limit=501", "limit must be an integer from 1 to 500"),
                          ("limit=abc", "limit must be an integer"),
                          ("limit=-1", "limit must be an integer"),
                          ("limit=%C2%B2", "limit must be an integer"),
                          ("limit=" + "9" * 5000, "limit must be an integer"),
                          ("next=%21%21%21", "invalid next token"),
                          ("next=" + base64.urlsafe_b64encode(b"[1]").decode(), "invalid next token"),
                          ("next=" + base64.urlsafe_b64encode(b'{"x": {"S": "y"}}').decode(), "invalid next token"),
                          ("next=" + token, "invalid next token"),
                          ("status=failed&next=" + token, "invalid next token"),
                          *(("next=" + f, "invalid next token") for f in forged)]:
        answer = client.http.get(f"/status/batch_abc/tasks?{query}")
        assert answer.status_code == 400, (query, answer.body)
        assert set(answer.json_body) == {"error"} and reason in answer.json_body["error"], answer.body
        assert _has_cors(answer)
    missing = client.http.get("/status/batch_nope/tasks")
    assert missing.status_code == 404 and missing.json_body == {"error": "batch batch_nope not found"}

    # a token issued for one status is not accepted for another
    first = client.http.get("/status/batch_abc/tasks?status=processing&limit=1").json_body
    assert first["next"]
    other = client.http.get(f"/status/batch_abc/tasks?status=failed&limit=1&next={first['next']}")
    assert other.status_code == 400


def test_preflight_and_health(client):
    for path in ("/", "/health", "/status/batch_abc", "/status/batch_abc/tasks",
                 "/callback/batch_abc/tiff_x", "/admin/reset/batch_abc", "/test"):
        answer = client.http.request("OPTIONS", path, headers={"Origin": "https://example.org",
                                                               "Access-Control-Request-Method": "POST"})
        assert answer.status_code == 200, path
        assert _has_cors(answer), path
    health = client.http.get("/health")
    assert health.status_code == 200 and _has_cors(health)
    body = health.json_body
    assert set(body) == {"status", "service", "timestamp", "unsigned_callbacks_accepted"}
    assert body["unsigned_callbacks_accepted"] is False
    assert body["status"] == "ok" and body["service"] == "arke-preprocessing-orchestrator"
    assert datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).tzinfo is not None


def test_test_route_on_dev(services, client, fly):
    answer = _post(client, "/test", message())
    assert answer.status_code == 200 and _has_cors(answer)
    assert answer.json_body == {"ok": True, "batch_id": "batch_abc", "result": "started"}
    assert get_status(client)["status"] == "TIFF_CONVERSION"
    again = _post(client, "/test", message())
    assert again.json_body == {"ok": True, "batch_id": "batch_abc", "result": "duplicate"}
    bad = _post(client, "/test", b"{nope")
    assert bad.status_code == 400 and "not JSON" in bad.json_body["error"]
    bad = _post(client, "/test", dict(message("batch_x"), r2_prefix="staging/elsewhere/"))
    assert bad.status_code == 400 and "outside r2_prefix" in bad.json_body["error"]
    assert client.http.get("/status/batch_x").status_code == 404


def test_test_route_is_404_on_prod(services, client, env):
    make_services(env, STAGE="prod")
    answer = _post(client, "/test", message())
    assert answer.status_code == 404 and answer.json_body == {"error": "not found"}
    assert _has_cors(answer)
    assert client.http.get("/status/batch_abc").status_code == 404


# ---- the tasks route -------------------------------------------------------------------

def test_tasks_route_pages_filters_and_fields(services, client, fly, env):
    services = make_services(env, BATCH_SIZE_TIFF_CONVERSION="5")
    app.intake(sqs_event(message(tiffs=7, others=2)), LambdaContext(30))
    run_pass(services)
    requests = list(fly.requests)
    assert len(requests) == 5
    envs = [callback_path(r)[1] for r in requests]
    post_callback(client, requests[0], success_body(envs[0], size=111))
    post_callback(client, requests[1], success_body(envs[1], size=222))
    post_callback(client, requests[2], error_body(envs[2], "Failed to download TIFF: 404 Not Found"))
    # requests[3:5] still processing, two tasks still pending

    for limit in (1, 2, 3, 7, 50):
        pages, token = [], None
        while True:
            query = f"limit={limit}" + (f"&next={token}" if token else "")
            body = client.http.get(f"/status/batch_abc/tasks?{query}").json_body
            assert body["batch_id"] == "batch_abc" and len(body["tasks"]) <= limit
            pages.append(body["tasks"])
            token = body["next"]
            if not token:
                break
            assert len(pages) <= 7, "the next token does not advance"
        ids = [t["task_id"] for page in pages for t in page]
        assert len(ids) == 7 and len(set(ids)) == 7, limit
        assert len(pages) >= -(-7 // limit)

    by_status = {s: list_tasks(client, status=s, limit=1)
                 for s in ("pending", "processing", "completed", "failed")}
    assert {s: len(v) for s, v in by_status.items()} == {"pending": 2, "processing": 2, "completed": 2,
                                                         "failed": 1}
    assert all(t["status"] == s for s, tasks in by_status.items() for t in tasks)

    tasks = {t["task_id"]: t for t in list_tasks(client)}
    fields = {"task_id", "phase", "status", "input_r2_key", "attempts", "machine_id", "last_error",
              "output_r2_key", "output_file_name", "output_file_size", "performance", "updated_at"}
    for task in tasks.values():
        assert fields <= set(task)
        assert task["phase"] == "TIFF_CONVERSION" and task["input_r2_key"].startswith("staging/batch_abc/")
    done = tasks[envs[0]["TASK_ID"]]
    assert done["status"] == "completed" and done["attempts"] == 1 and done["machine_id"] == requests[0]["id"]
    assert done["output_r2_key"] == success_body(envs[0])["output_r2_key"]
    assert done["output_file_size"] == 111 and done["last_error"] is None
    assert done["performance"] == success_body(envs[0])["performance"]
    assert done["input_r2_key"] == envs[0]["INPUT_R2_KEY"]
    failed = tasks[envs[2]["TASK_ID"]]
    assert failed["last_error"] == "Failed to download TIFF: 404 Not Found"
    assert failed["output_r2_key"] is None and failed["performance"] is None
    running = tasks[envs[3]["TASK_ID"]]
    assert running["status"] == "processing" and running["machine_id"] == requests[3]["id"]
    pending = by_status["pending"]
    assert all(t["attempts"] == 0 and t["machine_id"] is None for t in pending)
