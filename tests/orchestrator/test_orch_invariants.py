"""Counters that always equal a recount of the task items, and the machine request of
contracts §2/§3 exactly (design.md invariants 1 and 3)."""

from __future__ import annotations

from collections import Counter

import boto3

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
    post_callback,
    run_pass,
    sqs_event,
    without_spawned,
)

SEED_ENV = {"TASK_ID", "BATCH_ID", "INPUT_R2_KEY", "R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID",
            "R2_SECRET_ACCESS_KEY", "R2_BUCKET", "CALLBACK_URL"}
EXTRA_ENV = {"ATTEMPT", "CALLBACK_TOKEN", "OUTPUT_R2_KEY"}  # contracts §3: extra variables may be added


def _check_counters(client, cap=None):
    """The batch's counters against a recount of its task items (read from the table and
    through the tasks route)."""
    stored = Counter(t.status for t in store.iter_tasks("batch_abc", consistent_read=True))
    routed = Counter(t["status"] for t in list_tasks(client))
    assert stored == routed
    progress = get_status(client)["progress"]
    assert progress == {"tasks_total": sum(stored.values()), "tasks_completed": stored["completed"],
                        "tasks_failed": stored["failed"], "tasks_in_flight": stored["processing"],
                        "tasks_pending": stored["pending"]}, (progress, stored)
    if cap is not None:
        assert stored["processing"] <= cap
    return stored


def test_counters_equal_a_recount_through_a_mixed_run(services, client, fly, env):
    services = make_services(env, MAX_MACHINES_IN_FLIGHT="5", MAX_RETRY_ATTEMPTS="2")
    app.intake(sqs_event(message(tiffs=9, others=2)), LambdaContext(30))
    _check_counters(client)
    run_pass(services)
    assert len(fly.created()) == 5  # the in-flight cap holds the other four back
    assert _check_counters(client, cap=5) == Counter(processing=5, pending=4)
    r = list(fly.requests)
    envs = [callback_path(x)[1] for x in r]

    post_callback(client, r[0])                                              # completed
    post_callback(client, r[0])                                              # duplicate
    post_callback(client, r[1], error_body(envs[1], "Failed to download TIFF: 404 Not Found"))  # failed
    post_callback(client, r[1], error_body(envs[1], "Failed to download TIFF: 404 Not Found"))  # duplicate
    post_callback(client, r[2], error_body(envs[2], "Failed to upload JPEG: ECONNRESET"))  # retry
    post_callback(client, r[3])
    post_callback(client, r[3], error_body(envs[3], "late and wrong"))     # after success: ignored
    assert _check_counters(client, cap=5) == Counter(completed=2, failed=1, pending=5, processing=1)

    run_pass(services)  # four more fit under the cap; the retry (queued last) waits for a slot
    assert len(fly.created()) == 9
    assert _check_counters(client, cap=5) == Counter(completed=2, failed=1, processing=5, pending=1)
    post_callback(client, r[4])
    assert _check_counters(client, cap=5) == Counter(completed=3, failed=1, processing=4, pending=1)
    drive(services, lambda: len(fly.created()) == 10)
    assert _check_counters(client, cap=5) == Counter(completed=3, failed=1, processing=5)

    retried = fly.requests[9]
    assert callback_path(retried)[1]["TASK_ID"] == envs[2]["TASK_ID"]
    assert retried["body"]["name"].endswith("-2")
    post_callback(client, r[2])  # attempt 1's late success: ignored
    post_callback(client, retried, error_body(callback_path(retried)[1], "Failed to upload JPEG: ECONNRESET"))
    assert _check_counters(client, cap=5) == Counter(completed=3, failed=2, processing=4)  # attempts ran out
    for x in fly.requests[5:9]:
        post_callback(client, x)
        post_callback(client, x)
    assert _check_counters(client) == Counter(completed=7, failed=2)

    drive(services, lambda: get_status(client)["status"] == "DONE")
    status = get_status(client)
    assert status["progress"]["tasks_completed"] + status["progress"]["tasks_failed"] == 9
    assert status["phases"] == [{"phase": "TIFF_CONVERSION", "total": 9, "completed": 7, "failed": 2}]
    assert len(fly.requests) == 10


