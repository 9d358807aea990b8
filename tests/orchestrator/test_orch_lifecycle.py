"""The whole lifecycle of a batch: queue message -> machines -> callbacks -> final delivery."""

from __future__ import annotations

import app

from .conftest import LambdaContext, message, post_callback, run_pass, sqs_event


def test_batch_runs_from_message_to_delivery(services, client, fly, ingest):
    app.intake(sqs_event(message(tiffs=3, others=1)), LambdaContext(30))
    status = client.http.get("/status/batch_abc").json_body
    assert status["status"] == "TIFF_CONVERSION"
    assert status["progress"]["tasks_total"] == 3

    run_pass(services)
    assert len(fly.created()) == 3
    request = fly.requests[0]["body"]
    assert request["name"].startswith("tiff-tiff_")
    assert request["config"]["auto_destroy"] is True
    assert request["config"]["restart"] == {"policy": "no"}
    assert request["config"]["guest"] == {"memory_mb": 1024, "cpus": 2, "cpu_kind": "shared"}
    assert fly.requests[0]["auth"] == "Bearer fly-test-token"

    for req in fly.requests:
        assert post_callback(client, req).json_body == {"ok": True}
    status = client.http.get("/status/batch_abc").json_body
    assert status["progress"]["tasks_completed"] == 3

    run_pass(services)  # phase ended -> FINALIZING
    run_pass(services)  # delivery
    status = client.http.get("/status/batch_abc").json_body
    assert status["status"] == "DONE", status
    assert len(ingest.accepted()) == 1
    files = ingest.accepted()[0]["body"]["files"]
    assert [f["content_type"] for f in files] == ["image/jpeg"] * 3 + ["text/plain"]
    assert files[0]["source_file"] == "image_0.tiff"
    assert files[0]["logical_path"] == "folder/image_0.jpg"
    assert files[1]["logical_path"] == "folder/image_1.jpg"
    assert files[0]["preprocessor_tags"] == ["TiffConverter"]
    assert files[3]["cid"] == "bafy0" and "source_file" not in files[3]
