"""Fixtures for the orchestrator's tests: moto in-process for AWS, a loopback Fly stand-in,
Chalice's test client for the routes, and a helper that plays the machines' callbacks."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.session
import pynamodb.connection.base
import pytest
from chalice.test import Client
from moto import mock_aws

from arke_local.moto_server import serialize_dynamodb
from chalicelib import scheduler, secrets, signing
from chalicelib.models import ensure_tables
from chalicelib.services import Services, build_services, use_services
from chalicelib.settings import Settings

from .fly_stub import FlyStub
from .ingest_stub import IngestStub

BASE_ENV = {
    "STAGE": "dev",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "ORCHESTRATOR_URL": "https://orchestrator.test",
    "FLY_API_TOKEN": "fly-test-token",
    "CALLBACK_SIGNING_KEY": "callback-signing-test-key",
    "ADMIN_TOKEN": "admin-test-token",
    "R2_ACCOUNT_ID": "acct",
    "R2_ACCESS_KEY_ID": "r2-key-id",
    "R2_SECRET_ACCESS_KEY": "r2-secret",
    "FLY_CREATE_RATE": "1000",
    "FLY_CREATE_BURST": "1000",
    "ALARM_DELAY_TIFF_CONVERSION": "50",
    "ALARM_DELAY_ERROR_RETRY": "200",
    # Short enough that a scripted hang (the stub sleeps 1.5 s) costs a test little, long
    # enough that a loaded 2-core CI machine does not turn a slow answer into a timeout.
    "FLY_REQUEST_TIMEOUT_MS": "1000",
    "DELIVERY_TIMEOUT_MS": "2000",
    "SWEEP_DELAY_MS": "300",
    # The tests written for one machine per attempt say so; pool mode's own (test_orch_pool*)
    # set MACHINE_MODE=pool.
    "MACHINE_MODE": "single",
}


@pytest.fixture
def fly() -> Iterator[FlyStub]:
    stub = FlyStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def ingest() -> Iterator[IngestStub]:
    stub = IngestStub()
    yield stub
    stub.stop()


@pytest.fixture
def env(fly: FlyStub, ingest: IngestStub, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = dict(BASE_ENV, FLY_API_HOSTNAME=fly.url, WORKER_URL=ingest.url)
    for key in list(os.environ):
        if key.startswith(("AWS_ENDPOINT_URL", "AWS_PROFILE")):
            monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


# In-process moto is not thread-safe (its TransactWriteItems deep-copies a table while
# another thread may be writing to it). DynamoDB answers each request atomically, so the
# local stack's one lock around moto's DynamoDB handler (arke_local/moto_server.py) models
# the service faithfully here too, while our own threads still interleave between requests.


# pynamodb builds a fresh botocore session for every connection, and each one parses the
# service and endpoint JSON again (~0.2 s a client, and the models get new connections in
# every test). Sessions that share one data loader parse it once; nothing else changes.
_LOADER_SESSION = botocore.session.get_session()


def _session_with_shared_loader() -> botocore.session.Session:
    session = botocore.session.get_session()
    session.register_component("data_loader", _LOADER_SESSION.get_component("data_loader"))
    return session


# The account endpoint of R2 (contracts §3): moto serves it as S3, so a test exercises
# the orchestrator's real endpoint choice rather than an override.
R2_ACCOUNT_ENDPOINT = "https://acct.r2.cloudflarestorage.com"


@pytest.fixture
def aws(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    serialize_dynamodb()
    monkeypatch.setattr(pynamodb.connection.base, "get_session", _session_with_shared_loader)
    monkeypatch.setenv("MOTO_S3_CUSTOM_ENDPOINTS", R2_ACCOUNT_ENDPOINT)
    with mock_aws():
        yield


def make_services(env: dict[str, str], registry: Any = None, **overrides: str) -> Services:
    secrets.forget_secrets()
    values = dict(env, **overrides)
    settings = Settings.from_env(values)
    services = build_services(settings, registry)
    ensure_tables(settings)
    use_services(services)
    return services


@pytest.fixture
def services(aws: None, env: dict[str, str]) -> Iterator[Services]:
    svc = make_services(env)
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="arke-staging")
    yield svc
    use_services(None)
    secrets.forget_secrets()


@pytest.fixture
def client(services: Services) -> Iterator[Client]:
    import app

    with Client(app.app) as test_client:
        yield test_client


def message(batch_id: str = "batch_abc", tiffs: int = 3, others: int = 1, **extra: Any) -> dict[str, Any]:
    """A queue message as the ingest service sends it (contracts §1)."""
    prefix = f"staging/{batch_id}/"
    files = [{"r2_key": f"{prefix}folder/image_{i}.{'TIF' if i % 2 else 'tiff'}",
              "logical_path": f"folder/image_{i}.{'TIF' if i % 2 else 'tiff'}",
              "file_name": f"image_{i}.{'TIF' if i % 2 else 'tiff'}", "file_size": 1000 + i,
              "content_type": "image/tiff"} for i in range(tiffs)]
    files += [{"r2_key": f"{prefix}folder/notes_{i}.txt", "logical_path": f"folder/notes_{i}.txt",
               "file_name": f"notes_{i}.txt", "file_size": 10, "content_type": "text/plain",
               "cid": f"bafy{i}"} for i in range(others)]
    body = {"batch_id": batch_id, "r2_prefix": prefix, "uploader": "tester", "root_path": "/",
            "total_files": len(files), "total_bytes": sum(f["file_size"] for f in files),
            "uploaded_at": "2026-11-29T00:00:00Z", "finalized_at": "2026-11-29T00:01:00Z",
            "metadata": {"k": "v"},
            "directories": [{"directory_path": "folder",
                             "processing_config": {"ocr": False, "describe": True, "pinax": False},
                             "file_count": len(files), "total_bytes": 0, "files": files}]}
    body.update(extra)
    return body


def sqs_event(body: dict[str, Any] | str, message_id: str = "msg-1") -> dict[str, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    return {"Records": [{"messageId": message_id, "receiptHandle": "rh", "body": text,
                         "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
                         "eventSource": "aws:sqs", "awsRegion": "us-east-1",
                         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:arke-preprocess-jobs"}]}


class LambdaContext:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds
        self.aws_request_id = "req"
        self.function_name = "tick"

    def get_remaining_time_in_millis(self) -> int:
        return int((self._end - time.monotonic()) * 1000)


def run_pass(services: Services, owner: str = "test-tick") -> scheduler.TickReport:
    """One round of the tick, after the batches' next pass has come due."""
    time.sleep(services.settings.alarm_delay_tiff_conversion_ms / 1000 + 0.01)
    return scheduler.run_due_passes(services, owner)


