"""The queue intake: redelivered messages, manifests in R2, messages that must dead-letter
(contracts §1; design.md invariants 1 and 5)."""

from __future__ import annotations

import json

import boto3
import pytest

import app
from chalicelib import store
from chalicelib.errors import InvalidMessageError
from chalicelib.models import Batch, File, Task

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

MANIFEST_KEY = "staging/batch_abc/manifest.json"


def _stored():
    return {"batches": {b.batch_id: b.status for b in Batch.scan()},
            "tasks": {(t.task_id, t.status, int(t.attempts), int(t.created_at)) for t in Task.scan()},
            "files": [(int(f.position), f.info["r2_key"]) for f in File.scan()]}


def _queue_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("[Queue]")]


# ---- redelivery ------------------------------------------------------------------------

def test_redelivered_message_changes_nothing(services, client, fly, logs):
    body = message(tiffs=3, others=1)
    app.intake(sqs_event(body, "msg-1"), LambdaContext(30))
    first = _stored()
    status = get_status(client)
    assert len(first["tasks"]) == 3 and len(first["files"]) == 4

    logs.readouterr()
    app.intake(sqs_event(body, "msg-1"), LambdaContext(30))  # SQS delivers it again
    assert "duplicate_ignored" in "\n".join(_queue_lines(logs.readouterr().out))
    assert _stored() == first
    assert get_status(client) == status

    # with work under way: still nothing moves
    run_pass(services)
    assert post_callback(client, fly.requests[0]).json_body == {"ok": True}
    progressed, status = _stored(), get_status(client)
    changed = dict(body, directories=[dict(body["directories"][0], files=body["directories"][0]["files"][:1])])
    for again in (body, changed):  # even a different file list under the same id
        app.intake(sqs_event(again, "msg-2"), LambdaContext(30))
        assert _stored() == progressed
        assert get_status(client) == status
    run_pass(services)
    assert len(fly.requests) == 3
    assert status["progress"]["tasks_completed"] == 1 and status["status"] == "TIFF_CONVERSION"


def test_same_batch_after_error_starts_again(services, client, fly):
    app.intake(sqs_event(message(tiffs=3, others=1)), LambdaContext(30))
    run_pass(services)
    post_callback(client, fly.requests[0])
    assert post_admin(client, "reset", "batch_abc").status_code == 200
    assert get_status(client)["status"] == "ERROR"

    smaller = message(tiffs=2, others=0)
    app.intake(sqs_event(smaller, "msg-again"), LambdaContext(30))
    status = get_status(client)
    assert status["status"] == "TIFF_CONVERSION" and status["error"] is None
    assert status["completed_at"] is None
    assert status["progress"] == {"tasks_total": 2, "tasks_completed": 0, "tasks_failed": 0,
                                  "tasks_in_flight": 0, "tasks_pending": 2}
    tasks = list_tasks(client)
    # attempt numbers go on from the earlier run (its machine names and tokens are never
    # handed out again); the retry budget starts afresh
    assert len(tasks) == 2
    assert {(t["status"], t["attempts"], t["attempts_since_retry"]) for t in tasks} == {("pending", 1, 0)}
    assert len(list(store.iter_files("batch_abc"))) == 2  # the old file list is gone

    drive(services, lambda: len(fly.created()) == 3 + 2)
    for request in fly.requests[3:]:
        assert post_callback(client, request).json_body == {"ok": True}
    drive(services, lambda: get_status(client)["status"] == "DONE")


# ---- manifests -------------------------------------------------------------------------

def _manifest_message(batch_id="batch_abc", key=MANIFEST_KEY):
    body = message(batch_id, tiffs=3, others=1)
    directories = body.pop("directories")
    body["manifest_r2_key"] = key
    return body, directories


def _put(key, data):
    boto3.client("s3", region_name="us-east-1").put_object(Bucket="arke-staging", Key=key, Body=data)


@pytest.mark.parametrize("override", [False, True], ids=["account-endpoint", "R2_ENDPOINT_URL"])
def test_manifest_batch_runs(services, client, fly, ingest, env, override):
    if override:
        services = make_services(env, R2_ENDPOINT_URL="https://s3.us-east-1.amazonaws.com")
    body, directories = _manifest_message()
    _put(MANIFEST_KEY, json.dumps({"batch_id": "batch_abc", "directories": directories,
                                   "total_files": 4, "total_bytes": 0}))
    assert len(json.dumps(body)) < 1000
    app.intake(sqs_event(body), LambdaContext(30))
    status = get_status(client)
    assert status["status"] == "TIFF_CONVERSION" and status["progress"]["tasks_total"] == 3

    run_pass(services)
    for request in fly.requests:
        post_callback(client, request)
    drive(services, lambda: get_status(client)["status"] == "DONE")
    files = ingest.accepted()[0]["body"]["files"]
    originals = directories[0]["files"]
    assert [f["source_file"] for f in files[:3]] == [f["file_name"] for f in originals[:3]]
    assert files[3]["r2_key"] == originals[3]["r2_key"]


