"""Standing machines in the Fly emulator (issue 18), over real HTTP: created stopped with
`skip_launch`, started after the start latency, stopped again, updated while stopped; the
per-action rate limits and their keying; the start faults; stopped-machine accounting;
synthetic pool machines that start and stop."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from arke_local.fly_emulator import SYNTHETIC, FaultSettings

sys.path.insert(0, str(Path(__file__).parent))  # for fly_pool_orchestrator
from fly_pool_orchestrator import PoolOrchestrator  # noqa: E402

IDLE_IMAGE = "test/idle:1"
RUN_IMAGE = "test/run-once:1"
POOL_IMAGE = "registry.fly.io/arke-tiff-worker:latest"
# Appends one JSON line (its env's RUN_TAG and memory) to $OUT_FILE per run, then exits 0.
RUN_SCRIPT = r"""
import json, os
with open(os.environ["OUT_FILE"], "a") as f:
    f.write(json.dumps({"tag": os.environ.get("RUN_TAG"),
                        "memory": os.environ["FLY_VM_MEMORY_MB"]}) + "\n")
"""


class FakeClock:
    """The emulator's clock for rate limits and machine-seconds: moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def body(image: str = IDLE_IMAGE, name: str | None = None, skip_launch: bool = False,
         env: dict | None = None, memory_mb: int = 256) -> dict:
    request: dict = {"region": "ord", "config": {
        "image": image, "auto_destroy": False, "restart": {"policy": "no"}, "env": env or {},
        "guest": {"memory_mb": memory_mb, "cpus": 1, "cpu_kind": "shared"}}}
    if name:
        request["name"] = name
    if skip_launch:
        request["skip_launch"] = True
    return request


def runs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def statuses(machine: dict) -> list[str]:
    """The machine's event statuses, oldest first."""
    return [e["status"] for e in reversed(machine["events"])]


@pytest.fixture
def run_images(tmp_path: Path) -> dict:
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)
    return {RUN_IMAGE: [sys.executable, str(script)], IDLE_IMAGE: "idle", POOL_IMAGE: SYNTHETIC}


@pytest.fixture
def standing(fly_emulator_factory, fly_emulator_client, run_images):
    """`standing(**EmulatorSettings changes)`: a client of an emulator with the run-once,
    idle and synthetic images."""
    def make(**changes: object):
        return fly_emulator_client(fly_emulator_factory(images=run_images, **changes))

    return make


def create(fly, request: dict) -> dict:
    answer = fly.create(request)
    assert answer.status_code == 200, answer.text
    return answer.json()


# ---- skip_launch, start, stop ----------------------------------------------------------


def test_skip_launch_creates_a_stopped_machine_that_runs_nothing(standing, tmp_path):
    fly = standing()
    out = tmp_path / "runs.jsonl"
    machine = create(fly, body(RUN_IMAGE, "pool-1", skip_launch=True, env={"OUT_FILE": str(out)}))
    assert machine["state"] == "stopped"
    assert fly.get(machine["id"]).json()["state"] == "stopped"
    assert [(m["id"], m["state"]) for m in fly.list().json()] == [(machine["id"], "stopped")]
    assert statuses(machine) == ["created", "stopped"]
    assert fly.wait(machine["id"], "started", timeout=1).status_code == 412  # nothing will start it
    assert fly.stop(machine["id"]).json() == {"ok": True}  # already stopped
    stats = fly.stats()
    assert (stats["machines_started"], stats["machines_created_stopped"]) == (0, 1)
    assert (stats["machines_active"], stats["machines_stopped"]) == (1, 1)
    assert runs(out) == []
    assert fly.delete(machine["id"]).status_code == 200  # a stopped machine needs no force


