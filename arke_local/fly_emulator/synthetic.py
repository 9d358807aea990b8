"""The synthetic machine: the emulator plays the worker itself, in a thread, with no process.

For load and chaos tests where what matters is the orchestrator, not the conversion: after
an optional work delay the job stores a small valid JPEG as the task's output and POSTs the
contract's success callback (contracts §3), exactly as the real worker would, through the
machine's (proxied) `CALLBACK_URL`, so callback faults apply. The input is never read.

- Output: `OUTPUT_URL` present -> `PUT` there with `Content-Type: image/jpeg` (a presigned
  URL); otherwise boto3 `put_object` to `R2_BUCKET` at `R2_ENDPOINT_URL` (or the account's
  R2 endpoint) with the env's R2 keys. The key is `INPUT_R2_KEY` with a final `.tif`/`.tiff`
  (any case) replaced by `.jpg`.
- Callback: `Authorization: Bearer $CALLBACK_TOKEN` when the env has one.
- An upload that fails sends the contract's error callback and exits 1.

Never decides faults and never touches machine states: the supervisor runs `run_job`.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

log = logging.getLogger("arke_local.fly_emulator")
P = "[FlyEmulator]"
TIFF_SUFFIX = re.compile(r"\.tiff?$", re.IGNORECASE)
CALLBACK_TIMEOUT_S = 600.0  # a held (late) callback must not be cut short by us
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
_lock = threading.Lock()
_jpeg: bytes | None = None
_clients: dict[tuple[str, str, str], object] = {}


class JobCancelled(Exception):
    """The machine went away (stopped, destroyed, crashed) before the job was done."""


def output_key(input_key: str) -> str:
    """`INPUT_R2_KEY` with a final .tif/.tiff (any case) replaced by .jpg (contracts §3)."""
    return TIFF_SUFFIX.sub(".jpg", input_key) if TIFF_SUFFIX.search(input_key) else input_key + ".jpg"


def jpeg_bytes() -> bytes:
    """A small valid JPEG (made once with Pillow)."""
    global _jpeg
    with _lock:
        if _jpeg is None:
            from PIL import Image

            buf = io.BytesIO()
            Image.new("RGB", (16, 12), (200, 120, 40)).save(buf, "JPEG", quality=95)
            _jpeg = buf.getvalue()
        return _jpeg


def _s3_client(endpoint: str, key_id: str, secret: str):
    """One boto3 client per (endpoint, keys), shared by the jobs (clients are thread-safe)."""
    with _lock:
        client = _clients.get((endpoint, key_id, secret))
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint, aws_access_key_id=key_id,
                aws_secret_access_key=secret, region_name="auto",
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                              retries={"max_attempts": 3, "mode": "standard"},
                              max_pool_connections=50,
                              request_checksum_calculation="when_required",
                              response_checksum_validation="when_required"),
            )
            _clients[(endpoint, key_id, secret)] = client
        return client


def store_output(env: Mapping[str, str], key: str, body: bytes, session=None) -> None:
    """PUT to OUTPUT_URL (through `session`, a requests.Session, when given: keep-alive), else
    boto3 with the env's R2 keys."""
    output_url = env.get("OUTPUT_URL", "").strip()
    if output_url and session is not None:
        answer = session.put(output_url, data=body, headers={"Content-Type": "image/jpeg"}, timeout=30)
        answer.raise_for_status()
        return
    if output_url:
        request = urllib.request.Request(output_url, data=body, method="PUT",
                                         headers={"Content-Type": "image/jpeg"})
        with _OPENER.open(request, timeout=30) as response:
            response.read()
        return
    endpoint = env.get("R2_ENDPOINT_URL", "").strip() or (
        f"https://{env.get('R2_ACCOUNT_ID', '')}.r2.cloudflarestorage.com"
    )
    client = _s3_client(endpoint, env.get("R2_ACCESS_KEY_ID", ""), env.get("R2_SECRET_ACCESS_KEY", ""))
    client.put_object(Bucket=env["R2_BUCKET"], Key=key, Body=body, ContentType="image/jpeg")


def post_callback(env: Mapping[str, str], body: dict) -> int:
    """POST the callback; the HTTP status (0 when nothing answered)."""
    headers = {"Content-Type": "application/json"}
    token = env.get("CALLBACK_TOKEN", "").strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(env["CALLBACK_URL"], data=json.dumps(body).encode(),
                                     method="POST", headers=headers)
    try:
        with _OPENER.open(request, timeout=CALLBACK_TIMEOUT_S) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def run_job(env: Mapping[str, str], cancelled: threading.Event, work_s: float, name: str = "",
            incr: Callable[[str], None] = lambda _name: None) -> int:
    """Play one worker run; the exit code (0 success, 1 failure). Raises JobCancelled when
    `cancelled` is set before the output or the callback went out. `incr` counts stats."""
    started = time.monotonic()
    if work_s and cancelled.wait(work_s):
        raise JobCancelled
    task_id, batch_id = env.get("TASK_ID", ""), env.get("BATCH_ID", "")
    key = env.get("OUTPUT_R2_KEY") or output_key(env.get("INPUT_R2_KEY", ""))
    body = jpeg_bytes()
    upload_started = time.monotonic()
    try:
        store_output(env, key, body)
    except Exception as exc:  # noqa: BLE001 - any failure becomes the contract's error callback
        log.info("%s synthetic machine %s: upload of %s failed: %s", P, name, key, exc)
        incr("synthetic_upload_errors")
        if cancelled.is_set():
            raise JobCancelled from None
        post_callback(env, {"task_id": task_id, "batch_id": batch_id, "status": "error",
                            "error": f"Failed to upload JPEG: {exc}"})
        return 1
    incr("synthetic_outputs")
    done = time.monotonic()
    if cancelled.is_set():
        raise JobCancelled
    status = post_callback(env, {
        "task_id": task_id, "batch_id": batch_id, "status": "success",
        "output_r2_key": key, "output_file_name": key.rsplit("/", 1)[-1],
        "output_file_size": len(body),
        "performance": {
            "total_time_ms": int((done - started) * 1000),
            "download_time_ms": 0,
            "conversion_time_ms": int((upload_started - started) * 1000),
            "upload_time_ms": int((done - upload_started) * 1000),
        },
    })
    return 0 if 200 <= status < 300 else 1
