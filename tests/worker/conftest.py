"""Shared fixtures for the worker's tests: a converter that returns what the JPEG shows,
a moto S3 server standing in for R2, and an HTTP callback receiver, all on loopback."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for worker_helpers, worker_tiffmaker

from worker_helpers import BUCKET  # noqa: E402
from worker_pool_orchestrator import PoolOrchestrator  # noqa: E402


@pytest.fixture
def convert(tmp_path):
    """convert(path) -> (numpy array of the JPEG as decoded, ConversionReport)."""
    from PIL import Image

    from worker.convert import convert_in_process
    from worker.settings import Limits

    def run(path, max_pixels: int = 50_000_000):
        out = tmp_path / (Path(path).stem + ".jpg")
        report = convert_in_process(str(path), str(out), Limits(max_pixels=max_pixels))
        with Image.open(out) as im:
            assert im.format == "JPEG"
            assert im.mode in ("L", "RGB")
            return np.asarray(im), report

    return run


# --- R2 stand-in -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    return client


# --- callback receiver -----------------------------------------------------------------


class CallbackReceiver:
    """Records every POST; answers the first `failures` of them with `fail_status`."""

    def __init__(self):
        self.requests: list[dict] = []
        self.failures = 0
        self.fail_status = 503
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": json.loads(raw)}
                    )
                    fail = len(receiver.requests) <= receiver.failures
                status = receiver.fail_status if fail else 200
                payload = b'{"ok": false}' if fail else b'{"ok": true}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = CallbackReceiver()
    yield r
    r.close()


@pytest.fixture
def worker_env(moto_endpoint, receiver):
    """The exact environment of contracts §3 plus the local R2 endpoint."""

    def make(input_key: str, task_id: str = "batch_t_tiff_1", **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("R2_", "WORKER_", "AWS_"))}
        env.update(
            TASK_ID=task_id,
            BATCH_ID="batch_t",
            INPUT_R2_KEY=input_key,
            R2_ACCOUNT_ID="local",
            R2_ACCESS_KEY_ID="testing",
            R2_SECRET_ACCESS_KEY="testing",
            R2_BUCKET=BUCKET,
            CALLBACK_URL=receiver.url(f"/callback/batch_t/{task_id}?attempt=2"),
            R2_ENDPOINT_URL=moto_endpoint,
            WORKER_CALLBACK_BACKOFF_S="0.05",
        )
        env.update(extra)
        return env

    return make


# --- pool mode: the orchestrator's pool API and a pool machine's environment -----------


@pytest.fixture
def orch():
    o = PoolOrchestrator()
    yield o
    o.close()


@pytest.fixture
def pool_env(orch, moto_endpoint):
    """A pool machine's environment (docs/pool.md), R2 keys included (MACHINE_R2_CREDENTIALS)."""

    def make(**extra) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("R2_", "WORKER_", "AWS_", "MACHINE_", "FLY_"))}  # fmt: skip
        env.update(
            WORKER_MODE="pool", BATCH_ID=orch.batch_id, MACHINE_NAME=orch.machine_name,
            MACHINE_TOKEN=orch.token, ORCHESTRATOR_URL=orch.url + "/", R2_BUCKET=BUCKET,
            R2_ACCOUNT_ID="local", R2_ACCESS_KEY_ID="testing", R2_SECRET_ACCESS_KEY="testing",
            R2_ENDPOINT_URL=moto_endpoint, FLY_VM_MEMORY_MB="2048",
            WORKER_CALLBACK_BACKOFF_S="0.05", WORKER_PULL_BACKOFF_S="0.05",
        )  # fmt: skip
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    return make
