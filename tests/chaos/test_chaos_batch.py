"""Chaos: one batch of a few hundred TIFF entries through the whole local stack while the
Fly emulator refuses, times out, crashes, duplicates and delays, the event pump is killed
mid-pass and restarted, the queue message arrives twice and a poison message sits on the
queue. Asserts end states only (the tables, the bucket, the receiver, the queues).

Size and dice: CHAOS_TASKS (default 240 TIFF entries), CHAOS_SEED (default 20261129),
CHAOS_TIMEOUT_S (default: scaled with the size). The figures of a run are printed on one
line and written as JSON under the test's tmp dir (its path is printed too).
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from PIL import Image

from arke_local.client import ApiError
from arke_local.endpoints import DLQ_NAME
from arke_local.submission import LocalFile, build_message, new_batch_id

from .conftest import FLY_REQUEST_TIMEOUT_MS, TASK_TIMEOUT_MS

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

TASKS = int(os.environ.get("CHAOS_TASKS", "240"))
SEED = int(os.environ.get("CHAOS_SEED", "20261129"))
DONE_TIMEOUT_S = float(os.environ.get("CHAOS_TIMEOUT_S", str(max(150, TASKS * 0.6))))
PUMP_KILLS = 3
TIFF_RE = re.compile(r"\.tiff?$", re.IGNORECASE)
TASKS_TABLE = "arke-preprocess-tasks"
BATCHES_TABLE = "arke-preprocess-batches"
POISON = "this is not JSON {"

# Shares of creates / callbacks (the emulator rolls the dice in this order); the scripts make
# each kind certain at least once whatever the dice say.
FAULTS = {
    "rate_429": 0.10,
    "rate_5xx": 0.05,
    "create_timeout_rate": 0.05,
    "create_timeout_delay_s": FLY_REQUEST_TIMEOUT_MS / 1000 * 2,  # the client gave up long before
    "crash_before_callback_rate": 0.05,
    "duplicate_callback_rate": 0.05,
    "late_callback_rate": 0.02,
    # Past the task timeout, its detection (timeouts are swept at the start of a pass, and a
    # pass spawning under 429s lasts seconds) and the retry's spawn (error delay).
    "late_callback_delay_s": TASK_TIMEOUT_MS / 1000 * 3,
    "script": [429, 503, "timeout"],
    "callback_script": ["crash", "duplicate", "late"],
}
FAULT_KINDS = ("injected_429", "rate_limited_429", "injected_5xx", "injected_create_timeouts",
               "crashes_before_callback", "duplicate_callbacks", "late_callbacks", "cap_rejections",
               "creates_accepted", "machines_started", "callbacks_received", "callbacks_forwarded")


def _files(count: int) -> list[LocalFile]:
    """`count` TIFF entries over four folders, every spelling of the suffix, and two files
    that are not TIFFs. None of them needs to exist: synthetic machines never read input."""
    suffixes = (".tif", ".TIF", ".tiff", ".TIFF")
    files = [LocalFile(f"box-{i % 4}/scan-{i:05d}{suffixes[i % 4]}", 1000 + i) for i in range(count)]
    files += [LocalFile("box-0/notes.txt", 12), LocalFile("cover.png", 34)]
    return files


def _jpeg_key(key: str) -> str:
    return TIFF_RE.sub(".jpg", key)


def _status(chaos, batch_id: str) -> dict:
    """GET /status/{batch}; {} while the batch does not exist yet (or the API hiccups)."""
    try:
        return chaos.api.status(batch_id)
    except (ApiError, requests.RequestException):
        return {}


def _attr(item: dict, name: str):
    value = item.get(name)
    if value is None or "NULL" in value:
        return None
    if "N" in value:
        return int(float(value["N"]))
    return value.get("S")


def test_chaos_batch_reaches_done_exactly_once(chaos_stack, tmp_path):
    chaos = chaos_stack
    before = chaos.emulator_stats()
    chaos.set_faults(seed=SEED, **FAULTS)
    batch_id = new_batch_id()
    message, manifest = build_message(batch_id, _files(TASKS), manifest="auto")
    if manifest is not None:  # CHAOS_TASKS large enough for the manifest path
        chaos.target.r2().put_object(Bucket=chaos.target.bucket, Key=message["manifest_r2_key"],
                                     Body=json.dumps(manifest).encode())
    body = json.dumps(message)

    started = time.monotonic()
    chaos.send(POISON)
    chaos.send(body)
    final: dict = {}
    kill_times: list[float] = []
    try:
        time.sleep(1.5)
        chaos.send(body)  # the same message again, while the batch is running
        # Three SIGKILLs of the pump while the batch has work, a few seconds apart.
        for wait_s in (2.0, 6.0, 8.0):
            time.sleep(wait_s)
            if _status(chaos, batch_id).get("status") in ("DONE", "ERROR"):
                break
            chaos.kill_pump()
            kill_times.append(round(time.monotonic() - started, 1))
        deadline = started + DONE_TIMEOUT_S
        while time.monotonic() < deadline:
            final = _status(chaos, batch_id)
            if final.get("status") in ("DONE", "ERROR"):
                break
            time.sleep(0.5)
        done_after = time.monotonic() - started
    finally:
        chaos.clear_faults()
        chaos.set_faults(late_callback_rate=0.0)
    after = chaos.emulator_stats()
    injected = {k: after.get(k, 0) - before.get(k, 0) for k in FAULT_KINDS}

    # --- the end state -----------------------------------------------------------------
    assert final.get("status") == "DONE", f"{final}\n{chaos.log_tails()}"
    progress = final["progress"]
    assert chaos.pump_kills == PUMP_KILLS, f"the batch ended before the pump was killed 3 times: {kill_times}"

    tasks = chaos.task_items(TASKS_TABLE, batch_id)
    [batch] = chaos.table_items(BATCHES_TABLE, batch_id)
    by_status = Counter(_attr(t, "status") for t in tasks)
    completed = [t for t in tasks if _attr(t, "status") == "completed"]
    failed = [t for t in tasks if _attr(t, "status") == "failed"]
    attempts = sum(_attr(t, "attempts") or 0 for t in tasks)

    # Counters: complete, and equal to a recount of the task items (no task counted twice).
    assert len(tasks) == TASKS
    assert progress["tasks_total"] == TASKS
    assert progress["tasks_completed"] + progress["tasks_failed"] == TASKS, progress
    assert (progress["tasks_completed"], progress["tasks_failed"]) == (len(completed), len(failed)), (
        progress, dict(by_status))
    stored = chaos.counted(BATCHES_TABLE, batch_id)
    assert (stored["tasks_completed"], stored["tasks_failed"]) == (len(completed), len(failed))
    assert stored["tasks_in_flight"] == 0 and _attr(batch, "tasks_total") == TASKS
    assert set(by_status) <= {"completed", "failed"}, dict(by_status)
    for t in failed:  # a failure keeps its reason and used every attempt
        assert _attr(t, "last_error"), t
        assert _attr(t, "attempts") >= 5, t

    # One output per completed task: distinct keys, the contract's name, a JPEG in the bucket.
    outputs = [_attr(t, "output_r2_key") for t in completed]
    assert len(set(outputs)) == len(completed)
    for t in completed:
        assert _attr(t, "output_r2_key") == _jpeg_key(_attr(t, "input_r2_key")), t
    r2 = chaos.target.r2()
    for key in outputs:
        obj = r2.get_object(Bucket=chaos.target.bucket, Key=key)
        assert obj["ContentType"] == "image/jpeg", key
        with Image.open(io.BytesIO(obj["Body"].read())) as im:
            im.load()
            assert im.format == "JPEG", key

    # Exactly one final delivery, listing every file, the completed TIFFs as their JPEGs.
    deadline = time.monotonic() + 30
    while chaos.received(batch_id)["count"] == 0 and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(2.0)  # a second delivery would show up by now
    received = chaos.received(batch_id)
    assert received["count"] == 1, received
    delivered = received["deliveries"][0]["body"]["files"]
    assert len(delivered) == TASKS + 2
    converted = {f["r2_key"] for f in delivered if f.get("preprocessor_tags") == ["TiffConverter"]}
    assert converted == set(outputs)

    # The poison message was dead-lettered; the batch's own message never was.
    dead = chaos.dead_letters()
    bodies = [m["Body"] for m in dead]
    assert POISON in bodies, bodies
    assert body not in bodies

    # Machines that crashed or called back late: their tasks were retried (a later attempt
    # exists), so the late callbacks came after the timeout and the retry. Not every one must
    # be (a task may be completed first by a machine of an earlier attempt whose create
    # timed out, or a late callback may beat a timeout sweep delayed by a long pass): those
    # are counted in the figures; the counters above prove nothing was counted twice.
    attempts_of = {_attr(t, "task_id"): _attr(t, "attempts") for t in tasks}
    machines = {m["id"]: m for m in chaos.machines()}
    hit: Counter = Counter()
    retried: Counter = Counter()
    for injection in chaos.injections():
        env = machines.get(injection["machine_id"], {}).get("config", {}).get("env", {})
        if env.get("BATCH_ID") != batch_id:
            continue
        hit[injection["kind"]] += 1
        attempt = int(parse_qs(urlsplit(env["CALLBACK_URL"]).query)["attempt"][0])
        retried[injection["kind"]] += attempts_of[env["TASK_ID"]] > attempt
    assert hit["late_callback"] == injected["late_callbacks"], hit
    assert hit["crash_before_callback"] == injected["crashes_before_callback"], hit
    assert retried["late_callback"] >= 1, (hit, retried)
    assert retried["crash_before_callback"] >= 1, (hit, retried)

    # Every kind of fault really happened.
    for kind in ("injected_429", "injected_5xx", "injected_create_timeouts",
                 "crashes_before_callback", "duplicate_callbacks", "late_callbacks"):
        assert injected[kind] >= 1, injected

    figures = {
        "batch_id": batch_id,
        "seed": SEED,
        "tasks": TASKS,
        "files": TASKS + 2,
        "completed": len(completed),
        "failed": len(failed),
        "retries": attempts - TASKS,
        "sum_attempts": attempts,
        "pump_kills": chaos.pump_kills,
        "pump_kills_at_s": kill_times,
        "pump_kills_mid_pass": chaos.pump_kills_mid_pass,
        "done_after_s": round(done_after, 1),
        "deliveries": received["count"],
        "poison_dead_lettered": True,
        "faults": injected,
        "tasks_retried_after": {k: f"{retried[k]}/{hit[k]}" for k in sorted(hit)},
        "knobs": {k: v for k, v in FAULTS.items() if k not in ("script", "callback_script")},
    }
    out = tmp_path / "chaos-figures.json"
    out.write_text(json.dumps(figures, indent=2))
    print(f"\n[chaos] {TASKS} tasks DONE in {done_after:.1f} s: completed {len(completed)}, "
          f"failed {len(failed)}, retries {attempts - TASKS}, pump kills {chaos.pump_kills} "
          f"(at {kill_times} s, {chaos.pump_kills_mid_pass} mid-pass), 429 injected {injected['injected_429']} + bucket "
          f"{injected['rate_limited_429']}, 5xx {injected['injected_5xx']}, create timeouts "
          f"{injected['injected_create_timeouts']}, crashes {injected['crashes_before_callback']}, "
          f"duplicate callbacks {injected['duplicate_callbacks']}, late callbacks "
          f"{injected['late_callbacks']} ({retried['late_callback']} after their task's retry), machines {injected['machines_started']}, "
          f"deliveries {received['count']}, poison in {DLQ_NAME}; seed {SEED}; figures in {out}")
