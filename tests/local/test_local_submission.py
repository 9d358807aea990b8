"""submit: the queue message the ingest service would build, inline or as a manifest."""

from __future__ import annotations

import json

import boto3
import pytest
import requests

from arke_local import infra
from arke_local.submission import LocalFile, build_message, scan, submit_folder
from arke_local.target import resolve

FILES = [
    LocalFile("b/two.TIF", 20),
    LocalFile("notes.txt", 5),
    LocalFile("a/one.tiff", 10),
    LocalFile("a/deep/three.tif", 30),
    LocalFile("a/cover.png", 7),
]


def test_inline_message_groups_files_by_folder():
    message, manifest = build_message("batch_x", FILES)
    assert manifest is None
    assert message["batch_id"] == "batch_x" and message["r2_prefix"] == "staging/batch_x/"
    assert message["total_files"] == 5 and message["total_bytes"] == 72
    dirs = message["directories"]
    assert [d["directory_path"] for d in dirs] == ["/", "/a", "/a/deep", "/b"]
    a = dirs[1]
    assert a["file_count"] == 2 and a["total_bytes"] == 17
    assert a["processing_config"] == {"ocr": False, "describe": False, "pinax": False}
    one = next(f for f in a["files"] if f["file_name"] == "one.tiff")
    assert one == {
        "r2_key": "staging/batch_x/a/one.tiff",
        "logical_path": "/a/one.tiff",
        "file_name": "one.tiff",
        "file_size": 10,
        "content_type": "image/tiff",
    }
    types = {f["file_name"]: f["content_type"] for d in dirs for f in d["files"]}
    assert types == {"notes.txt": "text/plain", "one.tiff": "image/tiff", "cover.png": "image/png",
                     "three.tif": "image/tiff", "two.TIF": "image/tiff"}
    for key in ("uploader", "root_path", "uploaded_at", "finalized_at", "metadata"):
        assert key in message
    assert "manifest_r2_key" not in message


def test_large_batches_go_as_a_manifest():
    many = [LocalFile(f"f/{i:05d}.tif", i) for i in range(3000)]
    message, manifest = build_message("batch_big", many)
    assert manifest is not None
    assert "directories" not in message
    assert message["manifest_r2_key"] == "staging/batch_big/_manifest.json"
    assert len(json.dumps(message)) < 2000
    assert manifest["batch_id"] == "batch_big" and manifest["total_files"] == 3000
    assert sum(d["file_count"] for d in manifest["directories"]) == 3000
    small, none = build_message("batch_s", FILES, manifest="always")
    assert none is not None and "manifest_r2_key" in small


@pytest.mark.parametrize("manifest", ["never", "always"])
def test_submit_folder_uploads_and_sends(moto_endpoint, tmp_path, manifest):
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10)
    target = resolve(stage="local", endpoint_url=moto_endpoint, api_url="http://127.0.0.1:9", environ={})
    cfg = infra.InfraConfig(endpoint_url=moto_endpoint, tables=False)
    sqs = target.aws("sqs")
    queue_url, _ = infra.ensure_queues(sqs, cfg)
    infra.ensure_bucket(target.r2(), cfg)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.tif").write_bytes(b"II*\0tiff")
    (tmp_path / "y.txt").write_text("hi")
    (tmp_path / ".hidden").write_text("skip me")
    assert [f.relpath for f in scan(tmp_path)] == ["sub/x.tif", "y.txt"]

    sent = submit_folder(target, tmp_path, batch_id="batch_t", manifest=manifest)
    got = json.loads(sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"][0]["Body"])
    assert got == sent
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="arke-staging", Prefix="staging/batch_t/")["Contents"]}
    expected = {"staging/batch_t/sub/x.tif", "staging/batch_t/y.txt"}
    if manifest == "always":
        expected.add("staging/batch_t/_manifest.json")
        doc = json.loads(s3.get_object(Bucket="arke-staging", Key=got["manifest_r2_key"])["Body"].read())
        assert doc["total_files"] == 2
    assert keys == expected
    head = s3.head_object(Bucket="arke-staging", Key="staging/batch_t/sub/x.tif")
    assert head["ContentType"] == "image/tiff"


def test_targets():
    local = resolve(environ={"ARKE_API_PORT": "8123"})
    assert local.is_local and local.api_url == "http://127.0.0.1:8123"
    assert local.r2_endpoint == local.aws_endpoint == "http://127.0.0.1:5000"
    dev = resolve(stage="dev", api_url="https://x.example/api",
                  environ={"R2_ACCOUNT_ID": "acct", "R2_ACCESS_KEY_ID": "k", "R2_SECRET_ACCESS_KEY": "s"})
    assert not dev.is_local and dev.aws_endpoint is None
    assert dev.r2_endpoint == "https://acct.r2.cloudflarestorage.com"
    bare = resolve(stage="dev", environ={})
    with pytest.raises(ValueError):
        bare.require_api()
    with pytest.raises(ValueError):
        bare.r2()
