"""End to end: a mixed batch through the whole local stack, first cleanly, then again
(new batch id) under the emulator's faults; both must reach the same end state. And a
message intake cannot use is retried by the pump, then dead-lettered by the queue."""

from __future__ import annotations

import io
import json
import re
import time

import pytest
from PIL import Image

from arke_local.progress import watch
from arke_local.submission import new_batch_id, submit_folder

pytestmark = pytest.mark.e2e

DONE_TIMEOUT_S = 150
TIFF_RE = re.compile(r"\.tiff?$", re.IGNORECASE)


def _jpeg_key(r2_key: str) -> str:
    return TIFF_RE.sub(".jpg", r2_key)


def _run_batch(e2e, folder) -> tuple[str, dict, float]:
    batch_id = new_batch_id()
    started = time.monotonic()
    message = submit_folder(e2e.target, folder, batch_id=batch_id)
    out = io.StringIO()
    code, answer = watch(e2e.api, batch_id, interval_s=0.5, timeout_s=DONE_TIMEOUT_S, out=out, tty=False)
    took = time.monotonic() - started
    # 2: DONE with failed tasks (the corrupt TIFF of every batch here; _assert_end_state checks it)
    assert code == 2, f"batch did not reach DONE: {answer}\n{out.getvalue()}\n{e2e.log_tails()}"
    return batch_id, message, took


def _assert_end_state(e2e, batch_id: str, message: dict, samples) -> None:
    tiffs = [s for s in samples if s.is_tiff]
    good = [s for s in tiffs if not s.expect_failure]
    broken = [s for s in tiffs if s.expect_failure]
    prefix = f"staging/{batch_id}/"

    status = e2e.api.status(batch_id)
    p = status["progress"]
    assert status["status"] == "DONE"
    assert (p["tasks_total"], p["tasks_completed"], p["tasks_failed"]) == (len(tiffs), len(good), len(broken))

    # Every good TIFF has a decodable JPEG of the first page's size.
    r2 = e2e.target.r2()
    for s in good:
        key = _jpeg_key(prefix + s.relpath)
        obj = r2.get_object(Bucket=e2e.target.bucket, Key=key)
        assert obj["ContentType"] == "image/jpeg", key
        with Image.open(io.BytesIO(obj["Body"].read())) as im:
            im.load()
            assert im.format == "JPEG", key
            assert im.size == (s.width, s.height), (key, s.kind)

    # The corrupt one failed, with its error readable through the tasks route.
    failed = e2e.api.tasks(batch_id, status="failed")
    assert [t["input_r2_key"] for t in failed] == [prefix + s.relpath for s in broken]
    assert all(t["last_error"] for t in failed), failed
    completed = e2e.api.tasks(batch_id, status="completed")
    assert len(completed) == len(good)

    # Exactly one delivery to the ingest service, with every file in directory order.
    deadline = time.monotonic() + 30
    while e2e.received(batch_id)["count"] == 0 and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(1.5)  # a second delivery would show up by now
    received = e2e.received(batch_id)
    assert received["count"] == 1, received
    files = received["deliveries"][0]["body"]["files"]

    originals = [(d, f) for d in message["directories"] for f in d["files"]]
    assert len(files) == len(originals) == len(samples)
    broken_keys = {prefix + s.relpath for s in broken}
    for got, (directory, orig) in zip(files, originals, strict=True):
        assert got["processing_config"] == directory["processing_config"]
        is_tiff = TIFF_RE.search(orig["file_name"]) is not None
        if not is_tiff or orig["r2_key"] in broken_keys:
            expected = dict(orig, processing_config=directory["processing_config"])
            assert got == expected, got
            continue
        jpeg_key = _jpeg_key(orig["r2_key"])
        head = r2.head_object(Bucket=e2e.target.bucket, Key=jpeg_key)
        assert got["r2_key"] == jpeg_key
        assert got["logical_path"] == _jpeg_key(orig["logical_path"])
        assert got["file_name"] == _jpeg_key(orig["file_name"])
        assert got["file_size"] == head["ContentLength"]
        assert got["content_type"] == "image/jpeg"
        assert got["source_file"] == orig["file_name"]
        assert got["preprocessor_tags"] == ["TiffConverter"]
        assert "cid" not in got


def test_e2e_mixed_batch_reaches_done(e2e_local_stack, e2e_sample_batch, record_property, tmp_path, capsys):
    folder, samples = e2e_sample_batch
    before = e2e_local_stack.emulator_stats()
    batch_id, message, took = _run_batch(e2e_local_stack, folder)
    _assert_end_state(e2e_local_stack, batch_id, message, samples)
    _assert_cli_reads_the_batch(e2e_local_stack, batch_id, samples, tmp_path, capsys)
    after = e2e_local_stack.emulator_stats()
    machines = after["machines_started"] - before["machines_started"]
    record_property("done_after_s", round(took, 1))
    print(f"\n[e2e] clean batch {batch_id}: {len(samples)} files, DONE {took:.1f} s after submit, "
          f"{machines} machines")


