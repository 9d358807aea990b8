"""Pool machines in the Fly emulator (issue 10; the protocol of docs/pool.md): machines created
over the emulator's HTTP API with WORKER_MODE=pool work for an in-test HTTP server playing
the orchestrator's pool API (fly_pool_orchestrator.py). Synthetic machines (the emulator
plays the worker) and processes (through the orchestrator proxy) both: tasks back to back,
the duration distribution, heartbeats, drop, wait/401/5xx, and every fault knob."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from arke_local.fly_emulator import SYNTHETIC, FaultSettings
from arke_local.fly_emulator.durations import TaskDuration

sys.path.insert(0, str(Path(__file__).parent))  # for fly_pool_orchestrator
from fly_pool_orchestrator import BATCH, BUCKET, PoolOrchestrator  # noqa: E402

IMAGE = "registry.fly.io/arke-tiff-worker:latest"
SCRIPT_IMAGE = "test/pool-script:1"
SCRIPT = str(Path(__file__).parent / "fly_pool_machine_script.py")
REPO = Path(__file__).resolve().parents[2]
CALLBACK_KEYS = {"task_id", "batch_id", "status", "output_r2_key", "output_file_name",
                 "output_file_size", "performance"}


def pool_body(name: str, env: dict, image: str = IMAGE, auto_destroy: bool = True) -> dict:
    return {"name": name, "config": {
        "image": image, "auto_destroy": auto_destroy, "restart": {"policy": "no"}, "env": env,
        "guest": {"memory_mb": 2048, "cpus": 1, "cpu_kind": "performance"}}}


def exit_event(machine: dict) -> dict:
    return next(e for e in machine["events"] if e["type"] == "exit")["request"]["exit_event"]


@pytest.fixture
def orch():
    server = PoolOrchestrator()
    yield server
    server.close()


@pytest.fixture
def synthetic_fly(fly_emulator_factory, fly_emulator_client):
    """`synthetic_fly(**EmulatorSettings changes)`: a client of an emulator whose worker
    image is synthetic, with the test-process image mapped too."""
    def make(**changes: object):
        images = {IMAGE: SYNTHETIC, SCRIPT_IMAGE: [sys.executable, SCRIPT]}
        return fly_emulator_client(fly_emulator_factory(images=images, **changes))

    return make


def create(fly, name: str, env: dict, **kw: object) -> str:
    answer = fly.create(pool_body(name, env, **kw))
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


# ---- the loop --------------------------------------------------------------------------


def test_a_pool_machine_does_tasks_in_a_row_then_exits_and_is_destroyed(orch, synthetic_fly):
    ids = [orch.add_task(n) for n in (1, 2, 3)]
    fly = synthetic_fly(synthetic_task_s="0.05")
    machine_id = create(fly, "tiff-pool-1", orch.env("tiff-pool-1"))

    machine = fly.machine_until(machine_id, "destroyed")
    assert machine["state"] == "destroyed"
    assert exit_event(machine)["exit_code"] == 0
    callbacks, puts, pulls = orch.of("callback"), orch.of("put"), orch.of("pull")
    assert [c.json()["task_id"] for c in callbacks] == ids
    assert len(pulls) == 4  # three tasks, then "exit"
    token = orch.env("tiff-pool-1")["MACHINE_TOKEN"]
    assert all(p.headers["Authorization"] == f"Bearer {token}" for p in pulls)
    for n, (task_id, callback, put) in enumerate(zip(ids, callbacks, puts, strict=True), start=1):
        assert callback.path == f"/callback/{BATCH}/{task_id}"
        assert callback.query == {"attempt": ["1"], "machine": ["tiff-pool-1"]}
        assert callback.headers["Authorization"] == f"Bearer cb-{task_id}-1"
        body = callback.json()
        assert set(body) == CALLBACK_KEYS
        assert (body["batch_id"], body["status"]) == (BATCH, "success")
        assert body["output_r2_key"] == f"staging/{BATCH}/dir/scan {n}.jpg"
        assert body["output_file_name"] == f"scan {n}.jpg"
        assert body["output_file_size"] == len(put.body)
        assert put.path == f"/r2/out/{task_id}" and put.headers["Content-Type"] == "image/jpeg"
        with Image.open(io.BytesIO(put.body)) as im:
            assert im.format == "JPEG"
    for callback, next_pull in zip(callbacks, pulls[1:], strict=True):
        assert next_pull.at >= callback.at  # one slot: the next pull after the callback
    stats = fly.stats()
    assert (stats["pool_tasks"], stats["synthetic_outputs"], stats["machines_started"]) == (3, 3, 1)


def test_task_durations_follow_the_distribution_with_concurrent_slots(orch, synthetic_fly):
    ids = [orch.add_task(n) for n in range(1, 7)]
    fly = synthetic_fly(synthetic_task_s="uniform:0.15:0.35", synthetic_seed=4)
    machine_id = create(fly, "tiff-pool-2", orch.env("tiff-pool-2", WORKER_CONCURRENCY="3"))
    assert fly.machine_until(machine_id, "destroyed")["state"] == "destroyed"

    callbacks = {c.json()["task_id"]: c for c in orch.of("callback")}
    assert sorted(callbacks) == sorted(ids)
    totals = [callbacks[t].json()["performance"]["total_time_ms"] for t in ids]
    assert all(150 <= ms <= 350 for ms in totals), totals
    assert len(set(totals)) > 1  # drawn, not constant
    spans = [(orch.assigned[t], callbacks[t].at) for t in ids]
    for (got, called), ms in zip(spans, totals, strict=True):
        assert called - got >= ms / 1000  # it did "work" that long
    busiest = max(sum(1 for g, c in spans if g <= at < c) for at, _ in spans)
    assert busiest == 3  # WORKER_CONCURRENCY slots at once


def test_heartbeats_arrive_while_a_long_task_runs(synthetic_fly):
    orch = PoolOrchestrator(heartbeat_interval_ms=150)
    try:
        task_id = orch.add_task(1)
        fly = synthetic_fly(synthetic_task_s="0.9")
        create(fly, "tiff-pool-3", orch.env("tiff-pool-3"))
        [callback] = orch.wait_for("callback", 1)
        beats = orch.of("heartbeat")
        assert len(beats) >= 4  # 0.9 s of work, a beat every 0.15 s
        assert all(b.at < callback.at for b in beats)
        assert all(b.json() == {"task_id": task_id, "attempt": 1} for b in beats)
        token = orch.env("tiff-pool-3")["MACHINE_TOKEN"]
        assert all(b.headers["Authorization"] == f"Bearer {token}" for b in beats)
        gaps = [b.at - a.at for a, b in zip(beats, beats[1:], strict=False)]
        assert min(gaps) >= 0.1
    finally:
        orch.close()


def test_drop_ends_the_task_without_a_callback_and_the_machine_pulls_again(synthetic_fly):
    orch = PoolOrchestrator(heartbeat_interval_ms=100)
    try:
        dropped, kept = orch.add_task(1), orch.add_task(2)
        orch.drop.add(dropped)
        fly = synthetic_fly(synthetic_task_s="0.4")
        machine_id = create(fly, "tiff-pool-4", orch.env("tiff-pool-4"))
        assert fly.machine_until(machine_id, "destroyed")["state"] == "destroyed"
        assert [c.json()["task_id"] for c in orch.of("callback")] == [kept]
        assert [p.path for p in orch.of("put")] == [f"/r2/out/{kept}"]
        assert [b.json()["task_id"] for b in orch.of("heartbeat")].count(dropped) == 1
        assert fly.stats()["pool_drops"] == 1
    finally:
        orch.close()


@pytest.mark.parametrize("retry_after_ms", [400, 0])
def test_wait_sleeps_retry_after_ms_before_the_next_pull(retry_after_ms, orch, synthetic_fly):
    orch.pull_script.append({"action": "wait", "retry_after_ms": retry_after_ms})
    orch.add_task(1)
    fly = synthetic_fly(synthetic_task_s="0")
    create(fly, "tiff-pool-5", orch.env("tiff-pool-5"))
    orch.wait_for("callback", 1)
    first, second = orch.of("pull")[:2]
    assert second.at - first.at >= retry_after_ms / 1000
    assert second.at - first.at < retry_after_ms / 1000 + 0.6  # not the 1 s default


def test_a_5xx_pull_is_retried_after_a_backoff(orch, synthetic_fly):
    orch.pull_script.append(503)
    orch.add_task(1)
    fly = synthetic_fly(synthetic_task_s="0")
    create(fly, "tiff-pool-6", orch.env("tiff-pool-6"))
    orch.wait_for("callback", 1)
    first, second = orch.of("pull")[:2]
    assert second.at - first.at >= 1.0


def test_a_refused_machine_token_ends_the_machine_with_exit_1(orch, synthetic_fly):
    orch.add_task(1)
    fly = synthetic_fly()
    env = orch.env("tiff-pool-7", MACHINE_TOKEN=orch.env("tiff-pool-8")["MACHINE_TOKEN"])
    machine = fly.machine_until(create(fly, "tiff-pool-7", env), "destroyed")
    assert exit_event(machine)["exit_code"] == 1
    assert len(orch.of("pull")) == 1 and orch.of("callback") == []
    assert orch.tasks  # nothing was handed out


def test_duration_spellings():
    assert TaskDuration.parse("3").draw() == 3.0
    uniform = TaskDuration.parse("uniform:2:4", seed=1)
    draws = [uniform.draw() for _ in range(200)]
    assert all(2 <= d <= 4 for d in draws) and max(draws) - min(draws) > 1
    normal = TaskDuration.parse("normal:0:1", seed=1)
    draws = [normal.draw() for _ in range(200)]
    assert min(draws) == 0.0 and max(draws) > 0.5  # clipped at 0, not folded
    for bad in ("", "x", "uniform:4:2", "normal:3", "gamma:1:2", "uniform:-1:2", "-1"):
        with pytest.raises(ValueError):
            TaskDuration.parse(bad)


# ---- fault knobs on synthetic pool machines ---------------------------------------------


@pytest.mark.parametrize("how", [{"task_script": ["crash"]}, {"crash_mid_task_rate": 1.0, "seed": 3}])
def test_crash_mid_task_kills_the_machine_holding_its_task(how, synthetic_fly):
    orch = PoolOrchestrator(heartbeat_interval_ms=100)
    try:
        orch.add_task(1)
        orch.add_task(2)
        fly = synthetic_fly(synthetic_task_s="1.5")
        assert fly.admin("POST", "faults", {**how, "task_fault_after_s": 0.35}).status_code == 200
        machine_id = create(fly, "tiff-pool-9", orch.env("tiff-pool-9"), auto_destroy=False)
        machine = fly.machine_until(machine_id, "stopped")
        assert machine["state"] == "stopped"
        event = exit_event(machine)
        assert (event["exit_code"], event["fault"]) == (137, "crash_mid_task")
        beats = orch.of("heartbeat")
        assert 1 <= len(beats) <= 4  # it beat until it died at 0.35 s
        time.sleep(0.3)
        assert orch.of("callback") == [] and orch.of("put") == []
        assert len(orch.of("pull")) == 1 and len(orch.tasks) == 1  # it never pulled again
        assert [i["kind"] for i in fly.admin("GET", "injections").json()] == ["crash_mid_task"]
        assert fly.stats()["crashes_mid_task"] == 1
    finally:
        orch.close()


def test_a_crash_due_after_the_task_ends_strikes_at_its_callback(orch, synthetic_fly):
    orch.add_task(1)
    faults = {"task_script": ["crash"], "task_fault_after_s": 30}
    fly = synthetic_fly(synthetic_task_s="0.05")
    fly.admin("POST", "faults", faults)
    machine = fly.machine_until(create(fly, "tiff-pool-10", orch.env("tiff-pool-10")), "destroyed",
                                timeout=5)
    assert (exit_event(machine)["exit_code"], exit_event(machine)["fault"]) == (137, "crash_mid_task")
    assert len(orch.of("put")) == 1 and orch.of("callback") == []  # died after its upload


def test_hang_freezes_every_slot_but_the_machine_stays_started(synthetic_fly):
    orch = PoolOrchestrator(heartbeat_interval_ms=100)
    try:
        orch.add_task(1)
        orch.add_task(2)
        fly = synthetic_fly(synthetic_task_s="0.8")
        fly.admin("POST", "faults", {"task_script": ["hang"], "task_fault_after_s": 0.3})
        env = orch.env("tiff-pool-11", WORKER_CONCURRENCY="2")  # one hung task freezes both slots
        machine_id = create(fly, "tiff-pool-11", env)
        time.sleep(1.4)  # well past the end of its 0.8 s tasks
        assert fly.get(machine_id).json()["state"] == "started"
        beats = orch.of("heartbeat")
        assert 2 <= len(beats) <= 6
        last_assigned = max(orch.assigned.values())
        assert all(b.at - last_assigned < 0.4 for b in beats)  # none after the hang
        assert orch.of("callback") == [] and len(orch.of("pull")) == 2
        assert fly.stats()["hangs"] == 1
        assert fly.delete(machine_id, force=True).status_code == 200
        machine = fly.get(machine_id).json()
        assert machine["state"] == "destroyed" and exit_event(machine)["fault"] == "hang"
    finally:
        orch.close()


def test_duplicate_callback_is_posted_twice_identically(orch, synthetic_fly):
    first, second = orch.add_task(1), orch.add_task(2)
    fly = synthetic_fly(synthetic_task_s="0")
    fly.admin("POST", "faults", {"callback_script": ["duplicate"]})
    machine = fly.machine_until(create(fly, "tiff-pool-12", orch.env("tiff-pool-12")), "destroyed")
    assert exit_event(machine)["exit_code"] == 0
    callbacks = orch.of("callback")
    assert [c.json()["task_id"] for c in callbacks] == [first, first, second]
    a, b = callbacks[:2]
    assert (a.body, a.query, a.headers["Authorization"]) == (b.body, b.query, b.headers["Authorization"])
    assert fly.stats()["duplicate_callbacks"] == 1


def test_crash_before_callback_reaches_pool_machines(orch, synthetic_fly):
    orch.add_task(1)
    fly = synthetic_fly(synthetic_task_s="0")
    fly.admin("POST", "faults", {"callback_script": ["crash"]})
    machine = fly.machine_until(create(fly, "tiff-pool-13", orch.env("tiff-pool-13")), "destroyed")
    event = exit_event(machine)
    assert (event["exit_code"], event["fault"]) == (137, "crash_before_callback")
    assert len(orch.of("put")) == 1 and orch.of("callback") == []


def test_slow_boot_delays_the_first_pull(orch, synthetic_fly):
    orch.add_task(1)
    fly = synthetic_fly(synthetic_task_s="0")
    fly.admin("POST", "faults", {"boot_delay_s": 0.8})
    created = time.monotonic()
    machine_id = create(fly, "tiff-pool-14", orch.env("tiff-pool-14"))
    assert fly.get(machine_id).json()["state"] == "created"
    [pull, *_] = orch.wait_for("pull", 1)
    assert pull.at - created >= 0.8
    orch.wait_for("callback", 1)


# ---- pool processes, through the orchestrator proxy --------------------------------------


def test_a_pool_process_talks_to_the_orchestrator_through_the_proxy(synthetic_fly):
    orch = PoolOrchestrator(heartbeat_interval_ms=100)
    try:
        ids = [orch.add_task(1), orch.add_task(2)]
        fly = synthetic_fly()
        env = orch.env("tiff-pool-15", SCRIPT_WORK_S="0.35")
        machine_id = create(fly, "tiff-pool-15", env, image=SCRIPT_IMAGE)
        machine = fly.machine_until(machine_id, "destroyed")
        assert exit_event(machine)["exit_code"] == 0
        assert machine["config"]["env"]["ORCHESTRATOR_URL"] == orch.url  # the API shows the original
        callbacks = orch.of("callback")
        assert [c.json()["task_id"] for c in callbacks] == ids
        assert callbacks[0].query == {"attempt": ["1"], "machine": ["tiff-pool-15"]}
        assert callbacks[0].headers["Authorization"] == f"Bearer cb-{ids[0]}-1"
        assert len(orch.of("heartbeat")) >= 4 and len(orch.of("put")) == 2
        stats = fly.stats()
        assert (stats["pool_pulls"], stats["pool_tasks"], stats["callbacks_forwarded"]) == (3, 2, 2)
        assert stats["pool_heartbeats"] == len(orch.of("heartbeat"))
    finally:
        orch.close()


def test_crash_mid_task_sigkills_a_pool_process(orch, synthetic_fly):
    orch.add_task(1)
    fly = synthetic_fly()
    fly.admin("POST", "faults", {"task_script": ["crash"], "task_fault_after_s": 0.3})
    env = orch.env("tiff-pool-16", SCRIPT_WORK_S="3")
    machine_id = create(fly, "tiff-pool-16", env, image=SCRIPT_IMAGE, auto_destroy=False)
    machine = fly.machine_until(machine_id, "stopped", timeout=5)
    event = exit_event(machine)
    assert (event["exit_code"], event["fault"]) == (137, "crash_mid_task")
    assert orch.of("callback") == [] and orch.of("put") == []  # killed 0.3 s into 3 s of work


def test_hang_sigstops_a_pool_process(synthetic_fly):
    orch = PoolOrchestrator(heartbeat_interval_ms=100)
    try:
        orch.add_task(1)
        fly = synthetic_fly()
        fly.admin("POST", "faults", {"task_script": ["hang"], "task_fault_after_s": 0.3})
        env = orch.env("tiff-pool-17", SCRIPT_WORK_S="0.8")
        machine_id = create(fly, "tiff-pool-17", env, image=SCRIPT_IMAGE)
        time.sleep(1.5)
        assert fly.get(machine_id).json()["state"] == "started"
        beats = orch.of("heartbeat")
        assert len(beats) <= 3
        assert not beats or beats[-1].at - orch.assigned[f"{BATCH}_tiff_1"] < 0.45
        assert orch.of("callback") == [] and orch.of("put") == []
        assert fly.delete(machine_id, force=True).status_code == 200  # SIGKILL reaches it
        assert fly.get(machine_id).json()["state"] == "destroyed"
    finally:
        orch.close()


def test_duplicate_callback_of_a_pool_process(orch, synthetic_fly):
    task_id = orch.add_task(1)
    fly = synthetic_fly()
    fly.admin("POST", "faults", {"callback_script": ["duplicate"]})
    env = orch.env("tiff-pool-18", SCRIPT_WORK_S="0")
    machine = fly.machine_until(create(fly, "tiff-pool-18", env, image=SCRIPT_IMAGE), "destroyed")
    assert exit_event(machine)["exit_code"] == 0
    a, b = orch.of("callback")
    assert a.json()["task_id"] == task_id and (a.body, a.query) == (b.body, b.query)


# ---- the real worker --------------------------------------------------------------------

WORKER_HAS_POOL_MODE = any("WORKER_MODE" in p.read_text() for p in (REPO / "worker").glob("*.py"))


@pytest.mark.skipif(not WORKER_HAS_POOL_MODE, reason="the worker's pool mode (issue 10) is not here yet")
def test_the_real_worker_converts_a_tiff_as_a_pool_machine(orch, fly_emulator_factory,
                                                          fly_emulator_client, moto_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    tiff = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 140, 220)).save(tiff, "TIFF")
    task_id = orch.add_task(1)
    s3.put_object(Bucket=BUCKET, Key=orch.tasks[0]["input_r2_key"], Body=tiff.getvalue())
    orch.presigned = False  # the machine has R2 keys (MACHINE_R2_CREDENTIALS=true)
    fly = fly_emulator_client(fly_emulator_factory())  # the default image map: python -m worker
    env = orch.env("tiff-pool-19", R2_ACCOUNT_ID="local", R2_ACCESS_KEY_ID="testing",
                   R2_SECRET_ACCESS_KEY="testing", R2_ENDPOINT_URL=moto_endpoint)
    machine = fly.machine_until(create(fly, "tiff-pool-19", env), "destroyed", timeout=60)
    assert exit_event(machine)["exit_code"] == 0
    [callback] = orch.of("callback")
    body = callback.json()
    assert (body["task_id"], body["status"]) == (task_id, "success"), body
    jpeg = s3.get_object(Bucket=BUCKET, Key=body["output_r2_key"])["Body"].read()
    assert body["output_file_size"] == len(jpeg)
    with Image.open(io.BytesIO(jpeg)) as im:
        assert (im.format, im.size) == ("JPEG", (64, 48))
    assert fly.stats()["callbacks_forwarded"] == 1  # it came through the proxy


@pytest.mark.skipif(not WORKER_HAS_POOL_MODE, reason="the worker's pool mode (issue 10) is not here yet")
@pytest.mark.parametrize("fault", ["crash", "hang"])
def test_pool_faults_reach_the_real_worker(fault, fly_emulator_factory, fly_emulator_client):
    orch = PoolOrchestrator(heartbeat_interval_ms=100)
    try:
        orch.add_task(1)  # input_url is not served (501): unfrozen, the worker would call back an error
        faults = {"task_script": [fault], "task_fault_after_s": 0}
        fly = fly_emulator_client(fly_emulator_factory(faults=FaultSettings(**faults)))
        machine_id = create(fly, "tiff-pool-21", orch.env("tiff-pool-21"), auto_destroy=False)
        if fault == "crash":
            machine = fly.machine_until(machine_id, "stopped", timeout=20)
            assert (exit_event(machine)["exit_code"], exit_event(machine)["fault"]) == (137, "crash_mid_task")
        else:
            orch.wait_for("pull", 1, timeout=20)
            time.sleep(1.0)
            assert fly.get(machine_id).json()["state"] == "started"  # SIGSTOPped, not gone
            assert fly.stats()["hangs"] == 1
        assert orch.of("callback") == [] and orch.of("heartbeat") == [] and len(orch.of("pull")) == 1
    finally:
        orch.close()


# ---- the pieces ---------------------------------------------------------------------------


def test_the_proxy_rewrites_only_the_orchestrators_urls_of_a_task_answer():
    from arke_local.fly_emulator import pool_proxy

    original, proxied = "http://orch:8000/api", "http://emu:4280/_emulator/orchestrator/m1"
    answer = {"action": "task", "task": {
        "callback_url": f"{original}/callback/b1/t1?attempt=2&machine=x",
        "heartbeat_url": f"{original}/pool/b1/machines/x/heartbeat",
        "output_url": f"{original}x/r2/out?sig=1", "input_url": "http://r2/in?sig=2"}}
    assert pool_proxy.rewrite_task(answer, original, proxied)
    task = answer["task"]
    assert task["callback_url"] == f"{proxied}/callback/b1/t1?attempt=2&machine=x"
    assert task["heartbeat_url"] == f"{proxied}/pool/b1/machines/x/heartbeat"
    assert (task["output_url"], task["input_url"]) == (f"{original}x/r2/out?sig=1", "http://r2/in?sig=2")
    assert not pool_proxy.rewrite_task({"action": "exit"}, original, proxied)
    assert [pool_proxy.route_kind(p) for p in ("pool/b/machines/m/pull", "pool/b/machines/m/heartbeat",
                                               "callback/b/t", "pool/b/machines/m", "health")] == [
        "pull", "heartbeat", "callback", "other", "other"]


def test_the_proxy_points_a_standing_machines_pull_url_back_at_itself():
    """A standing machine's first pull is machine-scoped; its answer's `pull_url` (the
    batch's route) is rewritten like a task's URLs, so the next pulls are proxied too."""
    from arke_local.fly_emulator import pool_proxy

    original, proxied = "http://orch:8000", "http://emu:4280/_emulator/orchestrator/m1"
    assert pool_proxy.route_kind("pool/machines/m/pull") == "pull"
    answer = {"action": "wait", "retry_after_ms": 5, "pull_url": f"{original}/pool/b1/machines/m/pull"}
    pool_proxy.rewrite_pull_url(answer, original, proxied)
    assert answer["pull_url"] == f"{proxied}/pool/b1/machines/m/pull"
    elsewhere = {"action": "exit", "pull_url": "http://other:1/pool/b1/machines/m/pull"}
    pool_proxy.rewrite_pull_url(elsewhere, original, proxied)
    assert elsewhere["pull_url"] == "http://other:1/pool/b1/machines/m/pull"


def test_pool_fault_knobs_are_checked(fly_emulator_factory, fly_emulator_client):
    fly = fly_emulator_client(fly_emulator_factory(images={IMAGE: SYNTHETIC}))
    for bad in ({"task_script": ["explode"]}, {"hang_rate": 1.5}, {"task_fault_after_s": -1}):
        assert fly.admin("POST", "faults", bad).status_code == 400, bad
    knobs = fly.admin("POST", "faults", {"task_script": ["hang", "none"], "crash_mid_task_rate": 0.1}).json()
    assert (knobs["task_script"], knobs["crash_mid_task_rate"]) == (["hang", "none"], 0.1)
    env = FaultSettings.from_env({"FLY_EMULATOR_FAULT_HANG_RATE": "0.2",
                                  "FLY_EMULATOR_FAULT_TASK_SCRIPT": '["crash"]'})
    assert (env.hang_rate, env.task_script) == (0.2, ["crash"])


def test_a_synthetic_pool_machine_without_an_orchestrator_exits_1(synthetic_fly):
    fly = synthetic_fly()
    machine = fly.machine_until(create(fly, "tiff-pool-20", {"WORKER_MODE": "pool", "BATCH_ID": BATCH}),
                                "destroyed")
    assert exit_event(machine)["exit_code"] == 1
