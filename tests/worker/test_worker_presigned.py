"""Contract mode with presigned URLs (INPUT_URL, OUTPUT_URL): no R2 keys on the machine."""

from __future__ import annotations

import io
import subprocess
import sys

import tifffile
import worker_tiffmaker as tm
from PIL import Image
from worker_helpers import BUCKET, REPO

R2_NAMES = ("R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_BUCKET", "R2_ENDPOINT_URL")


def _presigned_env(s3, worker_env, key: str, out_key: str) -> dict:
    env = {k: v for k, v in worker_env(key).items() if k not in R2_NAMES}
    env["INPUT_URL"] = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key},
                                                 ExpiresIn=600)
    env["OUTPUT_URL"] = s3.generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": out_key, "ContentType": "image/jpeg"}, ExpiresIn=600)
    return env


def _run(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def test_presigned_urls_convert_without_r2_keys(s3, worker_env, receiver):
    key, out_key = "staging/batch_t/p/scan.TIF", "staging/batch_t/p/scan.jpg"
    buf = io.BytesIO()
    tifffile.imwrite(buf, tm.quadrant_rgb(), photometric="rgb", compression="lzw")
    s3.put_object(Bucket=BUCKET, Key=key, Body=buf.getvalue())
    env = _presigned_env(s3, worker_env, key, out_key)
    result = _run(env)
    assert result.returncode == 0, result.stdout + result.stderr
    [request] = receiver.requests
    assert request["body"]["status"] == "success" and request["body"]["output_r2_key"] == out_key
    head = s3.head_object(Bucket=BUCKET, Key=out_key)
    assert head["ContentType"] == "image/jpeg"
    assert request["body"]["output_file_size"] == head["ContentLength"]
    with Image.open(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=out_key)["Body"].read())) as im:
        assert im.size == (tm.W, tm.H)
    assert "X-Amz-Signature" not in result.stdout  # signed URLs are never logged


def test_presigned_missing_input_is_the_contract_error(s3, worker_env, receiver):
    env = _presigned_env(s3, worker_env, "staging/batch_t/p/absent.tif", "staging/batch_t/p/absent.jpg")
    result = _run(env)
    assert result.returncode == 1
    [request] = receiver.requests
    assert request["body"]["status"] == "error"
    assert request["body"]["error"] == "Failed to download TIFF: 404 Not Found"
    assert request["body"]["error_code"] == "input_missing"