def _assert_cli_reads_the_batch(e2e, batch_id, samples, tmp_path, capsys) -> None:
    """status, tasks, fetch and received, through the CLI, against this stack."""
    from arke_local import cli

    where = ["--api-url", e2e.stack.endpoints.api, "--endpoint-url", e2e.stack.endpoints.aws]
    capsys.readouterr()
    assert cli.main([*where, "status", batch_id]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "DONE"
    assert cli.main([*where, "tasks", batch_id, "--failed"]) == 0
    got = capsys.readouterr()
    assert "corrupt-00.tif" in got.out and "error:" in got.out
    assert "1 task(s) with status failed" in got.err
    assert cli.main([*where, "fetch", batch_id, str(tmp_path / "jpeg")]) == 0
    good = [s for s in samples if s.is_tiff and not s.expect_failure]
    assert len(list((tmp_path / "jpeg").rglob("*.jpg"))) == len(good)
    capsys.readouterr()
    assert cli.main(["received", batch_id, "--receiver-url", e2e.ingest_url]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 1
    assert cli.main([*where, "status", "batch_unknown"]) == 1


def test_e2e_same_batch_under_faults_reaches_the_same_end(e2e_local_stack, e2e_sample_batch, record_property):
    e2e = e2e_local_stack
    folder, samples = e2e_sample_batch
    before = e2e.emulator_stats()
    # Scripts make each kind certain; the rates add more at random (seeded). This batch
    # starts the machines the clean one left stopped: the first starts are refused (host
    # full, not startable) or migrated, so it creates too, into the create faults.
    e2e.set_faults(
        seed=7,
        start_script=[409, 412, "migrated"],
        script=[429, 429, 503],
        rate_429=0.2,
        callback_script=["crash", "duplicate", "crash", "duplicate"],
        crash_before_callback_rate=0.05,
        duplicate_callback_rate=0.2,
    )
    try:
        batch_id, message, took = _run_batch(e2e, folder)
    finally:
        e2e.clear_faults()
    _assert_end_state(e2e, batch_id, message, samples)
    after = e2e.emulator_stats()
    delta = {k: after[k] - before.get(k, 0) for k in after if isinstance(after[k], int)}
    assert delta["starts_accepted"] >= 1  # the standing pool served a second batch
    assert delta["injected_start_failures"] >= 2 and delta["starts_migrated"] >= 1
    assert delta["injected_429"] >= 1
    assert delta["crashes_before_callback"] >= 2
    assert delta["duplicate_callbacks"] >= 2
    record_property("done_after_s", round(took, 1))
    kinds = {k: delta[k] for k in ("injected_start_failures", "starts_migrated", "starts_accepted",
                                   "creates_accepted", "injected_429", "rate_limited_429", "injected_5xx",
                                   "crashes_before_callback", "duplicate_callbacks", "machines_started")}
    print(f"\n[e2e] faulted batch {batch_id}: DONE {took:.1f} s after submit; injected {kinds}")


def test_e2e_poison_message_lands_in_the_dead_letter_queue(e2e_local_stack):
    sqs = e2e_local_stack.target.aws("sqs")
    queue_url = sqs.get_queue_url(QueueName="arke-preprocess-jobs")["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName="preprocess-dlq")["QueueUrl"]
    body = json.dumps({"not": "a batch", "marker": time.time()})
    sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    deadline = time.monotonic() + 60
    moved = []
    while time.monotonic() < deadline and not moved:
        got = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=2, AttributeNames=["All"])
        moved = [m for m in got.get("Messages", []) if m["Body"] == body]
    assert moved, "the poison message never reached the dead-letter queue\n" + e2e_local_stack.log_tails()
    assert int(moved[0]["Attributes"]["ApproximateReceiveCount"]) >= 3
    sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=moved[0]["ReceiptHandle"])


def test_e2e_batch_sent_as_a_manifest(e2e_local_stack, tmp_path):
    """The large-batch path: the file list in R2 (`manifest_r2_key`), not in the message."""
    from arke_local.samples import generate_batch

    e2e = e2e_local_stack
    samples = generate_batch(tmp_path, 4, seed=99, broken=0, max_side=120)
    batch_id = new_batch_id()
    message = submit_folder(e2e.target, tmp_path, batch_id=batch_id, manifest="always")
    assert "directories" not in message and message["manifest_r2_key"].endswith("/_manifest.json")
    code, answer = watch(e2e.api, batch_id, interval_s=0.5, timeout_s=DONE_TIMEOUT_S, out=io.StringIO(), tty=False)
    assert code == 0, f"{answer}\n{e2e.log_tails()}"
    p = answer["progress"]
    assert (p["tasks_total"], p["tasks_completed"], p["tasks_failed"]) == (4, 4, 0)
    deadline = time.monotonic() + 30
    while e2e.received(batch_id)["count"] == 0 and time.monotonic() < deadline:
        time.sleep(0.25)
    files = e2e.received(batch_id)["deliveries"][0]["body"]["files"]
    assert len(files) == len(samples)
    assert sum(1 for f in files if f.get("preprocessor_tags") == ["TiffConverter"]) == 4