BAD_MANIFESTS = [
    ("missing", None, "manifest staging/{b}/manifest.json not found in R2 bucket arke-staging"),
    ("notjson", b"{not json", "manifest staging/{b}/manifest.json: manifest is not JSON"),
    ("notobject", b"[1, 2]", "manifest staging/{b}/manifest.json: manifest must be a JSON object"),
    ("otherbatch", json.dumps({"batch_id": "batch_other", "directories": []}).encode(),
     "manifest staging/{b}/manifest.json: manifest batch_id does not match the message"),
    ("nodirs", json.dumps({"batch_id": "batch_nodirs"}).encode(), "directories must be a list"),
    ("outside", json.dumps({"directories": [{"directory_path": "x", "files": [
        {"r2_key": "staging/elsewhere/a.tif", "file_name": "a.tif"}]}]}).encode(),
     "lies outside r2_prefix"),
]


def test_bad_manifest_fails_the_batch_with_its_reason(services, client, fly, logs):
    for name, content, reason in BAD_MANIFESTS:
        batch_id = f"batch_{name}"
        key = f"staging/{batch_id}/manifest.json"
        body, _ = _manifest_message(batch_id, key)
        if content is not None:
            _put(key, content)
        logs.readouterr()
        app.intake(sqs_event(body), LambdaContext(30))  # no exception: a retry would not help
        status = get_status(client, batch_id)
        assert status["status"] == "ERROR", name
        assert reason.format(b=batch_id) in status["error"], (name, status["error"])
        assert status["completed_at"] is not None
        assert list(store.iter_tasks(batch_id)) == [] and list(store.iter_files(batch_id)) == []
        lines = [line for line in _queue_lines(logs.readouterr().out) if "manifest_failed" in line]
        assert len(lines) == 1 and f"batch_id={batch_id} " in lines[0], (name, lines)
    run_pass(services)
    assert fly.requests == []
    assert list(Batch.active_index.query("active")) == []


def test_message_after_manifest_error_starts_again(services, client, fly):
    body, directories = _manifest_message()
    app.intake(sqs_event(body), LambdaContext(30))
    assert get_status(client)["status"] == "ERROR"
    _put(MANIFEST_KEY, json.dumps({"batch_id": "batch_abc", "directories": directories}))
    app.intake(sqs_event(body, "msg-2"), LambdaContext(30))
    status = get_status(client)
    assert status["status"] == "TIFF_CONVERSION" and status["error"] is None
    assert status["progress"]["tasks_total"] == 3


# ---- invalid messages ------------------------------------------------------------------

def _with_file(**changes):
    body = message()
    body["directories"][0]["files"][0].update(changes)
    return body


def _without_file_field(name):
    body = message()
    del body["directories"][0]["files"][0][name]
    return body


INVALID = [
    ("not json at all", "message body is not JSON"),
    ("[1, 2, 3]", "message body must be a JSON object"),
    ({k: v for k, v in message().items() if k != "batch_id"}, "batch_id must be a non-empty string"),
    (message(batch_id=""), "batch_id must be a non-empty string"),
    (dict(message(), batch_id=42), "batch_id must be a non-empty string"),
    (dict(message(), batch_id="../batch"), "batch_id may contain only"),
    (dict(message(), total_files="4"), "total_files must be an integer"),
    (dict(message(), total_bytes=True), "total_bytes must be an integer"),
    (dict(message(), r2_prefix=7), "r2_prefix must be a string"),
    ({k: v for k, v in message().items() if k != "directories"}, "needs either directories or manifest_r2_key"),
    (dict(message(), directories={"files": []}), "directories must be a list"),
    (dict(message(), directories=[{"directory_path": "x", "files": "a.tif"}]), "files must be a list"),
    (dict(message(), directories=[{"directory_path": "x", "processing_config": [], "files": []}]),
     "processing_config must be an object"),
    (_with_file(file_size="1000"), "file_size must be a non-negative integer"),
    (_with_file(file_size=-1), "file_size must be a non-negative integer"),
    (_without_file_field("file_name"), "file_name is required"),
    (_with_file(content_type=5), "content_type must be a string"),
    (_without_file_field("r2_key"), "r2_key must be a non-empty string"),
    (_with_file(r2_key=""), "r2_key must be a non-empty string"),
    (_with_file(r2_key="staging/batch_abc/../batch_xyz/image.tif"), "without '..'"),
    (_with_file(r2_key="/staging/batch_abc/folder/image.tif"), "without '..'"),
    (_with_file(r2_key="staging/batch_other/image.tif"), "lies outside r2_prefix"),
    (dict({k: v for k, v in message().items() if k != "directories"}, manifest_r2_key="../manifest.json"),
     "without '..'"),
    (dict({k: v for k, v in message().items() if k != "directories"},
          manifest_r2_key="staging/other/manifest.json"), "lies outside r2_prefix"),
]


def test_invalid_message_raises_logs_and_stores_nothing(services, client, fly, logs):
    for body, reason in INVALID:
        logs.readouterr()
        with pytest.raises(InvalidMessageError) as caught:
            app.intake(sqs_event(body), LambdaContext(30))
        assert reason in str(caught.value), (reason, str(caught.value))
        lines = _queue_lines(logs.readouterr().out)
        assert len(lines) == 1, lines
        assert lines[0].startswith("[Queue] invalid_message message_id=msg-1 reason=")
        assert reason.replace('"', '\\"') in lines[0], lines
    assert list(Batch.scan()) == [] and list(Task.scan()) == [] and list(File.scan()) == []
    assert client.http.get("/status/batch_abc").status_code == 404
