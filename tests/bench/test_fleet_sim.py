"""The fleet simulation (bench/fleet_sim) at small N: deterministic per seed, safe under the
emulator's faults (every task ended once, no output overwritten, counters equal to the task
rows), and its DynamoDB throughput model bites (a tiny write limit lengthens the makespan).

Virtual time only: nothing here asserts a wall-clock limit."""

from __future__ import annotations

from functools import cache

import pytest

from bench.fleet_sim.report import Report, check_safety, report
from bench.fleet_sim.sim import ON, Scenario, Simulation

N = 40


@cache
def _run(scenario: Scenario) -> tuple[Report, Simulation]:
    sim = Simulation(scenario)
    outcomes = sim.run()
    return report(sim, outcomes, 0.0), sim


def test_the_same_seed_gives_the_same_trace_and_makespan() -> None:
    first, _ = _run(Scenario(N, seed=1, faults=ON))
    again, _ = _run(Scenario(N, seed=1, faults=ON, limit_s=4 * 3600.0 + 1))  # a new run, same world
    assert first.trace_digest == again.trace_digest
    assert first.submit_to_done_s == again.submit_to_done_s
    assert first.ddb_requests == again.ddb_requests
    other, _ = _run(Scenario(N, seed=2, faults=ON))
    assert other.trace_digest != first.trace_digest


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_faults_on_every_task_ends_once_and_no_output_is_overwritten(seed: int) -> None:
    result, sim = _run(Scenario(N, seed=seed, faults=ON))
    assert result.status == "DONE"
    assert result.safety.ok, result.safety.problems
    assert sum(1 for event in sim.trace if event[1] in ("crash_mid_task", "hang", "crash_before_callback",
                                                         "duplicate_callback", "late_callback",
                                                         "start_failed")) > 0 or seed != 1


def test_the_safety_check_sees_a_counter_that_disagrees_with_the_rows() -> None:
    _, sim = _run(Scenario(N, seed=1, faults=ON))
    outcome = sim.last_outcome
    counters = dict(outcome.counters)
    outcome.counters = dict(counters, tasks_completed=counters["tasks_completed"] - 1)
    try:
        assert not check_safety(sim, outcome, N).ok
    finally:
        outcome.counters = counters


def test_a_tiny_write_limit_per_partition_lengthens_the_makespan() -> None:
    normal, _ = _run(Scenario(N, seed=4))
    tiny, _ = _run(Scenario(N, seed=4, wcu=3.0))
    assert normal.status == tiny.status == "DONE"
    assert normal.throttled_requests == 0
    assert tiny.throttled_requests > 0
    assert tiny.submit_to_done_s > 1.5 * normal.submit_to_done_s
