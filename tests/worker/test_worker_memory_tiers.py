"""Memory tiers (pool mode): an assignment's `max_memory_mb`, the largest machine memory
of the pool, given when it is larger than this machine's. An image whose full-quality
(multi-pass mozjpeg) encoding does not fit here, and needs more than this machine's
memory, ends before it is decoded with a `needs_memory` error callback naming the memory
it needs; the orchestrator retries it on a machine of a tier that fits. Without the field,
or when the pool has nothing larger, the worker encodes within its budget as before.

The real worker (`python -m worker`, a subprocess) against the pool API on loopback
(worker_pool_orchestrator), moto's S3 server for R2 and real TIFFs. The machine is made
small with the variables the worker reads: FLY_VM_MEMORY_MB (its memory: 256 MB, the
smallest Fly machine) and WORKER_MEMORY_BUDGET_MB (the encoder's budget, so the fallback
encoders are seen at test sizes)."""

from __future__ import annotations

import io
import math
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from test_worker_pool import exists, put, run, tiff
from worker_helpers import BUCKET, REPO

from worker.encode import MIB, fits_multipass, full_quality_memory
from worker.settings import PoolSettings

SMALL = {"FLY_VM_MEMORY_MB": "256", "WORKER_MEMORY_BUDGET_MB": "50"}
SIDE = 3600  # full quality needs 284 MB (RGB) or 259 MB (grey): more than 256, and far over 50


def grey_tiff(side: int) -> bytes:
    buf = io.BytesIO()
    image = np.random.default_rng(side).integers(0, 256, (side, side), np.uint8)
    tifffile.imwrite(buf, image, photometric="minisblack", compression="zlib", rowsperstrip=256)
    return buf.getvalue()


def needed_mb(mode: str) -> int:
    return math.ceil(full_quality_memory(SIDE, SIDE, mode) / MIB)


def test_the_test_image_does_not_fit_the_small_machine(monkeypatch):
    """The premise of the tests below, in the worker's own numbers."""
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    assert not fits_multipass(SIDE, SIDE, "RGB") and not fits_multipass(SIDE, SIDE, "L")
    assert (needed_mb("RGB"), needed_mb("L")) == (284, 259)
    assert fits_multipass(96, 64, "RGB")  # the quadrant image fits even this budget


@pytest.mark.parametrize(("mode", "data"), [("RGB", tiff(SIDE)), ("L", grey_tiff(SIDE))])
def test_full_quality_beyond_this_machine_is_bounced_with_needs_memory(s3, orch, pool_env, mode, data):
    out_key = f"staging/batch_p/tier-{mode}.jpg"
    orch.script = [
        orch.task("t_big", put(s3, f"staging/batch_p/tier-{mode}.tif", data), out_key, max_memory_mb=1024),
        orch.task("t_next", put(s3, "staging/batch_p/tier-next.tif", tiff()), "staging/batch_p/tier-next.jpg",
                  max_memory_mb=1024),
    ]  # fmt: skip
    code, out = run(pool_env(**SMALL))
    assert code == 0, out
    [callback] = orch.of("callback", "t_big")
    memory_mb = needed_mb(mode)
    assert callback["body"] == {
        "task_id": "t_big", "batch_id": "batch_p", "status": "error",
        "error": f"needs {memory_mb} MB for full-quality encoding ({SIDE} x {SIDE} {mode}); "
                 "this machine has 256 MB, the pool up to 1024 MB",
        "error_code": "needs_memory", "memory_mb": memory_mb,
    }  # fmt: skip
    assert not exists(s3, out_key)  # nothing uploaded
    big_lines = [line for line in out.splitlines() if "task=t_big " in line]
    assert big_lines and not any("converted" in line for line in big_lines), out  # nor decoded
    # the slot went on pulling, as after any failed task
    assert orch.of("callback", "t_next")[0]["body"]["status"] == "success"
    assert len(orch.of("pull")) == 3
    assert "pool done: error 1, success 1; exit 0" in out


def test_without_max_memory_mb_the_same_image_converts_within_the_budget(s3, orch, pool_env):
    out_key = "staging/batch_p/untiered.jpg"
    orch.script = [orch.task("t_plain", put(s3, "staging/batch_p/untiered.tif", tiff(SIDE)), out_key)]
    code, out = run(pool_env(**SMALL))
    assert code == 0, out
    body = orch.of("callback", "t_plain")[0]["body"]
    assert body["status"] == "success" and "memory_mb" not in body
    assert body["output_file_size"] == s3.head_object(Bucket=BUCKET, Key=out_key)["ContentLength"]
    assert "encoder mozjpeg (libvips, streaming" in out and "memory budget 50 MB" in out  # the fallback


