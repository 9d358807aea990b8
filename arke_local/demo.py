"""`make demo` (`arke-preprocess demo`): one batch of sample TIFFs through the whole stack.

Starts the local stack (default ports when free, free ones otherwise), generates the
sample TIFFs, submits them through the queue, shows progress, prints the file list the
ingest receiver got and where the JPEGs are (fetched to `out/demo/jpeg/`), and stops
the stack. Exit 0 when the batch is DONE and the only failures are the broken samples.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import requests

from arke_local.client import OrchestratorClient
from arke_local.endpoints import Ports
from arke_local.fetch import fetch_jpegs
from arke_local.progress import watch
from arke_local.samples import generate_batch
from arke_local.stack import LocalStack, StackError, StackOptions
from arke_local.submission import new_batch_id, submit_folder
from arke_local.target import resolve


def log(message: str) -> None:
    print(f"[CLI] {message}", flush=True)


def wait_for_delivery(ingest_url: str, batch_id: str, timeout_s: float = 60.0) -> dict | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = requests.get(f"{ingest_url}/received/{batch_id}", timeout=5).json()
        if got.get("count"):
            return got["deliveries"][0]["body"]
        time.sleep(0.5)
    return None


def run_demo(count: int = 24, out_dir: Path = Path("out/demo"), keep_logs: bool = True) -> int:
    out_dir = out_dir.resolve()
    inputs, jpegs, logs = out_dir / "input", out_dir / "jpeg", out_dir / "logs"
    for d in (inputs, jpegs, logs):
        shutil.rmtree(d, ignore_errors=True)
    ports = Ports.from_env()
    if not ports.all_free():
        ports = Ports.free()
        log("default ports busy (is `make up` running?); using free ports")
    samples = generate_batch(inputs, count, broken=1)
    tiffs = [s for s in samples if s.is_tiff]
    expected_failures = {s.relpath for s in samples if s.expect_failure}
    log(f"{len(samples)} sample files ({len(tiffs)} TIFFs, {len(expected_failures)} broken) in {inputs}")

    options = StackOptions(
        ports=ports,
        log_dir=logs,
        extra_env={"ALARM_DELAY_TIFF_CONVERSION": "1000"},
    )
    stack = LocalStack(options)
    code = 1

    def on_term(signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    previous_int = signal.signal(signal.SIGINT, on_term)
    try:
        stack.start()
        target = resolve(stage="local", api_url=stack.endpoints.api, endpoint_url=stack.endpoints.aws)
        batch_id = new_batch_id()
        submitted = time.monotonic()
        submit_folder(target, inputs, batch_id=batch_id)
        client = OrchestratorClient(target.require_api())
        rc, answer = watch(client, batch_id, interval_s=0.5, timeout_s=600)
        took = time.monotonic() - submitted
        if rc not in (0, 2):  # 2: DONE with failed tasks (the broken TIFF, checked below)
            log(f"batch {batch_id} did not finish: {answer}")
            return 1
        log(f"batch {batch_id}: {len(tiffs)} TIFFs, DONE {took:.1f} s after submit")

        failed = client.tasks(batch_id, status="failed")
        for t in failed:
            log(f"failed task {t['task_id']}: {t.get('input_r2_key')}: {t.get('last_error')}")
        failed_paths = {t["input_r2_key"].split(f"staging/{batch_id}/", 1)[-1] for t in failed}

        body = wait_for_delivery(stack.endpoints.ingest, batch_id)
        if body is None:
            log("the ingest receiver got no enqueue-processed")
            return 1
        files = body["files"]
        log(f"ingest receiver got enqueue-processed with {len(files)} files:")
        for f in files:
            src = f"  (from {f['source_file']})" if f.get("source_file") else ""
            print(f"    {f['content_type']:<26} {f['file_size']:>9}  {f['logical_path']}{src}", flush=True)

        paths = fetch_jpegs(target.r2(), target.bucket, batch_id, jpegs)
        log(f"{len(paths)} JPEGs fetched to {jpegs} (in R2: s3://{target.bucket}/staging/{batch_id}/)")
        log(f"logs of every component in {logs}")

        converted = sum(1 for f in files if "TiffConverter" in (f.get("preprocessor_tags") or []))
        ok = (
            failed_paths == expected_failures
            and len(files) == len(samples)
            and converted == len(tiffs) - len(expected_failures)
            and len(paths) == converted
        )
        if ok:
            log("demo OK: every good TIFF converted, the broken one failed as expected")
            code = 0
        else:
            log(
                f"demo FAILED: failed={sorted(failed_paths)} expected={sorted(expected_failures)}, "
                f"files={len(files)}/{len(samples)}, converted={converted}, jpegs={len(paths)}"
            )
    except StackError as exc:
        log(f"stack error: {exc}")
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    finally:
        stack.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    return code
