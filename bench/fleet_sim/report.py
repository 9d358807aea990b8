"""What a fleet simulation run reports: the measured batch's makespan, machines, DynamoDB
requests per task and hottest partition, its cost on Fly (and on Lambda, for comparison),
and the safety checks (exactly once, no overwrite, counters equal to the task rows).

Prices (README "Pool machine size", docs/fly-emulator.md "Stopped machines cost"): a
started performance-1x 2048 MB machine $0.00001273 a second; a stopped one its rootfs,
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
          api_requests: int) -> Costs:
    fly = running_s * PERFORMANCE_1X_PER_S + stopped_s * ROOTFS_GB * ROOTFS_PER_GB_MONTH / MONTH_S
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
    return safety


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
    return Report(
        label=sc.label,
        scenario={"tasks": sc.tasks, "seed": sc.seed, "standing": sc.standing, "task_s": sc.task_s,
                  "profile": sc.profile, "faults": sc.faults != type(sc.faults)(), "wcu": sc.wcu, "rcu": sc.rcu},
        status=measured.status,
        submit_to_done_s=measured.submit_to_done_s,
        makespan_s=measured.makespan_s,
        bound_s=bound_s(sim),
        machines_created=measured.machines_created,
        machines_started=measured.machines_started,
        warm_up_created=warm.machines_created if warm else 0,
        ddb_requests=measured.ddb_requests,
        ddb_per_task=measured.ddb_requests / sc.tasks if sc.tasks else 0.0,
        ddb_by_operation=measured.ddb_by_operation,
        peak_partition_wcu=wcu,
        peak_partition="/".join(p for p in hot if p) if hot else "",
        peak_partition_rcu=rcu,
        top_partitions_wcu=top_partitions(writes),
        throttled_requests=writes.throttled + reads.throttled,
        costs=costs(sc.tasks, sc.task_s, running, stopped, api_busy, api_requests),
        safety=check_safety(sim, measured, sc.tasks),
        trace_digest=sim.trace_digest(),
        events=sim.loop.events_run,
        wall_s=wall_s,
    )
