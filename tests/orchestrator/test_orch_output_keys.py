"""Issue 8 §1: a conversion never overwrites a file of the batch. The output key is decided
once, at intake (phases/output_keys.py), handed to the machine, signed into its upload URL,
and shown by the tasks route and the final file list."""

from __future__ import annotations

from urllib.parse import urlsplit

import app
from chalicelib.phases.output_keys import OutputPlanner

from .conftest import (
    LambdaContext,
    callback_path,
    drive,
    get_status,
    list_tasks,
    post_callback,
    run_pass,
    sqs_event,
)

PREFIX = "staging/batch_abc/"


def _file(key: str, name: str, logical: str | None = None, content_type: str = "image/tiff") -> dict:
    return {"r2_key": PREFIX + key, "logical_path": logical if logical is not None else key, "file_name": name,
            "file_size": 100, "content_type": content_type}


def _message(files: list[dict]) -> dict:
    return {"batch_id": "batch_abc", "r2_prefix": PREFIX, "uploader": "t", "root_path": "/",
            "total_files": len(files), "total_bytes": 100 * len(files),
            "uploaded_at": "2026-11-29T00:00:00Z", "finalized_at": "2026-11-29T00:01:00Z",
            "directories": [{"directory_path": "f", "processing_config": {"ocr": False, "describe": False,
                                                                         "pinax": False},
                             "file_count": len(files), "total_bytes": 0, "files": files}]}


def test_the_contract_rule_where_it_is_safe_and_a_fixed_order_where_it_is_not():
    planner = OutputPlanner([("a/scan.tif", "scan.tif"), ("a/scan.tiff", "scan.tiff"), ("a/scan.TIF", "scan.TIF"),
                             ("a/other.tif", "other.tif"), ("a/master.tif", "master.tif"),
                             ("a/master.jpg", "master.jpg"), ("a/blob", "blob"),
                             ("a/x.tif", "x.tif"), ("a/x.jpg", "x.jpg"), ("a/x.tif.jpg", "x.tif.jpg")])
    assert planner.plan("a/other.tif", "other.tif").r2_key == "a/other.jpg"
    assert planner.plan("a/scan.tif", "scan.tif").r2_key == "a/scan.jpg"
    assert planner.plan("a/scan.tiff", "scan.tiff").r2_key == "a/scan.tiff.jpg"
    assert planner.plan("a/scan.TIF", "scan.TIF").r2_key == "a/scan.TIF.jpg"
    # beside an uploaded access copy: never over it
    assert planner.plan("a/master.tif", "master.tif").r2_key == "a/master.tif.jpg"
    # a key without a TIFF suffix gains one, never stays the input's own key
    assert planner.plan("a/blob", "blob").r2_key == "a/blob.jpg"
    # both simple forms taken: the first free number
    assert planner.plan("a/x.tif", "x.tif").r2_key == "a/x.tif.2.jpg"
    # the logical path follows the same transform
    assert planner.plan("a/y.tif", "y.tif").logical_path == "y.jpg"


def test_colliding_tiffs_get_distinct_keys_through_intake_machine_and_delivery(services, client, fly, ingest):
    files = [_file("scan.tif", "scan.tif"), _file("scan.TIFF", "scan.TIFF"),
             _file("master.tif", "master.tif"),
             _file("master.jpg", "master.jpg", content_type="image/jpeg"),
             _file("noext", "page.tif", logical="page.tif")]
    app.intake(sqs_event(_message(files)), LambdaContext(30))
    run_pass(services)
    envs = {callback_path(r)[1]["INPUT_R2_KEY"]: callback_path(r)[1] for r in fly.requests}
    planned = {key: env["OUTPUT_R2_KEY"] for key, env in envs.items()}
    assert planned == {PREFIX + "scan.tif": PREFIX + "scan.jpg", PREFIX + "scan.TIFF": PREFIX + "scan.TIFF.jpg",
                       PREFIX + "master.tif": PREFIX + "master.tif.jpg", PREFIX + "noext": PREFIX + "noext.jpg"}
    inputs = {f["r2_key"] for f in files}
    assert not inputs & set(planned.values()) and len(set(planned.values())) == 4
    for key, env in envs.items():  # the upload URL is signed for that key, not the input's
        assert urlsplit(env["OUTPUT_URL"]).path.endswith("/" + planned[key])
    assert {t["input_r2_key"]: t["planned_output_key"] for t in list_tasks(client)} == planned

    for request in fly.requests:
        _, env = callback_path(request)
        # a worker that reports another key: the presigned URL only let it write the planned one
        body = {"task_id": env["TASK_ID"], "batch_id": env["BATCH_ID"], "status": "success",
                "output_r2_key": env["INPUT_R2_KEY"] + ".wrong.jpg", "output_file_name": "x.jpg",
                "output_file_size": 10}
        assert post_callback(client, request, body).json_body == {"ok": True}
    drive(services, lambda: get_status(client)["status"] == "DONE")
    assert {t["input_r2_key"]: t["output_r2_key"] for t in list_tasks(client)} == planned
    delivered = ingest.accepted()[0]["body"]["files"]
    keys = [f["r2_key"] for f in delivered]
    assert keys == [PREFIX + "scan.jpg", PREFIX + "scan.TIFF.jpg", PREFIX + "master.tif.jpg",
                    PREFIX + "master.jpg", PREFIX + "noext.jpg"]
    assert [f["logical_path"] for f in delivered] == ["scan.jpg", "scan.TIFF.jpg", "master.tif.jpg",
                                                      "master.jpg", "page.jpg"]
    assert [f["file_name"] for f in delivered] == ["scan.jpg", "scan.TIFF.jpg", "master.tif.jpg",
                                                   "master.jpg", "noext.jpg"]