def test_start_runs_a_stopped_machine_after_the_start_latency_and_again_once_it_stops(
        standing, tmp_path):
    fly = standing(start_latency_s=0.3)
    out = tmp_path / "runs.jsonl"
    machine_id = create(fly, body(RUN_IMAGE, skip_launch=True,
                                  env={"OUT_FILE": str(out), "RUN_TAG": "a"}))["id"]

    started = fly.start(machine_id)
    assert started.status_code == 200, started.text
    assert started.json() == {"previous_state": "stopped", "migrated": False, "new_host": ""}
    machine = fly.machine_until(machine_id, "stopped")
    assert machine["state"] == "stopped"  # exit 0 without auto_destroy: stopped, not destroyed
    assert runs(out) == [{"tag": "a", "memory": "256"}]
    events = {e["status"]: e for e in machine["events"]}  # the newest of each status
    assert events["started"]["timestamp"] - events["starting"]["timestamp"] >= 300 - 5
    assert events["starting"]["source"] == "user"

    assert fly.start(machine_id).status_code == 200
    assert fly.machine_until(machine_id, "stopped")["state"] == "stopped"
    assert len(runs(out)) == 2
    stats = fly.stats()
    assert (stats["starts_received"], stats["starts_accepted"], stats["machines_started"]) == (2, 2, 2)
    assert (stats["machines_exited"], stats["machines_exited_nonzero"]) == (2, 0)


def test_an_idle_machine_stops_and_starts_on_request(standing):
    fly = standing(start_latency_s=0)
    machine_id = create(fly, body())["id"]
    assert fly.wait(machine_id, "started").status_code == 200
    for _ in range(2):
        assert fly.stop(machine_id).json() == {"ok": True}
        assert fly.wait(machine_id, "stopped").status_code == 200
        assert fly.get(machine_id).json()["state"] == "stopped"
        assert fly.stats()["machines_stopped"] == 1
        assert fly.start(machine_id).status_code == 200
        assert fly.wait(machine_id, "started").status_code == 200
    machine = fly.get(machine_id).json()
    assert statuses(machine)[-3:] == ["stopped", "starting", "started"]
    stop_exits = [e for e in machine["events"] if e["type"] == "exit"]
    assert all(e["request"]["exit_event"]["requested_stop"] for e in stop_exits)
    assert fly.stats()["machines_stopped_by_request"] == 2


def test_a_stop_during_the_start_latency_leaves_it_stopped_without_running(standing):
    fly = standing(start_latency_s=30)
    machine_id = create(fly, body(IDLE_IMAGE, skip_launch=True))["id"]
    assert fly.start(machine_id).status_code == 200
    assert fly.get(machine_id).json()["state"] == "starting"
    assert fly.stop(machine_id).json() == {"ok": True}
    assert fly.wait(machine_id, "stopped").status_code == 200  # not 30 s later: cut short
    machine = fly.get(machine_id).json()
    assert statuses(machine)[-3:] == ["starting", "stopping", "stopped"]
    assert fly.stats()["machines_started"] == 0


def test_start_refuses_a_machine_that_is_not_stopped(standing):
    fly = standing(start_latency_s=0)
    machine_id = create(fly, body())["id"]
    fly.wait(machine_id, "started")
    refused = fly.start(machine_id)
    assert refused.status_code == 412
    assert refused.json() == {
        "error": "failed_precondition: unable to start machine from current state: 'started'"}
    fly.delete(machine_id, force=True)
    gone = fly.start(machine_id)
    assert gone.status_code == 412 and "'destroyed'" in gone.json()["error"]
    assert fly.start("00000000000000").status_code == 404
    stats = fly.stats()
    assert (stats["starts_received"], stats["starts_refused"], stats["starts_accepted"]) == (3, 2, 0)


# ---- update ----------------------------------------------------------------------------


def test_update_gives_a_stopped_machine_a_new_config_for_its_next_start(standing, tmp_path):
    fly = standing(start_latency_s=0)
    out = tmp_path / "runs.jsonl"
    machine = create(fly, body(RUN_IMAGE, "pool-u", skip_launch=True,
                               env={"OUT_FILE": str(out), "RUN_TAG": "old"}))
    new = body(RUN_IMAGE, env={"OUT_FILE": str(out), "RUN_TAG": "new"}, memory_mb=512)
    answer = fly.update(machine["id"], {**new, "current_version": machine["instance_id"]})
    assert answer.status_code == 200, answer.text
    updated = answer.json()
    assert updated["state"] == "stopped"
    assert updated["config"]["env"]["RUN_TAG"] == "new"
    assert updated["config"]["guest"]["memory_mb"] == 512
    assert updated["instance_id"] != machine["instance_id"]  # a new version
    assert updated["events"][0]["type"] == "update"
    stale = fly.update(machine["id"], {**new, "current_version": machine["instance_id"]})
    assert stale.status_code == 409

    assert fly.start(machine["id"]).status_code == 200
    assert fly.machine_until(machine["id"], "stopped")["state"] == "stopped"
    assert runs(out) == [{"tag": "new", "memory": "512"}]
    stats = fly.stats()
    assert (stats["updates_accepted"], stats["updates_refused"]) == (1, 1)


