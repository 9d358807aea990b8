"""What a fleet simulation run reports: the measured batch's makespan, machines (of each
memory), DynamoDB requests per task and hottest partition, its cost on Fly (and on Lambda,
for comparison), and the safety checks (exactly once, no overwrite, counters equal to the
task rows; with memory tiers: no attempt on less memory than the task was found to need).

Prices (README "Pool machine size", docs/fly-emulator.md "Stopped machines cost"): a
started performance-1x 2048 MB machine $0.00001273 a second, each GB more $5 per 30 days
(Fly's step from 2 GB to 4 GB and 8 GB on a dedicated CPU); a stopped one its rootfs,
$0.15 per GB-month (ROOTFS_GB assumed 1 GB: the worker's image). Lambda: $0.0000166667 per
GB-second (x86) and $0.20 per million requests.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from .capacity import PartitionStats
from .sim import BatchOutcome, Simulation

PERFORMANCE_1X_PER_S = 0.00001273
PERFORMANCE_1X_MB = 2048  # the memory that price includes
EXTRA_RAM_PER_GB_S = 5.00 / (30 * 24 * 3600)
ROOTFS_PER_GB_MONTH = 0.15
ROOTFS_GB = 1.0
MONTH_S = 30 * 24 * 3600
LAMBDA_PER_GB_S = 0.0000166667
LAMBDA_PER_REQUEST = 0.20 / 1_000_000
LAMBDA_CONVERT_GB = 2.0  # a Lambda doing the conversion instead: the pool machine's 2048 MB
API_LAMBDA_GB = 0.5  # .chalice/config.json: the API's lambda_memory_size


@dataclass
class Costs:
    """Dollars for the measured batch, and per 1,000 TIFFs."""

    running_s: float
    stopped_s: float
    fly_usd: float
    per_1000_usd: float
    lambda_convert_per_1000_usd: float  # the same conversions on Lambda instead of Fly
    api_lambda_per_1000_usd: float  # the orchestrator's own API invocations (both ways)


def costs(tasks: int, task_s: float, running_s: float, stopped_s: float, api_busy_s: float,
          api_requests: int, extra_ram_gb_s: float = 0.0) -> Costs:
    """`extra_ram_gb_s`: started seconds x GB beyond the 2048 MB (the larger tiers' machines)."""
    fly = (running_s * PERFORMANCE_1X_PER_S + extra_ram_gb_s * EXTRA_RAM_PER_GB_S
           + stopped_s * ROOTFS_GB * ROOTFS_PER_GB_MONTH / MONTH_S)
    per = 1000 / tasks if tasks else 0.0
    convert = tasks * (task_s * LAMBDA_CONVERT_GB * LAMBDA_PER_GB_S + LAMBDA_PER_REQUEST)
    api = api_busy_s * API_LAMBDA_GB * LAMBDA_PER_GB_S + api_requests * LAMBDA_PER_REQUEST
    return Costs(running_s, stopped_s, fly, fly * per, convert * per, api * per)


@dataclass
class Safety:
    problems: list[str] = field(default_factory=list)
    duplicate_callbacks: int = 0
    outputs_written: int = 0
    tasks_retried: int = 0
    tasks_failed: int = 0
    large_tasks: int = 0  # whose header needs more than the smallest machine (Scenario.large_fraction)
    oom_tasks: int = 0  # whose conversion runs out on the smallest machine (Scenario.oom_fraction)
    needs_memory_ends: int = 0  # attempts the orchestrator ended as a worker's needs_memory (the rows)
    out_of_memory_ends: int = 0  # ... as out_of_memory
    completed_on_mb: dict[int, int] = field(default_factory=dict)  # large and oom tasks: completing machine's memory

    @property
    def ok(self) -> bool:
        return not self.problems


def check_safety(sim: Simulation, outcome: BatchOutcome, expected: int) -> Safety:
    """Every task ended once, its output its own, and the batch's counters are its rows."""
    safety = Safety()
    rows = outcome.tasks
    statuses = Counter(str(t.get("status")) for t in rows)
    if len(rows) != expected:
        safety.problems.append(f"{len(rows)} task rows, expected {expected}")
    if outcome.status != "DONE":
        safety.problems.append(f"batch ended {outcome.status}")
    safety.tasks_failed = statuses.get("failed", 0)
    unended = {s: c for s, c in statuses.items() if s not in ("completed", "failed")}
    if unended:
        safety.problems.append(f"tasks not ended: {unended}")
    counters = outcome.counters
    for name, status in (("tasks_completed", "completed"), ("tasks_failed", "failed")):
        if counters.get(name, 0) != statuses.get(status, 0):
            safety.problems.append(f"{name}={counters.get(name)} but {statuses.get(status, 0)} rows {status}")
    if counters.get("tasks_total") != expected:
        safety.problems.append(f"tasks_total={counters.get('tasks_total')}, expected {expected}")
    if counters.get("tasks_in_flight", 0) != 0:
        safety.problems.append(f"tasks_in_flight={counters.get('tasks_in_flight')} after the end")
    inputs = {str(t.get("input_r2_key")) for t in rows}
    prefix = f"staging/{outcome.batch_id}/"
    for key, writes in sim.r2_puts.items():
        if not key.startswith(prefix):
            continue
        safety.outputs_written += len(writes)
        writers = {w[0] for w in writes}
        if len(writers) > 1:
            safety.problems.append(f"output {key} written by {len(writers)} tasks")
        if key in inputs:
            safety.problems.append(f"output {key} overwrote an input")
    seen: dict[str, str] = {}
    for task in rows:
        task_id, key = str(task.get("task_id")), task.get("output_r2_key")
        if int(task.get("attempts") or 1) > 1:
            safety.tasks_retried += 1
        if task.get("status") != "completed":
            continue
        if not key or task_id not in {w[0] for w in sim.r2_puts.get(str(key), [])}:
            safety.problems.append(f"task {task_id} completed without its upload of {key}")
        if key in seen:
            safety.problems.append(f"tasks {seen[key]} and {task_id} share output {key}")
        seen[str(key)] = task_id
    safety.duplicate_callbacks = sum(1 for e in sim.trace if e[1] == "duplicate_callback")
    if outcome.status == "DONE" and counters.get("tasks_large", 0) != 0:
        safety.problems.append(f"tasks_large={counters.get('tasks_large')} after the end")
    check_tiers(sim, outcome, safety)
    return safety


def _attempts(task: dict[str, Any]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(attempt, its start, its end) from the task's attempt log, in order."""
    log = task.get("attempt_log") or {}
    numbers = sorted({int(k.split(":", 1)[0]) for k in log if k.split(":", 1)[0].isdigit()})
    return [(n, log.get(f"{n}:start") or {}, log.get(f"{n}:end") or {}) for n in numbers]


def _memory_end(end: dict[str, Any]) -> str | None:
    """"needs_memory" or "out_of_memory" when an attempt ended for memory (the words the
    orchestrator's error for each has), else None."""
    error = str(end.get("error") or "")
    if error.startswith("needs "):
        return "needs_memory"
    return "out_of_memory" if "out of memory" in error else None


def check_tiers(sim: Simulation, outcome: BatchOutcome, safety: Safety) -> None:
    """Memory tiers (docs/pool.md): every attempt's claim recorded the memory its machine
    has; once an attempt ended `needs_memory` (M MB) or `out_of_memory` (on a machine of
    m MB), no later attempt ran on less than M (or the largest tier) or on m or less (while
    a larger tier exists); and a completed large task ran last on a machine of at least
    what its header needs (or the largest tier)."""
    tiers = sim._settings().pool_tiers
    largest = tiers[-1]
    memory = {m.name: m.memory_mb for m in sim.fly.machines.values()}
    for task in outcome.tasks:
        need = outcome.needs.get(str(task.get("input_r2_key")))
        if need is not None and need.header_mb:
            safety.large_tasks += 1
        elif need is not None and need.oom_mb:
            safety.oom_tasks += 1
        task_id, floor, last_mb = str(task.get("task_id")), 0, None
        for attempt, start, end in _attempts(task):
            name = start.get("machine_name")
            if name not in memory:  # pool machines and single-mode ones (a task beyond the largest tier)
                continue
            machine_mb, claimed = memory[name], start.get("memory_mb")
            if claimed is not None and int(claimed) != machine_mb:
                safety.problems.append(f"task {task_id} attempt {attempt}: claim says {int(claimed)} MB, "
                                       f"machine {name} has {machine_mb} MB")
            if machine_mb < floor:
                safety.problems.append(f"task {task_id} attempt {attempt} on {machine_mb} MB after it was "
                                       f"found to need {floor} MB")
            last_mb = machine_mb
            ended_for = _memory_end(end) if end.get("outcome") == "retry" else None
            if ended_for == "needs_memory" and need is not None and need.header_mb:
                safety.needs_memory_ends += 1
                floor = max(floor, min(need.header_mb, largest))
            elif ended_for == "out_of_memory":
                safety.out_of_memory_ends += 1
                larger = [t for t in tiers if t > machine_mb]
                floor = max(floor, larger[0] if larger else machine_mb)
        if need is None or task.get("status") != "completed" or last_mb is None:
            continue
        safety.completed_on_mb[last_mb] = safety.completed_on_mb.get(last_mb, 0) + 1
        wanted = min(need.header_mb or need.oom_mb or 0, largest)
        if last_mb < wanted:
            safety.problems.append(f"task {task_id} needs {wanted} MB but completed on a {last_mb} MB machine")
    safety.completed_on_mb = dict(sorted(safety.completed_on_mb.items()))


def tier_timing(outcome: BatchOutcome) -> dict[str, float]:
    """How long the TIFFs that needed more memory waited: from the end of a task's first
    needs_memory or out_of_memory attempt to the start of its completing one (median, max),
    and how much later the last of them ended than the last other task."""
    from .clock import EPOCH_S

    waits, needed_end, other_end = [], None, None
    for task in outcome.tasks:
        if task.get("ended_at") is None:
            continue
        ended = float(task["ended_at"]) / 1000 - EPOCH_S
        if str(task.get("input_r2_key")) not in outcome.needs:
            other_end = ended if other_end is None else max(other_end, ended)
            continue
        needed_end = ended if needed_end is None else max(needed_end, ended)
        attempts = _attempts(task)
        first = next((end for _, _, end in attempts if _memory_end(end)), None)
        if task.get("status") == "completed" and first and attempts[-1][1].get("started_at") is not None:
            waits.append((float(attempts[-1][1]["started_at"]) - float(first["ended_at"])) / 1000)
    if not waits:
        return {}
    waits.sort()
    timing = {"retry_wait_median_s": waits[len(waits) // 2], "retry_wait_max_s": waits[-1]}
    if needed_end is not None and other_end is not None:
        timing["tail_s"] = needed_end - other_end
    return timing


@dataclass
class Report:
    label: str
    scenario: dict[str, Any]
    status: str
    submit_to_done_s: float | None
    makespan_s: float | None
    bound_s: float
    machines_created: int
    machines_started: int
    machines_by_memory: dict[int, dict[str, int]]  # memory -> created / started (measured batch)
    memory_events: dict[str, int]  # the workers' needs_memory / out_of_memory answers (measured batch)
    tier_timing: dict[str, float]  # tier_timing(): the larger TIFFs' wait and tail
    warm_up_created: int
    ddb_requests: int
    ddb_per_task: float
    ddb_by_operation: dict[str, int]
    peak_partition_wcu: float
    peak_partition: str
    peak_partition_rcu: float
    top_partitions_wcu: dict[str, float]  # the 5 hottest partitions' peak second (writes)
    throttled_requests: int
    costs: Costs
    safety: Safety
    trace_digest: str
    events: int
    wall_s: float

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["safety"]["ok"] = self.safety.ok
        return data


def bound_s(sim: Simulation) -> float:
    """The named baseline: `chalicelib.pool_sizing.makespan_bound_s` with the scenario's pool:
    cold, Fly's create rate after its burst and the 5 s boot; standing, S machines at once
    after the start latency (bench.scale_standing's bound)."""
    from chalicelib.pool_sizing import makespan_bound_s

    sc = sim.scenario
    if sc.standing:
        return makespan_bound_s(sc.tasks, sc.task_s, 0.0, sim.profile.fly.start_latency_s,
                                per_machine=sc.per_machine, burst=sc.standing)
    return makespan_bound_s(sc.tasks, sc.task_s, sc.create_rate, sim.profile.fly.boot_s,
                            per_machine=sc.per_machine, burst=sc.create_burst)


def top_partitions(stats: PartitionStats, count: int = 5) -> dict[str, float]:
    """The hottest partitions by their peak second: the one at intake (the files of one batch
    share a key) is not the one that limits the conversion (the batch item)."""
    stats.hottest()  # rolls the last second in
    ranked = sorted(stats.peak.items(), key=lambda item: (-item[1], item[0]))[:count]
    return {"/".join(p for p in partition if p): units for partition, units in ranked}


def report(sim: Simulation, outcomes: list[BatchOutcome], wall_s: float) -> Report:
    measured = outcomes[-1]
    warm = outcomes[0] if len(outcomes) > 1 else None
    writes: PartitionStats = sim.measured_writes
    reads: PartitionStats = sim.measured_reads
    hot, wcu = writes.hottest()
    _, rcu = reads.hottest()
    sc = sim.scenario
    running, stopped = sim.measured_billed
    api_busy, api_requests = sim.measured_api
    extra_gb_s = sum(r * max(0, m - PERFORMANCE_1X_MB) / 1024 for m, (r, _) in sim.measured_billed_by_memory.items())
    return Report(
        label=sc.label,
        scenario={"tasks": sc.tasks, "seed": sc.seed, "standing": sc.standing, "task_s": sc.task_s,
                  "profile": sc.profile, "faults": sc.faults != type(sc.faults)(), "wcu": sc.wcu, "rcu": sc.rcu,
                  "large_fraction": sc.large_fraction, "large_mb": list(sc.large_mb),
                  "oom_fraction": sc.oom_fraction, "oom_mb": sc.oom_mb},
        status=measured.status,
        submit_to_done_s=measured.submit_to_done_s,
        makespan_s=measured.makespan_s,
        bound_s=bound_s(sim),
        machines_created=measured.machines_created,
        machines_started=measured.machines_started,
        machines_by_memory=measured.machines_by_memory,
        memory_events=measured.memory_events,
        tier_timing=tier_timing(measured),
        warm_up_created=warm.machines_created if warm else 0,
        ddb_requests=measured.ddb_requests,
        ddb_per_task=measured.ddb_requests / sc.tasks if sc.tasks else 0.0,
        ddb_by_operation=measured.ddb_by_operation,
        peak_partition_wcu=wcu,
        peak_partition="/".join(p for p in hot if p) if hot else "",
        peak_partition_rcu=rcu,
        top_partitions_wcu=top_partitions(writes),
        throttled_requests=writes.throttled + reads.throttled,
        costs=costs(sc.tasks, sc.task_s, running, stopped, api_busy, api_requests, extra_gb_s),
        safety=check_safety(sim, measured, sc.tasks),
        trace_digest=sim.trace_digest(),
        events=sim.loop.events_run,
        wall_s=wall_s,
    )