def callback_path(request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The route path (with query) and env of a machine the orchestrator created."""
    env = request["body"]["config"]["env"]
    url = urlsplit(env["CALLBACK_URL"])
    return f"{url.path}?{url.query}", env


def without_spawned(url: str) -> str:
    """A callback URL without its `&spawned=<ms>` (the spawn time behind the callback
    latency metric), which every machine's URL must end with."""
    head, sep, spawned = url.rpartition("&spawned=")
    assert sep and spawned.isdigit() and abs(int(spawned) - time.time() * 1000) < 600_000, url
    return head


def success_body(env: dict[str, Any], size: int = 4242) -> dict[str, Any]:
    key = env["INPUT_R2_KEY"].rsplit(".", 1)[0] + ".jpg"
    return {"task_id": env["TASK_ID"], "batch_id": env["BATCH_ID"], "status": "success",
            "output_r2_key": key, "output_file_name": key.rsplit("/", 1)[-1], "output_file_size": size,
            "performance": {"total_time_ms": 30, "download_time_ms": 10, "conversion_time_ms": 15,
                            "upload_time_ms": 5}}


def post_callback(client: Client, request: dict[str, Any], body: dict[str, Any] | None = None,
                  path: str | None = None) -> Any:
    route, env = callback_path(request)
    payload = body if body is not None else success_body(env)
    headers = {"Content-Type": "application/json"}
    if env.get("CALLBACK_TOKEN"):
        headers["Authorization"] = f"Bearer {env['CALLBACK_TOKEN']}"
    return client.http.post(path or route, headers=headers, body=json.dumps(payload))


ADMIN_HEADERS = {"Authorization": "Bearer admin-test-token"}


def signed_headers(path: str) -> dict[str, str]:
    """JSON headers plus the callback token a machine would hold for this route's task and
    attempt (computed with the test key), so tests reach past authentication."""
    headers = {"Content-Type": "application/json"}
    url = urlsplit(path)
    parts = url.path.split("/")
    attempt = parse_qs(url.query).get("attempt", [""])[0]
    if len(parts) >= 4 and attempt.isascii() and attempt.isdigit() and len(attempt) <= 6:
        token = signing.callback_token(BASE_ENV["CALLBACK_SIGNING_KEY"], parts[2], parts[3], int(attempt))
        headers["Authorization"] = f"Bearer {token}"
    return headers


def post_admin(client: Client, action: str, batch_id: str = "batch_abc", **headers: str) -> Any:
    """POST /admin/{action}/{batch_id} with the admin token (or the headers given)."""
    return client.http.post(f"/admin/{action}/{batch_id}", headers=headers or ADMIN_HEADERS)



class _CurrentStdout:
    """Whatever sys.stdout is at the time of writing (pytest swaps it per phase)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """capsys, with the orchestrator's log handler writing to the captured stdout (it holds
    the stdout of import time otherwise)."""
    handler = logging.getLogger("arke").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(_CurrentStdout())  # type: ignore[arg-type]
    yield capsys
    handler.setStream(previous)


def drive(services: Services, until: Callable[[], Any], timeout: float = 10.0,
          owner: str = "test-tick") -> Any:
    """Run tick rounds until `until()` is truthy (returns its value); fail after `timeout` s."""
    end = time.monotonic() + timeout
    while True:
        value = until()
        if value:
            return value
        assert time.monotonic() < end, "condition not reached in time"
        run_pass(services, owner)


def get_status(client: Client, batch_id: str = "batch_abc") -> dict[str, Any]:
    response = client.http.get(f"/status/{batch_id}")
    assert response.status_code == 200, response.body
    return response.json_body


def list_tasks(client: Client, batch_id: str = "batch_abc", status: str | None = None,
               limit: int = 500) -> list[dict[str, Any]]:
    """Every task of a batch through the tasks route, following `next` tokens."""
    tasks: list[dict[str, Any]] = []
    token = None
    for _ in range(1000):  # a token that never ends is a failure, not a hang
        query = f"limit={limit}" + (f"&status={status}" if status else "") + (f"&next={token}" if token else "")
        response = client.http.get(f"/status/{batch_id}/tasks?{query}")
        assert response.status_code == 200, response.body
        tasks += response.json_body["tasks"]
        token = response.json_body["next"]
        if not token:
            return tasks
    raise AssertionError("the tasks route kept returning a next token")


def error_body(env: dict[str, Any], error: str, error_code: str | None = None) -> dict[str, Any]:
    body = {"task_id": env["TASK_ID"], "batch_id": env["BATCH_ID"], "status": "error", "error": error}
    return body if error_code is None else {**body, "error_code": error_code}
