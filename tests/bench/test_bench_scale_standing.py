"""The standing-pool scale benchmark's own logic (bench/scale_standing.py): the stack knobs
it sets over bench.scale's, its bound and its makespan, and the table and JSON it writes.
No stack is started here: the benchmark itself does that."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from bench import scale_standing as standing
from bench.scale_standing import StandingResult, StandingSpec


def test_the_stack_is_standing_capped_at_s_and_creates_at_the_warm_up_rate():
    env = standing.standing_env(StandingSpec(tasks=2000, standing=300, warm_rate=40))
    assert (env["POOL_STANDING"], env["MAX_POOL_MACHINES_PER_BATCH"], env["POOL_MAX_MACHINES"]) == ("true", "300", "300")
    assert (env["FLY_CREATE_RATE"], env["FLY_EMULATOR_CREATE_RATE"]) == ("40", "40")
    assert (env["MACHINE_MODE"], env["FLY_EMULATOR_SYNTHETIC_TASK_S"]) == ("pool", "3.0")  # bench.scale's own
    assert standing.standing_env(StandingSpec(extra_env={"POOL_STANDING": "false"}))["POOL_STANDING"] == "false"


def test_the_bound_is_the_start_then_the_work_shared_by_the_stopped_machines():
    spec = StandingSpec(tasks=2000, standing=300)
    assert standing.bound_s(spec, 300) == pytest.approx(0.4 + 2000 * 3 / 300)
    assert standing.bound_s(spec, 100) == pytest.approx(0.4 + 60)
    assert standing.bound_s(StandingSpec(tasks=10, standing=300), 300) == pytest.approx(3.4)  # one task each
    assert standing.bound_s(spec, 0) == 0.0


def test_makespan_runs_from_the_batchs_first_machine_record_to_its_last_task():
    assert standing.makespan_s([5_000, 4_000, 6_000], [9_000, 30_000]) == 26.0
    assert standing.makespan_s([], [1]) is None and standing.makespan_s([1], []) is None


def test_table_and_json_carry_the_ratio_and_flag_nothing_hidden(tmp_path):
    result = StandingResult(StandingSpec(tasks=100, standing=10), status="DONE", stopped_before=10,
                            makespan_s=40.0, bound_s=30.4, machines_started=10, ddb_requests=500)
    console = Console(width=250, record=True)
    console.print(standing.results_table([result]))
    text = console.export_text()
    assert "pool N=100 standing=10" in text and "1.32x" in text and "5.0" in text
    data = json.loads(standing.write_json([result], tmp_path).read_text())
    assert data["runs"][0]["ratio"] == pytest.approx(40 / 30.4) and data["runs"][0]["ddb_requests_per_task"] == 5.0
