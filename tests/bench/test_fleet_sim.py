"""The fleet simulation (bench/fleet_sim) at small N: deterministic per seed, safe under the
emulator's faults (every task ended once, no output overwritten, counters equal to the task
rows), and its DynamoDB throughput model bites (a tiny write limit lengthens the makespan).
With memory tiers (docs/pool.md "Memory tiers"): TIFFs that need more than the smallest
machine bounce (`needs_memory`) or run out (`out_of_memory`) there and complete on a tier
machine that fits.

Virtual time only: nothing here asserts a wall-clock limit."""

from __future__ import annotations

from functools import cache

import pytest

from bench.fleet_sim.report import Report, check_safety, report
from bench.fleet_sim.sim import ON, BatchOutcome, Scenario, Simulation

N = 40
TIERS_N, LARGE, OOM = 50, 0.16, 0.04  # 8 TIFFs need 3500 or 6000 MB by their header, 2 run out below 3000 MB


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


# ---- memory tiers ------------------------------------------------------------------------

def _tiers(seed: int, **kwargs: object) -> Scenario:
    return Scenario(TIERS_N, seed=seed, faults=ON, large_fraction=LARGE, oom_fraction=OOM, **kwargs)


def _completing_attempt(task: dict) -> dict:
    return task["attempt_log"][f"{int(task['attempts'])}:start"]


def _large(outcome: BatchOutcome) -> list[tuple[dict, int]]:
    """The batch's tasks whose header needs more memory, with that memory."""
    return [(t, need.header_mb) for t in outcome.tasks
            if (need := outcome.needs.get(t["input_r2_key"])) is not None and need.header_mb]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_memory_tiers_faults_on_large_tiffs_complete_once_on_a_machine_that_fits(seed: int) -> None:
    result, sim = _run(_tiers(seed))
    outcome = sim.last_outcome
    assert result.status == "DONE"
    assert result.safety.ok, result.safety.problems
    rows = outcome.tasks
    assert len(rows) == TIERS_N and all(t["status"] == "completed" for t in rows)
    assert outcome.counters["tasks_completed"] == TIERS_N and outcome.counters["tasks_failed"] == 0
    assert outcome.counters["tasks_in_flight"] == outcome.counters["tasks_large"] == 0
    memory = {m.name: m.memory_mb for m in sim.fly.machines.values()}
    large = _large(outcome)
    assert len(large) == round(LARGE * TIERS_N)
    for task, needed_mb in large:
        start = _completing_attempt(task)
        assert memory[start["machine_name"]] >= needed_mb, (task["task_id"], start)
        assert int(start["memory_mb"]) == memory[start["machine_name"]]  # the claim says its machine's
    for task in rows:  # the ones that ran out once completed above the smallest memory
        if (need := outcome.needs.get(task["input_r2_key"])) is not None and need.oom_mb:
            assert memory[_completing_attempt(task)["machine_name"]] > 2048
    assert any(mb > 2048 and counts["created"] for mb, counts in result.machines_by_memory.items())
    # every large TIFF bounced at least once: the first machine to read it had 2048 MB
    assert result.safety.needs_memory_ends >= len(large)
    assert result.memory_events["needs_memory"] >= len(large)
    assert result.safety.out_of_memory_ends >= round(OOM * TIERS_N)


def test_the_tier_check_sees_a_large_tiff_completed_on_a_smaller_machine() -> None:
    result, sim = _run(_tiers(1))
    outcome = sim.last_outcome
    assert check_safety(sim, outcome, TIERS_N).ok
    small = next(m.name for m in sim.fly.machines.values() if m.memory_mb == 2048)
    task, _ = _large(outcome)[0]
    start = _completing_attempt(task)
    saved = dict(start)
    start.update(machine_name=small, memory_mb=2048)  # as if the pool had ignored the tiers
    try:
        problems = check_safety(sim, outcome, TIERS_N).problems
        assert any("completed on a 2048 MB machine" in p for p in problems), problems
    finally:
        start.clear()
        start.update(saved)


def test_memory_tiers_on_a_standing_pool_start_its_stopped_tier_machines() -> None:
    # POOL_MAX_MACHINES above S: room for the warm-up's tier machines (a full pool: below)
    result, sim = _run(Scenario(60, seed=1, standing=20, faults=ON, large_fraction=0.15,
                                env=(("POOL_MAX_MACHINES", "40"),)))
    assert result.status == "DONE"
    assert result.safety.ok, result.safety.problems
    assert any(mb > 2048 and counts["started"] for mb, counts in result.machines_by_memory.items())
    memory = {m.name: m.memory_mb for m in sim.fly.machines.values()}
    for task, needed_mb in _large(sim.last_outcome):
        assert memory[_completing_attempt(task)["machine_name"]] >= needed_mb


def test_one_memory_pool_converts_large_tiffs_and_sends_what_runs_out_to_single_mode() -> None:
    result, sim = _run(Scenario(40, seed=1, faults=ON, large_fraction=0.1, oom_fraction=0.1,
                                env=(("POOL_MEMORY_TIERS_MB", "none"),)))
    outcome = sim.last_outcome
    assert result.status == "DONE"
    assert result.safety.ok, result.safety.problems
    assert all(t["status"] == "completed" for t in outcome.tasks)
    assert "needs_memory" not in result.memory_events  # no assignment carries max_memory_mb
    machines = {m.name: m for m in sim.fly.machines.values()}
    for task in outcome.tasks:
        need = outcome.needs.get(task["input_r2_key"])
        last = machines[_completing_attempt(task)["machine_name"]]
        if need is not None and need.oom_mb:  # out of memory on the largest (only) tier: single mode
            assert "TASK_ID" in last.config["env"] and last.memory_mb >= need.oom_mb
        elif need is not None:
            assert last.memory_mb == 2048  # converted within the machine's budget, as the real worker does


def test_memory_tiers_on_a_full_standing_pool_do_not_stall_the_batch() -> None:
    # found here: with POOL_MAX_MACHINES (= S) machines of the smallest memory, the large
    # TIFFs waited for POOL_IDLE_RETENTION_S (pool/places.py now makes room, or a batch-only machine)
    result, sim = _run(Scenario(40, seed=1, standing=10, large_fraction=0.2, limit_s=200.0))
    assert result.status == "DONE"
    assert result.safety.ok, result.safety.problems
    memory = {m.name: m.memory_mb for m in sim.fly.machines.values()}
    large = _large(sim.last_outcome)
    assert large and all(memory[_completing_attempt(t)["machine_name"]] >= mb for t, mb in large)
