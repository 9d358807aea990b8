"""Every answer of the real `chalice local` server is the contract's JSON with CORS
(contracts §4, issue 11 §7): an unknown path (which chalice local, like bare API Gateway,
would answer 403 "Missing Authentication Token"), a wrong method (Chalice's 405
`{"Code"}`), a JSON body sent as a form (Chalice's 415), and a crash (500 with a request
id that is also in the server's log line).

Only the API runs, as a subprocess on a free port. Its DynamoDB endpoint is a closed
loopback port, so any route that reads a batch crashes: that is the 500 under test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from arke_local.endpoints import free_port

pytestmark = pytest.mark.e2e
REPO_ROOT = Path(__file__).resolve().parents[2]
CHALICE = str(Path(sys.executable).parent / "chalice")
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Admin-Token"}


@dataclass
class Server:
    url: str
    log: Path


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Server]:
    port, dead = free_port(), free_port()  # nothing listens on `dead`
    log = tmp_path_factory.mktemp("chalice-local") / "api.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ARKE_"))}
    env.update(STAGE="local", AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_ENDPOINT_URL=f"http://127.0.0.1:{dead}",
               ADMIN_TOKEN="contract-admin-token", PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen([CHALICE, "local", "--stage", "local", "--host", "127.0.0.1",
                                 "--port", str(port), "--no-autoreload"], cwd=REPO_ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                requests.get(f"{url}/health", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield Server(url, log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def _contract_error(answer: requests.Response, status: int) -> dict:
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["Content-Type"].startswith("application/json")
    for name, value in CORS.items():
        assert answer.headers.get(name) == value, (name, answer.headers)
    body = answer.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert "Code" not in body and "message" not in body
    return body


@pytest.mark.parametrize("method,path", [
    ("GET", "/nope"), ("POST", "/status"), ("GET", "/a/b/c/d/e/f"), ("OPTIONS", "/nope"),
    ("GET", "/admin/reset/batch_x/extra"),
])
def test_unknown_path_is_404_json_with_cors(api, method, path):
    body = _contract_error(requests.request(method, api.url + path, timeout=5), 404)
    assert body["error"] == "no such route" and body["request_id"]


@pytest.mark.parametrize("method,path,allowed", [
    ("DELETE", "/health", "GET"), ("PUT", "/status/batch_x", "GET"),
    ("GET", "/callback/batch_x/tiff_x", "POST"), ("GET", "/admin/retry/batch_x", "POST"),
    ("PATCH", "/test", "POST"),
])
def test_wrong_method_is_405_json_with_cors(api, method, path, allowed):
    answer = requests.request(method, api.url + path, timeout=5)
    body = _contract_error(answer, 405)
    assert method in body["error"] and allowed in body["error"]
    assert answer.headers["Allow"] == f"{allowed}, OPTIONS"


def test_json_body_is_read_whatever_the_content_type(api):
    """`curl -d` sends application/x-www-form-urlencoded: the body is still read as JSON,
    so the answer is the message's own problem, not a 415."""
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {"Content-Type": content_type} if content_type else {}
        answer = requests.post(f"{api.url}/test", data=json.dumps({"batch_id": "bad..id"}),
                               headers=headers, timeout=5)
        body = _contract_error(answer, 400)
        assert "batch_id may contain only" in body["error"], (content_type, body)


def test_preflight_allows_the_admin_headers(api):
    for path in ("/status/batch_x", "/admin/retry/batch_x", "/", "/callback/batch_x/tiff_x"):
        answer = requests.options(api.url + path, headers={
            "Origin": "http://elsewhere.test", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, x-admin-token"}, timeout=5)
        assert answer.status_code == 200, path
        allowed = {h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "x-admin-token", "content-type"} <= allowed


def test_crash_is_500_with_the_request_id_of_its_log_line(api):
    body = _contract_error(requests.get(f"{api.url}/status/batch_crash", timeout=30), 500)
    assert body["error"] == "internal error"
    rid = body["request_id"]
    assert set(body) == {"error", "request_id"} and len(rid) >= 8
    deadline = time.monotonic() + 5
    while f"request_id={rid}" not in api.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(ln for ln in api.log.read_text().splitlines() if f"request_id={rid}" in ln)
    assert line.startswith("[HTTP] internal_error") and "path=/status/batch_crash" in line
    assert "testing" not in line  # no credential in the answer's log line
