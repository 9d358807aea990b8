"""End to end: the pool's memory tiers (docs/pool.md "Memory tiers") on the whole local
stack, the real worker on emulated machines. A pool of one shared CPU at 256 MB has the
tiers 256, 512, 1024 and 2048 MB. A batch of one TIFF whose full-quality encoding needs
more than 256 MB and one small TIFF ends DONE with both converted: the large one's first
attempt, on a 256 MB machine, reads the header and ends `needs_memory` (nothing decoded),
and its retry completes on a machine of the smallest tier that fits (`-pool-m512-`, guest
memory 512 MB); no single-mode machine is created, and no machine is OOM-killed. The next
batch of the same files starts the machines the first left stopped (the standing pool),
the 512 MB one included, and creates none.

The image is sized by the worker's own formulas (worker.encode.full_quality_memory, the
one single mode sizes machines with): 3000 x 3000 RGB needs 261 MB of machine memory, so
the 512 MB tier. (The budget's 256 MB floor would admit its multi-pass encoding on the
256 MB machine, where a slightly larger scan is killed for memory: the header check
compares the need with the machine's memory, not with that budget.)"""

from __future__ import annotations

import io
import time

import pytest
import requests
from PIL import Image

from arke_local.endpoints import LOCAL_SECRETS
from arke_local.progress import watch
from arke_local.submission import new_batch_id, submit_folder

from .conftest import E2E_ENV, E2EStack, run_local_stack

pytestmark = pytest.mark.e2e

TIERS_ENV = dict(E2E_ENV, POOL_CPU_KIND="shared", POOL_CPUS="1", POOL_MEMORY_MB="256")
BASE_MB = 256
LARGE = (3000, 3000)  # RGB: full quality needs 261 MB of machine memory
SMALL = (320, 240)
DONE_TIMEOUT_S = 90
APP = "arke-tiff-worker"


@pytest.fixture(scope="module")
def tiers_stack(tmp_path_factory):
    yield from run_local_stack(tmp_path_factory, "tiers", TIERS_ENV, E2EStack)