@pytest.mark.parametrize(("change", "status", "words"), [
    ({"config": {"image": "registry.fly.io/unknown:latest"}}, 422, "manifest unknown"),
    ({"config": {"image": IDLE_IMAGE}, "name": "another-name"}, 422, "renaming"),
    ({"config": {"image": IDLE_IMAGE}, "region": "ams"}, 422, "region"),
    ({"config": {"image": IDLE_IMAGE}, "surprise": 1}, 400, "unknown field"),
    ({"name": "x"}, 422, "config"),
])
def test_update_refusals_change_nothing(standing, change, status, words):
    fly = standing()
    machine = create(fly, body(IDLE_IMAGE, "pool-r", skip_launch=True, env={"A": "1"}))
    refused = fly.update(machine["id"], change)
    assert refused.status_code == status, refused.text
    assert words in refused.json()["error"]
    after = fly.get(machine["id"]).json()
    assert (after["config"], after["instance_id"]) == (machine["config"], machine["instance_id"])


def test_update_of_a_running_machine_is_refused_as_not_emulated(standing):
    fly = standing()
    machine_id = create(fly, body())["id"]
    fly.wait(machine_id, "started")
    refused = fly.update(machine_id, body(env={"B": "2"}))
    assert refused.status_code == 422
    assert "stop it first" in refused.json()["error"]
    fly.delete(machine_id, force=True)
    assert fly.update(machine_id, body()).status_code == 412
    assert fly.update("00000000000000", body()).status_code == 404


# ---- rate limits -----------------------------------------------------------------------


def test_start_is_limited_per_machine_by_default(standing):
    clock = FakeClock()
    fly = standing(start_latency_s=0, rate_limits={"start": {"burst": 2}}, clock=clock)
    first, second = (create(fly, body(skip_launch=True))["id"] for _ in range(2))
    assert [fly.start(first).status_code for _ in range(2)] == [200, 412]  # two tokens
    limited = fly.start(first)
    assert limited.status_code == 429
    assert limited.json() == {"error": "rate limit exceeded"}
    assert limited.headers["Retry-After"] == "1"
    assert fly.start(second).status_code == 200  # its own bucket
    clock.advance(1)
    assert fly.start(first).status_code == 412  # a token again (and it is not stopped)
    assert fly.stats()["rate_limited_start"] == 1


def test_start_keyed_per_app_shares_one_bucket(standing):
    fly = standing(start_latency_s=0, rate_limits={"start": {"burst": 2, "key": "app"}},
                   clock=FakeClock())
    first, second = (create(fly, body(skip_launch=True))["id"] for _ in range(2))
    assert [fly.start(first).status_code for _ in range(2)] == [200, 412]
    assert fly.start(second).status_code == 429


def test_list_is_limited_per_app_when_configured(standing, fly_emulator_client):
    clock = FakeClock()
    fly = standing(rate_limits={"list": {"rate": 1, "burst": 2}}, clock=clock)
    assert [fly.list().status_code for _ in range(3)] == [200, 200, 429]
    assert fly_emulator_client(fly.emulator, app="other-app").list().status_code == 200
    clock.advance(1)
    assert fly.list().status_code == 200
    assert fly.stats()["rate_limited_list"] == 1


def test_get_is_limited_per_machine_when_configured(standing):
    fly = standing(rate_limits={"get": {"rate": 5, "burst": 10}}, clock=FakeClock())
    first, second = (create(fly, body(skip_launch=True))["id"] for _ in range(2))
    assert [fly.get(first).status_code for _ in range(11)] == [200] * 10 + [429]
    assert fly.get(second).status_code == 200
    assert fly.stats()["rate_limited_get"] == 1


def test_by_default_reads_are_not_limited_and_stops_are_per_machine(standing):
    fly = standing(clock=FakeClock())
    machine_id = create(fly, body(skip_launch=True))["id"]
    assert all(fly.get(machine_id).status_code == 200 for _ in range(30))
    assert all(fly.list().status_code == 200 for _ in range(30))
    assert [fly.stop(machine_id).status_code for _ in range(4)] == [200, 200, 200, 429]


# ---- start faults ----------------------------------------------------------------------