def _tiff_message():
    body = message(tiffs=0, others=0)
    prefix = "staging/batch_abc/"
    names = ["a.tif", "b.TIFF", "c.TiF", "d.tif.txt", "e.tiffx", "f_tif", "g.jpg"]
    body["directories"][0]["files"] = [
        {"r2_key": f"{prefix}dir/{n}", "logical_path": f"dir/{n}", "file_name": n, "file_size": 10,
         "content_type": "image/tiff"} for n in names]
    return body


def test_machine_request_matches_the_contract(services, client, fly, env):
    """With MACHINE_R2_CREDENTIALS (the seed's behaviour) the env is exactly the seed's plus
    extras; the default (presigned URLs) is tested in test_orch_security.py."""
    services = make_services(env, MACHINE_R2_CREDENTIALS="true")
    app.intake(sqs_event(_tiff_message()), LambdaContext(30))
    run_pass(services)
    assert len(fly.requests) == 3  # .tif/.tiff in any case, nothing else
    tasks = {t["input_r2_key"]: t for t in list_tasks(client)}
    assert set(tasks) == {f"staging/batch_abc/dir/{n}" for n in ("a.tif", "b.TIFF", "c.TiF")}
    for request in fly.requests:
        assert request["path"] == "/v1/apps/arke-tiff-worker/machines"
        assert request["auth"] == "Bearer fly-test-token"
        body = request["body"]
        env = body["config"]["env"]
        task = tasks[env["INPUT_R2_KEY"]]
        assert body == {
            "name": f"tiff-{task['task_id']}",
            "region": "ord",
            "config": {"image": "registry.fly.io/arke-tiff-worker:latest", "env": env, "auto_destroy": True,
                       "restart": {"policy": "no"},
                       "guest": {"memory_mb": 1024, "cpus": 2, "cpu_kind": "shared"}},
        }
        assert set(env) >= SEED_ENV and set(env) - SEED_ENV <= EXTRA_ENV
        assert all(isinstance(v, str) for v in env.values())
        assert env["TASK_ID"] == task["task_id"] and env["BATCH_ID"] == "batch_abc"
        assert (env["R2_ACCOUNT_ID"], env["R2_ACCESS_KEY_ID"], env["R2_SECRET_ACCESS_KEY"]) == (
            "acct", "r2-key-id", "r2-secret")
        assert env["R2_BUCKET"] == "arke-staging"
        assert without_spawned(env["CALLBACK_URL"]) == f"https://orchestrator.test/callback/batch_abc/{task['task_id']}?attempt=1"
        assert "R2_ENDPOINT_URL" not in env
    # the callback URL is one the routes accept, exactly as given
    assert post_callback(client, fly.requests[0]).json_body == {"ok": True}


def test_machine_request_follows_configuration_and_secrets(services, client, fly, env):
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name="/arke-preprocess/dev/R2_SECRET_ACCESS_KEY", Value="from-ssm",
                      Type="SecureString")
    services = make_services(env, MACHINE_R2_CREDENTIALS="true", R2_ENDPOINT_URL="http://127.0.0.1:9000",
                             FLY_APP_NAME="my-worker",
                             FLY_REGION="iad", FLY_WORKER_IMAGE="registry.fly.io/my-worker:v2",
                             R2_BUCKET="other-bucket", ORCHESTRATOR_URL="https://orch.example/prod/")
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    run_pass(services)
    [request] = fly.requests
    body, machine_env = request["body"], request["body"]["config"]["env"]
    assert request["path"] == "/v1/apps/my-worker/machines"
    assert body["region"] == "iad" and body["config"]["image"] == "registry.fly.io/my-worker:v2"
    assert set(machine_env) - SEED_ENV == EXTRA_ENV | {"R2_ENDPOINT_URL"}
    assert machine_env["R2_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert machine_env["R2_SECRET_ACCESS_KEY"] == "from-ssm"  # SSM first, then the environment
    assert machine_env["R2_ACCESS_KEY_ID"] == "r2-key-id"
    assert machine_env["R2_BUCKET"] == "other-bucket"
    task_id = machine_env["TASK_ID"]
    assert without_spawned(machine_env["CALLBACK_URL"]) == f"https://orch.example/prod/callback/batch_abc/{task_id}?attempt=1"
    # API Gateway strips the stage prefix (/prod) before the route sees the path
    answer = post_callback(client, request, path=f"/callback/batch_abc/{task_id}?attempt=1")
    assert answer.json_body == {"ok": True}