def _write_tiffs(folder) -> None:
    """A smooth RGB image (deflate: ~2 MB on disk, 110 MB decoded) and a small one."""
    grad = Image.linear_gradient("L").resize(LARGE, Image.Resampling.BILINEAR)
    radial = Image.radial_gradient("L").resize(LARGE, Image.Resampling.BILINEAR)
    large = Image.merge("RGB", (grad, radial, grad.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    large.save(folder / "large.tif", compression="tiff_adobe_deflate")
    small = Image.merge("RGB", [Image.linear_gradient("L").resize(SMALL)] * 3)
    small.save(folder / "small.tif")


def _expected_tier_mb(monkeypatch) -> tuple[int, int]:
    """(what the large image needs, the smallest tier of at least that), by the worker's and
    the orchestrator's own code; and check the 256 MB machine's budget floor would admit it
    (so the header check, not the budget, is what sends it up)."""
    from chalicelib.settings import Settings
    from worker.encode import MIB, fits_multipass, full_quality_memory

    monkeypatch.setenv("FLY_VM_MEMORY_MB", str(BASE_MB))
    monkeypatch.delenv("WORKER_MEMORY_BUDGET_MB", raising=False)
    assert fits_multipass(*LARGE, "RGB"), "the 256 MB floor of the budget admits it"
    need_mb = -(-full_quality_memory(*LARGE, "RGB") // MIB)
    tiers = Settings.from_env(TIERS_ENV).pool_tiers
    assert tiers == (256, 512, 1024, 2048)
    assert need_mb > BASE_MB
    return need_mb, min(m for m in tiers if m >= need_mb)


def _fly_machines(e2e) -> list[dict]:
    resp = requests.get(f"{e2e.fly_url}/v1/apps/{APP}/machines", params={"include_deleted": "true"},
                        headers={"Authorization": f"Bearer {LOCAL_SECRETS['FLY_API_TOKEN']}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _run_tiers_batch(e2e, folder, need_mb: int, tier_mb: int) -> tuple[str, list[dict], dict[str, int], float]:
    """Submit the two TIFFs, wait for DONE and check the end state; returns the batch id, the
    large TIFF's attempts, the emulator's machines (name -> guest memory) and the time."""
    batch_id = new_batch_id()
    started = time.monotonic()
    submit_folder(e2e.target, folder, batch_id=batch_id)
    out = io.StringIO()
    code, answer = watch(e2e.api, batch_id, interval_s=0.5, timeout_s=DONE_TIMEOUT_S, out=out, tty=False)
    took = time.monotonic() - started
    assert code == 0, f"batch did not reach DONE cleanly: {answer}\n{out.getvalue()}\n{e2e.log_tails()}"

    status = e2e.api.status(batch_id)
    p = status["progress"]
    assert status["status"] == "DONE"
    assert (p["tasks_total"], p["tasks_completed"], p["tasks_failed"]) == (2, 2, 0)

    # Both converted, each a decodable JPEG of its TIFF's size.
    r2 = e2e.target.r2()
    for name, size in (("large", LARGE), ("small", SMALL)):
        obj = r2.get_object(Bucket=e2e.target.bucket, Key=f"staging/{batch_id}/{name}.jpg")
        assert obj["ContentType"] == "image/jpeg"
        with Image.open(io.BytesIO(obj["Body"].read())) as im:
            im.load()
            assert (im.format, im.size) == ("JPEG", size)

    tasks = {t["input_file_name"]: t for t in e2e.api.tasks(batch_id)}
    assert set(tasks) == {"large.tif", "small.tif"} and all(t["status"] == "completed" for t in tasks.values())

    # The large TIFF: refused from its header on a 256 MB machine, converted on a 512 MB one.
    history = tasks["large.tif"]["history"]
    first, last = history[0], history[-1]
    assert first["outcome"] == "retry", history
    assert "-pool-m" not in first["machine_name"] and first["memory_mb"] == BASE_MB, history
    assert f"needs {need_mb} MB for full-quality encoding" in first["error"], history
    assert f"this machine has {BASE_MB} MB" in first["error"], history
    assert last["outcome"] == "complete", history
    assert f"-pool-m{tier_mb}-" in last["machine_name"] and last["memory_mb"] == tier_mb, history
    assert tasks["large.tif"]["machine_name"] == last["machine_name"]
    # Every attempt but the last was refused for memory on a smaller machine, never an OOM.
    assert all(a["outcome"] == "retry" and "needs" in a["error"] for a in history[:-1]), history
    # The small one converted on the smallest machines, first time.
    small_history = tasks["small.tif"]["history"]
    assert [a["outcome"] for a in small_history] == ["complete"], small_history
    assert "-pool-m" not in small_history[0]["machine_name"] and small_history[0]["memory_mb"] == BASE_MB

    # What the Fly emulator was asked for: pool machines only, each tier's guest memory as its
    # name says; of the 512 MB tier and the 256 MB one only; nothing OOM-killed.
    memories = {}
    for m in _fly_machines(e2e):
        name, guest = m["name"], m["config"]["guest"]
        assert name.startswith("tiff-pool-"), f"not a pool machine: {name}"  # single mode: tiff-{task}
        assert m["config"]["env"].get("WORKER_MODE") == "pool", name
        assert guest["cpu_kind"] == "shared" and guest["cpus"] == 1, (name, guest)
        expected = tier_mb if name.startswith(f"tiff-pool-m{tier_mb}-") else BASE_MB
        assert "-pool-m" not in name or expected == tier_mb, name
        assert guest["memory_mb"] == expected, (name, guest)
        exits = [e["request"]["exit_event"] for e in m["events"] if e.get("type") == "exit"]
        assert not any(x.get("oom_killed") for x in exits), (name, exits)
        memories[name] = guest["memory_mb"]
    assert {first["machine_name"], last["machine_name"]} <= set(memories)
    assert sorted(set(memories.values())) == [BASE_MB, tier_mb], memories
    return batch_id, history, memories, took


def _describe(history: list[dict]) -> str:
    return ", ".join(f"{a['machine_name']} ({a['memory_mb']} MB) {a['outcome']}" for a in history)


@pytest.fixture
def tiers_batch(tmp_path, monkeypatch):
    """The batch folder, what the large TIFF needs and the tier expected to take it."""
    need_mb, tier_mb = _expected_tier_mb(monkeypatch)
    assert (need_mb, tier_mb) == (261, 512)
    folder = tmp_path / "batch"
    folder.mkdir()
    _write_tiffs(folder)
    return folder, need_mb, tier_mb


def test_e2e_large_tiff_moves_up_to_the_tier_that_fits(tiers_stack, tiers_batch, record_property):
    e2e = tiers_stack
    before = e2e.emulator_stats()
    batch_id, history, memories, took = _run_tiers_batch(e2e, *tiers_batch)
    after = e2e.emulator_stats()
    assert after["oom_kills"] - before["oom_kills"] == 0
    assert after["creates_accepted"] - before["creates_accepted"] == len(memories)  # a fresh stack
    record_property("done_after_s", round(took, 1))
    print(f"\n[e2e] tiers batch {batch_id}: DONE {took:.1f} s after submit; large.tif: {_describe(history)}; "
          f"machines: {memories}")


def test_e2e_next_batch_starts_the_stopped_larger_tier_machine(tiers_stack, tiers_batch, record_property):
    """The standing pool: the machines the last batch left stopped, the 512 MB one included,
    are started for the next batch (no creation), and the larger tier's serves its band."""
    e2e = tiers_stack
    folder, need_mb, tier_mb = tiers_batch
    stopped = {m["name"] for m in _fly_machines(e2e) if m["state"] == "stopped"}
    if not any(f"-pool-m{tier_mb}-" in name for name in stopped):  # run alone: no earlier batch
        _run_tiers_batch(e2e, *tiers_batch)
        stopped = {m["name"] for m in _fly_machines(e2e) if m["state"] == "stopped"}
    before = e2e.emulator_stats()
    batch_id, history, memories, took = _run_tiers_batch(e2e, *tiers_batch)
    after = e2e.emulator_stats()
    delta = {k: after[k] - before[k] for k in ("creates_accepted", "starts_accepted", "oom_kills")}
    assert delta["creates_accepted"] == 0 and delta["oom_kills"] == 0, delta
    assert delta["starts_accepted"] >= 2, delta  # a 256 MB machine and the 512 MB one
    assert history[-1]["machine_name"] in stopped and history[0]["machine_name"] in stopped, (history, stopped)
    record_property("done_after_s", round(took, 1))
    print(f"\n[e2e] tiers batch {batch_id} (standing): DONE {took:.1f} s after submit; large.tif: "
          f"{_describe(history)}; emulator: {delta}")
