"""The scale benchmark's own logic (bench/scale.py): its run plan, the stack knobs it sets,
how it reads makespan, request counts and the pump's log, and the table and JSON it writes.
No stack is started and no time is measured here: the benchmark itself does that."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from rich.console import Console

from bench import scale
from bench.scale import RunResult, RunSpec
from chalicelib.tiff_header import bytes_reader, read_header


def test_each_mode_gets_its_own_synthetic_duration_and_both_sides_fly_s_rate():
    single, pool = scale.stack_env(RunSpec("single", 20)), scale.stack_env(RunSpec("pool", 20))
    for env in (single, pool):
        assert (env["FLY_CREATE_RATE"], env["FLY_EMULATOR_CREATE_RATE"]) == ("1.0", "1.0")
        assert (env["FLY_CREATE_BURST"], env["FLY_EMULATOR_CREATE_BURST"]) == ("3", "3")
        assert env["FLY_EMULATOR_FAULT_BOOT_DELAY_S"] == "5.0"
        assert "synthetic" in env["FLY_EMULATOR_IMAGES"]
    assert (single["MACHINE_MODE"], single["FLY_EMULATOR_SYNTHETIC_WORK_S"]) == ("single", "3.0")
    assert "FLY_EMULATOR_SYNTHETIC_TASK_S" not in single
    assert (pool["MACHINE_MODE"], pool["FLY_EMULATOR_SYNTHETIC_TASK_S"]) == ("pool", "3.0")
    assert "FLY_EMULATOR_SYNTHETIC_WORK_S" not in pool
    # A 10,000-task pool must not hit the emulator's machine cap (default 100).
    assert int(scale.stack_env(RunSpec("pool", 10_000))["FLY_EMULATOR_MAX_MACHINES"]) >= 10_000
    assert scale.stack_env(RunSpec("pool", 5, extra_env={"FLY_CREATE_RATE": "2"}))["FLY_CREATE_RATE"] == "2"


def test_run_plan_follows_the_options():
    plan = [(s.mode, s.tasks) for s in scale.runs_for(None, None, False, {})]
    assert plan == [("pool", 10_000), ("pool", 300), ("single", 300)]
    assert [(s.mode, s.tasks) for s in scale.runs_for(None, None, True, {})] == [("pool", 300), ("single", 300)]
    assert [(s.mode, s.tasks) for s in scale.runs_for(20, "single", False, {})] == [("single", 20)]
    assert [(s.mode, s.tasks) for s in scale.runs_for(50, None, False, {})] == [("pool", 50), ("single", 50)]
    assert [(s.mode, s.tasks) for s in scale.runs_for(None, "single", False, {})] == [("single", 300)]


def test_env_pairs_parse_and_bad_ones_are_refused():
    assert scale.parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(Exception, match="KEY=VALUE"):
        scale.parse_env(["NOEQUALS"])


def test_single_mode_expectation_is_the_create_limit():
    # 3 at once from the burst, then one a second; the last machine boots and works.
    assert scale.expected_single_s(RunSpec("single", 300)) == 297 + 5 + 3
    assert scale.expected_single_s(RunSpec("single", 2)) == 8


def test_a_run_gives_up_well_past_what_it_should_take():
    assert scale.default_timeout_s(RunSpec("single", 300), 50) == 3 * 305
    assert scale.default_timeout_s(RunSpec("pool", 10_000), 250) == 1000
    assert scale.default_timeout_s(RunSpec("pool", 20), 16) == 600


def test_makespan_runs_from_the_first_machine_created_to_the_last_task_ended():
    machines = [{"created_at": "2026-12-01T12:00:10.500Z"}, {"created_at": "2026-12-01T12:00:05Z"}, {}]
    start = datetime(2026, 12, 1, 12, 0, 5, tzinfo=UTC).timestamp()
    ended = [int((start + 40) * 1000), int((start + 100) * 1000), int((start + 7) * 1000)]
    assert scale.makespan_s(machines, ended) == pytest.approx(100)
    assert scale.makespan_s([], ended) is None
    assert scale.makespan_s(machines, []) is None


def test_only_the_orchestrators_new_requests_are_counted():
    before = {"testing": {"Query": 10, "GetItem": 4}, "bench-observer": {"GetItem": 3}}
    after = {"testing": {"Query": 15, "GetItem": 4, "TransactWriteItems": 7}, "bench-observer": {"GetItem": 90}}
    assert scale.counts_delta(before, after, "testing") == {"Query": 5, "TransactWriteItems": 7}
    assert scale.counts_delta({}, after, "nobody") == {}


def _emf(batch_id: str, at_ms: int, **metrics: int) -> str:
    names = [{"Name": n, "Unit": "Count"} for n in metrics]
    return json.dumps({"_aws": {"Timestamp": at_ms, "CloudWatchMetrics": [{"Namespace": "Arke/Preprocess",
                       "Metrics": names}]}, "stage": "local", "batch_id": batch_id, **metrics})


def test_pass_gaps_come_from_the_batch_s_own_pass_metrics():
    log = "\n".join([
        "[Pump] started: intake on, tick on (timeout 75000 ms)",
        _emf("b1", 1_000_000, FlyRateLimited=1),  # not a pass's metric
        _emf("b1", 1_001_000, MachinesSpawned=3),
        _emf("other", 1_002_000, MachinesSpawned=1),  # another batch's pass
        _emf("b1", 1_006_000, MachinesSpawned=5),
        '{"_aws": broken',
        _emf("b1", 1_007_000, MachinesSpawned=0),
    ])
    assert scale.pass_gaps_s(log, "b1") == pytest.approx((3.0, 5.0))
    assert scale.pass_gaps_s(log, "nobody") is None
    assert scale.pass_gaps_s(_emf("b1", 5, MachinesSpawned=1), "b1") is None


def _result(mode: str, tasks: int, makespan: float, bound: float, **kw) -> RunResult:
    r = RunResult(RunSpec(mode, tasks), status="DONE", makespan_s=makespan, bound_s=bound, **kw)
    return r


def test_table_shows_ratio_and_requests_per_task_and_speed_up():
    pool = _result("pool", 300, 60, 50, machines_created=25, peak_pool=20, rate_limited_429=2, injected_429=1,
                   ddb_requests=3000)
    single = _result("single", 300, 450, 50, expected_single_s=305.0, machines_created=300, ddb_requests=6600)
    console = Console(record=True, width=250)
    console.print(scale.results_table([pool, single]))
    text = console.export_text()
    pool_row = next(line for line in text.splitlines() if "pool N=300" in line)
    assert "1.20x" in pool_row and "10.0" in pool_row and " 3 " in pool_row
    single_row = next(line for line in text.splitlines() if "single N=300" in line)
    assert "9.00x" in single_row and "305" in single_row and "22.0" in single_row
    assert scale.speedups([pool, single]) == ["N=300: pool 60 s vs single 450 s: speed-up 7.5x"]
    assert scale.speedups([pool]) == []


def test_json_holds_every_run_with_its_ratio(tmp_path):
    pool = _result("pool", 10_000, 300, 250, ddb_requests=120_000)
    missing = RunResult(RunSpec("single", 300), status="TIMEOUT")
    path = scale.write_json([pool, missing], tmp_path, datetime(2026, 12, 1, 13, 5, tzinfo=UTC))
    assert path.name == "scale-20261201T130500Z.json"
    runs = json.loads(path.read_text())["runs"]
    assert runs[0]["ratio"] == pytest.approx(1.2) and runs[0]["ddb_requests_per_task"] == 12
    assert runs[0]["spec"]["mode"] == "pool"
    assert runs[1]["ratio"] is None and runs[1]["status"] == "TIMEOUT"


def test_the_uploaded_tiff_has_a_header_the_orchestrator_reads():
    header = read_header(bytes_reader(scale.tiny_tiff()))
    assert (header.width, header.height, header.mode) == (8, 8, "RGB")
