"""A second phase defined here, in the test, chained after TIFF conversion through the
registry: nothing in chalicelib knows it (design.md §3, phases as a registry)."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

import app
from chalicelib.errors import InvalidCallbackError
from chalicelib.phases import (
    Discovery,
    FileEntry,
    MachineContext,
    Phase,
    PhaseRegistry,
    TaskSpec,
    TaskView,
)
from chalicelib.phases.tiff_conversion import TiffConversion
from chalicelib.transitions import Outcome

from .conftest import (
    LambdaContext,
    callback_path,
    drive,
    error_body,
    get_status,
    list_tasks,
    make_services,
    message,
    post_callback,
    run_pass,
    sqs_event,
    without_spawned,
)


class Thumbnails(Phase):
    name = "THUMBNAILS"
    task_prefix = "thumb"
    machine_prefix = "thumb"
    log_prefix = "[Thumbnails]"

    def discover(self, discovery: Discovery) -> list[TaskSpec]:
        # one task per converted TIFF, keyed by the original file (the final list's key)
        return [TaskSpec(self.task_id(discovery.batch_id, t.input_r2_key), t.output_r2_key,
                         t.file_position, {"source_task": t.task_id})
                for t in discovery.previous_tasks if t.status == "completed" and t.output_r2_key]

    def machine_env(self, batch_id: str, task: TaskView, attempt: int, ctx: MachineContext) -> dict[str, str]:
        return {"TASK_ID": task.task_id, "BATCH_ID": batch_id, "JPEG_R2_KEY": task.input_r2_key,
                "SOURCE_TASK": task.data["source_task"], "THUMB_SIZE": "256",
                "CALLBACK_URL": ctx.callback_url, "CALLBACK_TOKEN": ctx.callback_token or ""}

    def interpret_callback(self, body: Mapping[str, Any]) -> Outcome:
        if body["status"] == "error":
            return Outcome(ok=False, error=body["error"], permanent=True)
        key = body.get("thumbnail_r2_key")
        if not isinstance(key, str) or not key:
            raise InvalidCallbackError("success callback needs thumbnail_r2_key")
        return Outcome(ok=True, output={"output_r2_key": key,
                                        "output_file_name": posixpath.basename(key),
                                        "output_file_size": int(body.get("size", 0))})

    def final_entry(self, entry: dict[str, Any], file: FileEntry, task: TaskView | None) -> dict[str, Any]:
        if task is None or task.status != "completed":
            return entry
        return dict(entry, thumbnail_r2_key=task.output_r2_key,
                    preprocessor_tags=[*entry.get("preprocessor_tags", []), "Thumbnailer"])


def _thumb_body(env: dict[str, str]) -> dict[str, Any]:
    return {"task_id": env["TASK_ID"], "batch_id": env["BATCH_ID"], "status": "success",
            "thumbnail_r2_key": env["JPEG_R2_KEY"].replace(".jpg", ".thumb.jpg"), "size": 99}


def test_batch_runs_through_two_phases(services, client, fly, ingest, env):
    registry = PhaseRegistry([TiffConversion(next_phase="THUMBNAILS"), Thumbnails()])
    services = make_services(env, registry)
    app.intake(sqs_event(message(tiffs=3, others=1)), LambdaContext(30))

    run_pass(services)
    tiff_requests = list(fly.requests)
    assert len(tiff_requests) == 3
    # the first TIFF fails for good: it gets no thumbnail, and is delivered unchanged
    _, lost_env = callback_path(tiff_requests[0])
    post_callback(client, tiff_requests[0], error_body(lost_env, "Failed to download TIFF: 404 Not Found"))
    for request in tiff_requests[1:]:
        assert post_callback(client, request).json_body == {"ok": True}

    drive(services, lambda: get_status(client)["status"] == "THUMBNAILS")
    status = get_status(client)
    assert status["phase"] == "THUMBNAILS"
    assert status["progress"]["tasks_total"] == 2 and status["progress"]["tasks_completed"] == 0
    assert status["phases"] == [{"phase": "TIFF_CONVERSION", "total": 3, "completed": 2, "failed": 1}]

    drive(services, lambda: len(fly.requests) == 5)
    thumb_requests = fly.requests[3:]
    for request in thumb_requests:
        name = request["body"]["name"]
        route, thumb_env = callback_path(request)
        assert name == f"thumb-{thumb_env['TASK_ID']}" and thumb_env["TASK_ID"].startswith("thumb_")
        assert without_spawned(route) == f"/callback/batch_abc/{thumb_env['TASK_ID']}?attempt=1"
        assert set(thumb_env) == {"TASK_ID", "BATCH_ID", "JPEG_R2_KEY", "SOURCE_TASK", "THUMB_SIZE",
                                  "CALLBACK_URL", "CALLBACK_TOKEN"}
        assert thumb_env["JPEG_R2_KEY"].endswith(".jpg")
    thumbs = list_tasks(client, status="processing")
    assert {t["phase"] for t in thumbs} == {"THUMBNAILS"} and len(thumbs) == 2

    # the phase reads its own callbacks: a TIFF-shaped success is a 400 here
    _, first_thumb_env = callback_path(thumb_requests[0])
    tiff_shaped = {"task_id": first_thumb_env["TASK_ID"], "batch_id": "batch_abc", "status": "success",
                   "output_r2_key": "staging/batch_abc/x.jpg", "output_file_name": "x.jpg",
                   "output_file_size": 1}
    wrong = post_callback(client, thumb_requests[0], tiff_shaped)
    assert wrong.status_code == 400 and "thumbnail_r2_key" in wrong.json_body["error"]
    for request in thumb_requests:
        assert post_callback(client, request, _thumb_body(callback_path(request)[1])).json_body == {"ok": True}
    assert post_callback(client, thumb_requests[0], _thumb_body(first_thumb_env)).json_body["ignored"] is True

    drive(services, lambda: get_status(client)["status"] == "DONE")
    status = get_status(client)
    assert [p["phase"] for p in status["phases"]] == ["TIFF_CONVERSION", "THUMBNAILS"]
    assert status["phases"][1] == {"phase": "THUMBNAILS", "total": 2, "completed": 2, "failed": 0}
    files = ingest.accepted()[0]["body"]["files"]
    assert len(files) == 4
    # (machines are created concurrently: the failed TIFF is whichever file its key names)
    [lost] = [f for f in files[:3] if f["r2_key"] == lost_env["INPUT_R2_KEY"]]
    assert "preprocessor_tags" not in lost and "thumbnail_r2_key" not in lost
    converted = [f for f in files[:3] if f is not lost]
    assert len(converted) == 2
    for entry in converted:
        assert entry["content_type"] == "image/jpeg"
        assert entry["preprocessor_tags"] == ["TiffConverter", "Thumbnailer"]
        assert entry["thumbnail_r2_key"] == entry["r2_key"].replace(".jpg", ".thumb.jpg")
    assert "thumbnail_r2_key" not in files[3] and files[3]["content_type"] == "text/plain"
    assert len(fly.requests) == 5


def test_next_phase_with_no_tasks_goes_straight_to_delivery(services, client, fly, ingest, env):
    registry = PhaseRegistry([TiffConversion(next_phase="THUMBNAILS"), Thumbnails()])
    services = make_services(env, registry)
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    run_pass(services)
    _, tiff_env = callback_path(fly.requests[0])
    post_callback(client, fly.requests[0], error_body(tiff_env, "not a TIFF file"))
    drive(services, lambda: get_status(client)["status"] == "DONE")
    assert len(fly.requests) == 1
    assert [p["phase"] for p in get_status(client)["phases"]] == ["TIFF_CONVERSION", "THUMBNAILS"]
    assert ingest.accepted()[0]["body"]["files"][0]["r2_key"] == tiff_env["INPUT_R2_KEY"]
