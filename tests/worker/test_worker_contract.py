"""Contract mode (`python -m worker`) as a real subprocess against moto's S3 server
(standing in for R2) and a real HTTP callback receiver, both on 127.0.0.1."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import tifffile
import worker_tiffmaker as tm
from PIL import Image
from worker_helpers import BUCKET, REPO


def put_tiff(s3, key: str, data: bytes | None = None) -> bytes:
    if data is None:
        buf = io.BytesIO()
        tifffile.imwrite(buf, tm.quadrant_rgb(), photometric="rgb", compression="lzw")
        data = buf.getvalue()
    s3.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType="image/tiff")
    return data


def run_worker(env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_success_body_object_and_logs(s3, worker_env, receiver):
    key = "staging/batch_t/folder/image.tiff"
    put_tiff(s3, key)
    result = run_worker(worker_env(key))
    assert result.returncode == 0, result.stdout + result.stderr

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["path"] == "/callback/batch_t/batch_t_tiff_1?attempt=2"
    assert "Authorization" not in request["headers"]
    body = request["body"]
    head = s3.head_object(Bucket=BUCKET, Key="staging/batch_t/folder/image.jpg")
    assert head["ContentType"] == "image/jpeg"
    assert set(body) == {"task_id", "batch_id", "status", "output_r2_key", "output_file_name",
                         "output_file_size", "performance"}  # fmt: skip
    assert body["task_id"] == "batch_t_tiff_1" and body["batch_id"] == "batch_t"
    assert body["status"] == "success"
    assert body["output_r2_key"] == "staging/batch_t/folder/image.jpg"
    assert body["output_file_name"] == "image.jpg"
    assert body["output_file_size"] == head["ContentLength"] > 0
    perf = body["performance"]
    assert set(perf) == {
        "total_time_ms",
        "download_time_ms",
        "conversion_time_ms",
        "upload_time_ms",
    }
    assert all(isinstance(v, int) and v >= 0 for v in perf.values())
    assert perf["total_time_ms"] >= perf["download_time_ms"] + perf["conversion_time_ms"]

    jpeg = s3.get_object(Bucket=BUCKET, Key=body["output_r2_key"])["Body"].read()
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.format == "JPEG" and im.size == (tm.W, tm.H)

    lines = result.stdout.strip().splitlines()
    assert lines and all(
        line.startswith("[Worker] batch=batch_t task=batch_t_tiff_1 ") for line in lines
    )
    assert "testing" not in result.stdout  # the R2 keys are never logged


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("staging/b/UPPER.TIF", "staging/b/UPPER.jpg"),
        ("staging/b/mixed.TiFf", "staging/b/mixed.jpg"),
        ("staging/b/dots.in.name.tif", "staging/b/dots.in.name.jpg"),
    ],
)
def test_key_mapping(s3, worker_env, receiver, key, expected):
    put_tiff(s3, key)
    result = run_worker(worker_env(key))
    assert result.returncode == 0, result.stdout + result.stderr
    body = receiver.requests[-1]["body"]
    assert body["output_r2_key"] == expected
    assert body["output_file_name"] == expected.rsplit("/", 1)[1]
    s3.head_object(Bucket=BUCKET, Key=expected)


def test_missing_key_sends_the_contract_error(worker_env, receiver, s3):
    result = run_worker(worker_env("staging/batch_t/missing.tif"))
    assert result.returncode == 1
    assert receiver.requests[-1]["body"] == {
        "task_id": "batch_t_tiff_1",
        "batch_id": "batch_t",
        "status": "error",
        "error": "Failed to download TIFF: 404 Not Found",
        "error_code": "input_missing",
    }


def test_bad_tiff_sends_a_precise_error(s3, worker_env, receiver):
    put_tiff(s3, "staging/batch_t/fake.tif", b"%PDF-1.7 not a tiff")
    result = run_worker(worker_env("staging/batch_t/fake.tif"))
    assert result.returncode == 1
    body = receiver.requests[-1]["body"]
    assert body["status"] == "error"
    assert body["error"] == "Failed to convert TIFF: not a TIFF file: it starts with b'%PDF-1.7'"
    assert body["error_code"] == "not_tiff"
    assert "Traceback" not in result.stdout + result.stderr


def test_callback_is_retried(s3, worker_env, receiver):
    put_tiff(s3, "staging/batch_t/retry.tif")
    receiver.failures = 2
    result = run_worker(worker_env("staging/batch_t/retry.tif"))
    assert result.returncode == 0, result.stdout
    assert len(receiver.requests) == 3
    assert all(r["body"] == receiver.requests[0]["body"] for r in receiver.requests)
    assert "retrying" in result.stdout


def test_undeliverable_callback_exits_non_zero(s3, worker_env, receiver):
    put_tiff(s3, "staging/batch_t/never.tif")
    receiver.failures = 100
    result = run_worker(worker_env("staging/batch_t/never.tif", WORKER_CALLBACK_ATTEMPTS="3"))
    assert result.returncode == 3
    assert len(receiver.requests) == 3
    assert "exiting without a callback" in result.stdout


def test_rejected_callback_is_not_retried(s3, worker_env, receiver):
    put_tiff(s3, "staging/batch_t/rejected.tif")
    receiver.failures, receiver.fail_status = 100, 409
    result = run_worker(worker_env("staging/batch_t/rejected.tif"))
    assert result.returncode == 3
    assert len(receiver.requests) == 1


def test_callback_token_is_sent_and_never_logged(s3, worker_env, receiver):
    put_tiff(s3, "staging/batch_t/token.tif")
    token = "s3cr3t-callback-token"
    result = run_worker(worker_env("staging/batch_t/token.tif", CALLBACK_TOKEN=token))
    assert result.returncode == 0
    assert receiver.requests[-1]["headers"]["Authorization"] == f"Bearer {token}"
    assert token not in result.stdout + result.stderr


def test_missing_environment(receiver):
    env = {k: v for k, v in os.environ.items() if k not in ("TASK_ID", "INPUT_R2_KEY")}
    result = run_worker(env)
    assert result.returncode == 2
    assert "Missing environment variables" in result.stdout
    assert receiver.requests == []


def test_incomplete_environment_is_reported_by_callback(worker_env, receiver):
    env = worker_env("staging/x.tif")
    del env["R2_SECRET_ACCESS_KEY"], env["R2_BUCKET"]
    result = run_worker(env)
    assert result.returncode == 2
    assert receiver.requests[-1]["body"] == {
        "task_id": "batch_t_tiff_1",
        "batch_id": "batch_t",
        "status": "error",
        "error": "Invalid worker environment: Missing environment variables: "
        "R2_SECRET_ACCESS_KEY, R2_BUCKET",
        "error_code": "internal",
    }


def test_unreachable_r2_reports_download_failure(worker_env, receiver):
    env = worker_env("staging/x.tif", R2_ENDPOINT_URL="http://127.0.0.1:9")
    result = run_worker(env, timeout=120)
    assert result.returncode == 1
    assert receiver.requests[-1]["body"]["error"].startswith("Failed to download TIFF: ")
    assert receiver.requests[-1]["body"]["error_code"] == "transfer_failed"


def test_multipart_upload_of_a_large_jpeg(s3, worker_env, receiver, tmp_path):
    import numpy as np

    rng = np.random.default_rng(5)
    noise = rng.integers(0, 255, (2000, 2800, 3), np.uint8)  # ~5.7 MB of JPEG at q95
    buf = io.BytesIO()
    tifffile.imwrite(buf, noise, photometric="rgb")
    put_tiff(s3, "staging/batch_t/noise.tif", buf.getvalue())
    # Pillow's encoder is ten times quicker on noise; the upload is what is tested here.
    env = worker_env("staging/batch_t/noise.tif", WORKER_PART_SIZE_MB="5", WORKER_ENCODER="pillow")
    result = run_worker(env, timeout=120)
    assert result.returncode == 0, result.stdout
    body = receiver.requests[-1]["body"]
    head = s3.head_object(Bucket=BUCKET, Key="staging/batch_t/noise.jpg")
    assert head["ContentLength"] == body["output_file_size"]
    assert head["ContentType"] == "image/jpeg"
    assert body["output_file_size"] > 5 * 1024 * 1024
    assert head["ETag"].strip('"').endswith("-2")  # a multipart upload of two parts
