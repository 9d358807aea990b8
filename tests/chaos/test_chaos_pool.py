"""Chaos in pool mode (issue 10): the chaos batch of test_chaos_batch, run once by a pool
whose machines crash mid-task, hang without heartbeats, boot slowly, drop or duplicate
their results, while Fly refuses and times out creations and the pump is killed mid-pass.
The same end-state assertions, plus the pool's own: every machine record gone, the shared
in-flight counter back at zero, far fewer machines than tasks.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter

import pytest
from PIL import Image

from .test_chaos_batch import (
    BATCHES_TABLE,
    POISON,
    SEED,
    TASKS,
    TASKS_TABLE,
    _attr,
    _files,
    _jpeg_key,
    _status,
)

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

DONE_TIMEOUT_S = max(150.0, TASKS * 0.6)
FAULTS = {
    "rate_429": 0.10,
    "rate_5xx": 0.05,
    "create_timeout_rate": 0.05,
    "create_timeout_delay_s": 3.0,
    "boot_delay_s": 1.0,  # slow boot
    "crash_mid_task_rate": 0.02,
    "hang_rate": 0.02,
    "task_fault_after_s": 0.05,
    "crash_before_callback_rate": 0.03,
    "duplicate_callback_rate": 0.05,
    "script": [429, 503, "timeout"],
    "task_script": ["crash", "hang"],
    "callback_script": ["duplicate", "crash"],
}
KINDS = ("injected_429", "injected_5xx", "injected_create_timeouts", "crashes_mid_task", "hangs",
         "crashes_before_callback", "duplicate_callbacks", "machines_started", "pool_pulls", "pool_tasks")


def test_chaos_batch_in_pool_mode_reaches_done_exactly_once(chaos_pool_stack):
    from arke_local.submission import build_message, new_batch_id

    chaos = chaos_pool_stack
    before = chaos.emulator_stats()
    chaos.set_faults(seed=SEED, **FAULTS)
    batch_id = new_batch_id()
    message, manifest = build_message(batch_id, _files(TASKS), manifest="auto")
    if manifest is not None:
        chaos.target.r2().put_object(Bucket=chaos.target.bucket, Key=message["manifest_r2_key"],
                                     Body=json.dumps(manifest).encode())
    body = json.dumps(message)
    started = time.monotonic()
    chaos.send(POISON)
    chaos.send(body)
    final: dict = {}
    try:
        time.sleep(1.5)
        chaos.send(body)
        for wait_s in (2.0, 4.0):
            time.sleep(wait_s)
            if _status(chaos, batch_id).get("status") in ("DONE", "ERROR"):
                break
            chaos.kill_pump()
        while time.monotonic() < started + DONE_TIMEOUT_S:
            final = _status(chaos, batch_id)
            if final.get("status") in ("DONE", "ERROR"):
                break
            time.sleep(0.5)
        done_after = time.monotonic() - started
    finally:
        chaos.clear_faults()
    after = chaos.emulator_stats()
    injected = {k: after.get(k, 0) - before.get(k, 0) for k in KINDS}

    assert final.get("status") == "DONE", f"{final}\n{chaos.log_tails()}"
    tasks = chaos.task_items(TASKS_TABLE, batch_id)
    [batch] = chaos.table_items(BATCHES_TABLE, batch_id)
    by_status = Counter(_attr(t, "status") for t in tasks)
    completed = [t for t in tasks if _attr(t, "status") == "completed"]
    failed = [t for t in tasks if _attr(t, "status") == "failed"]
    progress = final["progress"]
    assert len(tasks) == TASKS and set(by_status) <= {"completed", "failed"}, dict(by_status)
    assert (progress["tasks_completed"], progress["tasks_failed"]) == (len(completed), len(failed))
    stored = chaos.counted(BATCHES_TABLE, batch_id)
    assert (stored["tasks_completed"], stored["tasks_failed"]) == (len(completed), len(failed))
    assert stored["tasks_in_flight"] == 0
    assert progress["tasks_in_flight"] == 0

    outputs = [_attr(t, "output_r2_key") for t in completed]
    assert len(set(outputs)) == len(completed)
    r2 = chaos.target.r2()
    for t in completed:
        assert _attr(t, "output_r2_key") == _jpeg_key(_attr(t, "input_r2_key")), t
        with Image.open(io.BytesIO(r2.get_object(Bucket=chaos.target.bucket,
                                                 Key=_attr(t, "output_r2_key"))["Body"].read())) as im:
            assert im.format == "JPEG"

    deadline = time.monotonic() + 30
    while chaos.received(batch_id)["count"] == 0 and time.monotonic() < deadline:
        time.sleep(0.25)
    time.sleep(2.0)
    received = chaos.received(batch_id)
    assert received["count"] == 1, received
    assert POISON in [m["Body"] for m in chaos.dead_letters()]

    # The pool's own end state: every machine retired exactly once, nothing counted in flight.
    ddb = chaos.target.aws("dynamodb")

    def of_batch(prefix: str) -> list[dict]:
        items = ddb.scan(TableName=BATCHES_TABLE, ConsistentRead=True,
                         FilterExpression="#b = :b", ExpressionAttributeNames={"#b": "batch"},
                         ExpressionAttributeValues={":b": {"S": batch_id}})["Items"]
        return [r for r in items if _attr(r, "batch_id").startswith(prefix)]

    records = of_batch("#machine#")
    assert records and {_attr(r, "state") for r in records} == {"gone"}, Counter(_attr(r, "state") for r in records)
    # standing machines are stopped at the end; one whose stop Fly refused (a 412 under the
    # chaos) is stopped by the batch's sweep, SWEEP_DELAY_MS (10 s) later
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline and {_attr(r, "state") for r in of_batch("#standing#")} & {"starting", "started"}:
        time.sleep(1.0)
    standing = Counter(_attr(r, "state") for r in of_batch("#standing#"))
    left = [r for r in of_batch("#standing#") if _attr(r, "state") in ("starting", "started")]
    assert not left, f"{standing}\n{left}\n{_lines_naming(chaos, [_attr(r, 'name') for r in left])}"
    # a standing machine may be started more than once in a batch: each stint counts as created
    stints = sum(_attr(r, "stints") or 1 for r in records)
    assert _attr(batch, "machines_live") == 0 and _attr(batch, "machines_created") == stints
    counter = ddb.get_item(TableName=BATCHES_TABLE, Key={"batch_id": {"S": "#in-flight"}},
                           ConsistentRead=True).get("Item", {})
    assert _attr(counter, "machines") in (0, None), counter
    assert len(records) < TASKS / 4  # machines took many tasks each
    retried = sum(1 for t in tasks if (_attr(t, "attempts") or 0) > 1)
    assert retried >= injected["crashes_mid_task"] > 0 and injected["hangs"] > 0, (retried, injected)
    assert injected["duplicate_callbacks"] >= 1 and injected["crashes_before_callback"] >= 1, injected
    print(f"\n[chaos-pool] {TASKS} tasks DONE in {done_after:.1f} s with {len(records)} machines: "
          f"completed {len(completed)}, failed {len(failed)}, tasks retried {retried}, faults {injected}; "
          f"seed {SEED}")


def _lines_naming(chaos, names: list[str]) -> str:
    """Every log line of the stack that names one of `names` (why a machine was left)."""
    out = []
    for path in sorted(chaos.log_dir.glob("*.log")):
        out += [f"{path.name}: {line}" for line in path.read_text(errors="replace").splitlines()
                if any(name and name in line for name in names)]
    return "\n".join(out[-200:])