def test_scripted_start_failures_leave_the_machine_stopped(standing):
    faults = FaultSettings(start_script=[409, 412, 503, 429, "migrated"], migrate_delay_s=0)
    fly = standing(start_latency_s=0, faults=faults, rate_limits={"start": {"rate": 0}})
    machine = create(fly, body(skip_launch=True))
    answers = [fly.start(machine["id"]) for _ in range(4)]
    assert [a.status_code for a in answers] == [409, 412, 503, 429]
    assert "insufficient memory" in answers[0].json()["error"]
    assert answers[1].json()["error"].startswith("failed_precondition: unable to start machine")
    assert answers[3].headers["Retry-After"] == "1"
    assert all(set(a.json()) == {"error"} for a in answers)
    assert fly.get(machine["id"]).json()["state"] == "stopped"

    migrated = fly.start(machine["id"])
    assert migrated.status_code == 200
    assert migrated.json()["migrated"] is True and migrated.json()["new_host"]
    assert fly.wait(machine["id"], "started").status_code == 200
    assert fly.get(machine["id"]).json()["private_ip"] != machine["private_ip"]
    stats = fly.stats()
    assert (stats["injected_start_failures"], stats["starts_refused"], stats["starts_migrated"]) == (4, 4, 1)
    kinds = [i["kind"] for i in fly.admin("GET", "injections").json()]
    assert kinds == ["start_refused"] * 4 + ["start_migrated"]
    assert fly.admin("GET", "faults").json()["start_script"] == []


def test_random_start_failures_use_the_configured_status(standing):
    fly = standing(faults=FaultSettings(start_failure_rate=1.0, start_failure_status=412, seed=1))
    machine_id = create(fly, body(skip_launch=True))["id"]
    assert fly.start(machine_id).status_code == 412
    assert fly.admin("POST", "faults", {"start_failure_rate": 0}).status_code == 200
    assert fly.start(machine_id).status_code == 200
    bad = fly.admin("POST", "faults", {"start_failure_status": 200})
    assert bad.status_code == 400


# ---- accounting ------------------------------------------------------------------------


def test_machine_seconds_split_into_stopped_and_started(standing):
    clock = FakeClock()
    fly = standing(start_latency_s=30, clock=clock)
    standing_id = create(fly, body(skip_launch=True))["id"]
    clock.advance(100)
    assert fly.stats()["stopped_machine_seconds"] == 100
    assert fly.stats()["started_machine_seconds"] == 0
    fly.start(standing_id)  # starting for 30 s of real time: billed as started meanwhile
    clock.advance(30)
    fly.stop(standing_id)
    fly.wait(standing_id, "stopped")
    clock.advance(10)
    stats = fly.stats()
    assert (stats["started_machine_seconds"], stats["stopped_machine_seconds"]) == (30, 110)

    running_id = create(fly, body())["id"]  # created (not billed), then started
    fly.wait(running_id, "started")
    clock.advance(20)
    fly.delete(standing_id)
    clock.advance(50)  # a destroyed machine costs nothing
    stats = fly.stats()
    assert (stats["started_machine_seconds"], stats["stopped_machine_seconds"]) == (100, 130)


# ---- synthetic pool machines -----------------------------------------------------------


def test_a_synthetic_pool_machine_is_started_again_after_it_exits_stopped(standing):
    orch = PoolOrchestrator()
    try:
        fly = standing(start_latency_s=0.05, synthetic_task_s="0.05")
        env = orch.env("pool-s1")
        machine_id = create(fly, body(POOL_IMAGE, "pool-s1", skip_launch=True, env=env))["id"]
        first = orch.add_task(1)
        assert fly.start(machine_id).status_code == 200
        assert fly.machine_until(machine_id, "stopped")["state"] == "stopped"  # pulled exit
        second = orch.add_task(2)
        assert fly.start(machine_id).status_code == 200
        machine = fly.machine_until(machine_id, "stopped")
        assert machine["state"] == "stopped"
        assert [c.json()["task_id"] for c in orch.of("callback")] == [first, second]
        assert len(orch.of("pull")) == 4  # a task, then exit, per run
        exits = [e["request"]["exit_event"] for e in machine["events"] if e["type"] == "exit"]
        assert [e["exit_code"] for e in exits] == [0, 0]
        assert fly.stats()["machines_started"] == 2
    finally:
        orch.close()