def test_max_memory_mb_equal_to_this_machine_converts(s3, orch, pool_env):
    out_key = "staging/batch_p/equal.jpg"
    orch.script = [orch.task("t_equal", put(s3, "staging/batch_p/equal.tif", tiff(SIDE)), out_key,
                             max_memory_mb=256)]  # fmt: skip
    code, out = run(pool_env(**SMALL))
    assert code == 0, out
    assert orch.of("callback", "t_equal")[0]["body"]["status"] == "success"
    assert exists(s3, out_key)
    assert "encoder mozjpeg (libvips, streaming" in out


def test_an_image_that_fits_converts_at_full_quality_with_max_memory_mb(s3, orch, pool_env):
    out_key = "staging/batch_p/fits.jpg"
    orch.script = [orch.task("t_fits", put(s3, "staging/batch_p/fits.tif", tiff()), out_key,
                             max_memory_mb=1024)]  # fmt: skip
    code, out = run(pool_env(**SMALL))
    assert code == 0, out
    assert orch.of("callback", "t_fits")[0]["body"]["status"] == "success"
    assert exists(s3, out_key)
    assert "encoder mozjpeg (libvips), memory budget 50 MB" in out  # the multi-pass path


def test_a_machine_with_the_memory_needed_is_not_bounced_for_a_short_budget(s3, orch, pool_env):
    """Full quality needs 214 MB, the machine has 1024: a larger tier would not change the
    budget's shortfall (here WORKER_MEMORY_BUDGET_MB; in production a slot's share), so
    the task is converted here."""
    out_key = "staging/batch_p/roomy.jpg"
    orch.script = [orch.task("t_roomy", put(s3, "staging/batch_p/roomy.tif", tiff(SIDE)), out_key,
                             max_memory_mb=4096)]  # fmt: skip
    code, out = run(pool_env(FLY_VM_MEMORY_MB="1024", WORKER_MEMORY_BUDGET_MB="50"))
    assert code == 0, out
    assert orch.of("callback", "t_roomy")[0]["body"]["status"] == "success"
    assert exists(s3, out_key)


def test_contract_mode_never_bounces(s3, worker_env, receiver):
    """One task per machine from the environment: no `max_memory_mb`, no tiers."""
    key = "staging/batch_t/single-big.tif"
    put(s3, key, tiff(SIDE))
    env = worker_env(key, **SMALL)
    result = subprocess.run([sys.executable, "-m", "worker"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    [request] = receiver.requests
    assert request["body"]["status"] == "success"
    assert exists(s3, "staging/batch_t/single-big.jpg")
    assert "encoder mozjpeg (libvips, streaming" in result.stdout


@pytest.mark.parametrize(
    ("value", "parsed"),
    [(4096, 4096), (4096.0, 4096), (None, None), (0, None), (-1, None), (True, None),
     ("4096", None), (4096.5, None), (float("nan"), None), (float("inf"), None)],
)  # fmt: skip
def test_max_memory_mb_of_an_assignment(value, parsed):
    pool = PoolSettings(batch_id="b", machine_name="m", machine_token="x", orchestrator_url="http://o")
    task = {"task_id": "t", "callback_url": "http://o/cb"}
    if value is not None:
        task["max_memory_mb"] = value
    assert pool.task_settings(task).max_memory_mb == parsed


def gradient_tiff(side: int) -> bytes:
    buf = io.BytesIO()
    ramp = np.linspace(0, 255, side, dtype=np.uint8)
    image = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], ramp[None, ::-1]), axis=-1)
    tifffile.imwrite(buf, image, photometric="rgb", compression="zlib", rowsperstrip=64)
    return buf.getvalue()


def test_the_smallest_machine_bounces_what_only_its_budget_floor_would_admit(s3, orch, pool_env, monkeypatch):
    """A 256 MB machine's budget is the 256 MB floor (MIN_BUDGET), which admits full quality
    for a 3000 x 3000 scan that needs 261 MB of machine memory by the formula single mode
    sizes with: it is bounced by its header, not decoded into the OOM killer."""
    monkeypatch.setenv("FLY_VM_MEMORY_MB", "256")
    monkeypatch.delenv("WORKER_MEMORY_BUDGET_MB", raising=False)
    assert fits_multipass(3000, 3000, "RGB")  # the floor's premise
    need = math.ceil(full_quality_memory(3000, 3000, "RGB") / MIB)
    assert need > 256
    orch.script = [orch.task("t_floor", put(s3, "staging/batch_p/floor.tif", gradient_tiff(3000)),
                             "staging/batch_p/floor.jpg", max_memory_mb=512)]  # fmt: skip
    code, out = run(pool_env(FLY_VM_MEMORY_MB="256"))
    assert code == 0, out
    body = orch.of("callback", "t_floor")[0]["body"]
    assert (body["error_code"], body["memory_mb"]) == ("needs_memory", need)
    assert not exists(s3, "staging/batch_p/floor.jpg")
