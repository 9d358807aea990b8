"""Standing-pool scale benchmark (issue 18): the local stack of bench.scale, a warm-up batch
that leaves S pool machines stopped, then the measured batch of N, which starts them.

Run: `make bench-scale-standing` or `python -m bench.scale_standing [--n N] [--standing S]
[--env KEY=VALUE ...]`. One stack (moto, the Fly emulator with synthetic machines,
`chalice local`, the pump), `POOL_STANDING=true`, `MAX_POOL_MACHINES_PER_BATCH=S`:

1. warm-up: a batch of N tasks grows the pool to S machines. Creations run at `--warm-rate`
   a second (both the orchestrator's bucket and the emulator's), not Fly's 1 a second: the
   warm-up only makes the machines, and how fast is not what is measured. At its end they
   stop (not destroyed) and go back to the standing pool.
2. measured: a second batch of N tasks. Its pass starts the stopped machines (Fly limits
   starts per machine; the emulator answers a start after `start_latency_s`, 0.4 s) and
   creates only what is still missing; the run reports how many it started and created
   (a creation here would run at the warm-up's rate, so a run that created is flagged).

Makespan: the batch's first machine record (written just before its start is asked) ->
its last task ended. Bound: `makespan_bound_s` with no creations and the S machines the
warm-up left stopped at once after the start latency, start + max(s, N·s/(c·S)): the best
a pool of S started machines can do. Submit -> DONE as the harness saw it is printed beside it. DynamoDB requests per
task as bench.scale counts them. Results go to bench/results/scale-standing-<UTC>.json.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.scale import (
    BATCHES_TABLE,
    OBSERVER_KEY,
    ORCHESTRATOR_KEY,
    RESULTS_DIR,
    RunSpec,
    _client,
    counts_delta,
    parse_env,
    stack_env,
    submit,
    task_ends,
    upload,
    wait_done,
)

START_LATENCY_S = 0.4  # the emulator's default start latency (docs/fly-emulator.md)


@dataclass(frozen=True)
class StandingSpec:
    tasks: int = 2000
    standing: int = 300
    task_s: float = 3.0
    warm_rate: float = 50.0
    per_machine: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"pool N={self.tasks} standing={self.standing}"


@dataclass
class StandingResult:
    spec: StandingSpec
    status: str = ""
    warm_up_s: float | None = None
    stopped_before: int = 0
    submit_to_done_s: float | None = None
    makespan_s: float | None = None
    bound_s: float = 0.0
    machines_started: int = 0
    machines_created: int = 0
    starts_refused: int = 0
    ddb_requests: int = 0
    ddb_by_operation: dict[str, int] = field(default_factory=dict)
    tasks_completed: int = 0
    tasks_failed: int = 0

    @property
    def ratio(self) -> float | None:
        return self.makespan_s / self.bound_s if self.makespan_s and self.bound_s else None

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio,
                "ddb_requests_per_task": self.ddb_requests / self.spec.tasks if self.spec.tasks else 0.0}


def bound_s(spec: StandingSpec, stopped: int) -> float:
    """`stopped` machines at once after the start latency, none created:
    start + max(s, N·s/(c·S)); 0 when nothing was left stopped."""
    from chalicelib.pool_sizing import makespan_bound_s

    if stopped <= 0:
        return 0.0
    return makespan_bound_s(spec.tasks, spec.task_s, 0.0, START_LATENCY_S, per_machine=spec.per_machine,
                            burst=stopped)


def standing_env(spec: StandingSpec) -> dict[str, str]:
    """bench.scale's stack, standing, the batch cap at S, creations at the warm-up's rate."""
    rate = str(spec.warm_rate)
    env = {"POOL_STANDING": "true", "MAX_POOL_MACHINES_PER_BATCH": str(spec.standing),
           "POOL_MAX_MACHINES": str(spec.standing), "FLY_CREATE_RATE": rate, "FLY_EMULATOR_CREATE_RATE": rate,
           "FLY_CREATE_BURST": "10", "FLY_EMULATOR_CREATE_BURST": "10", **spec.extra_env}
    base = RunSpec("pool", spec.tasks, task_s=spec.task_s, per_machine=spec.per_machine, extra_env=env)
    return stack_env(base)


def makespan_s(stint_created_ms: list[int], task_ended_ms: list[int]) -> float | None:
    """The batch's first machine record -> its last task ended, in seconds."""
    if not stint_created_ms or not task_ended_ms:
        return None
    return (max(task_ended_ms) - min(stint_created_ms)) / 1000


def _scan(ddb, **kw: Any) -> list[dict]:
    items, kw = [], {"TableName": BATCHES_TABLE, "ConsistentRead": True, **kw}
    while True:
        page = ddb.scan(**kw)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def stint_created_ms(ddb, batch_id: str) -> list[int]:
    """created_at of the batch's machine records (`#machine#{batch}#...`)."""
    items = _scan(ddb, FilterExpression="begins_with(batch_id, :p)",
                  ExpressionAttributeValues={":p": {"S": f"#machine#{batch_id}#"}})
    return [int(float(i["created_at"]["N"])) for i in items if "N" in i.get("created_at", {})]


def standing_states(ddb) -> list[str]:
    items = _scan(ddb, FilterExpression="begins_with(batch_id, :p)",
                  ExpressionAttributeValues={":p": {"S": "#standing#"}})
    return [i["state"]["S"] for i in items if "state" in i]


def wait_settled(ddb, timeout_s: float = 60.0) -> int:
    """Until every standing machine is stopped or gone (the warm-up's end stops them); how
    many are stopped."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = standing_states(ddb)
        if all(s in ("stopped", "gone") for s in states) or time.monotonic() > deadline:
            return states.count("stopped")
        time.sleep(0.5)


def run(spec: StandingSpec, console: Console, timeout_s: float = 900.0) -> StandingResult:
    import requests

    from arke_local.endpoints import R2_BUCKET, Ports, runtime_dir
    from arke_local.stack import LocalStack, StackOptions

    result = StandingResult(spec)
    log_dir = runtime_dir() / "bench-scale-standing" / f"{spec.tasks}-{spec.standing}-{uuid.uuid4().hex[:6]}"
    stack = LocalStack(StackOptions(ports=Ports.free(), log_dir=log_dir, extra_env=standing_env(spec)))
    console.print(f"[bold]{spec.label}[/]: starting the stack (logs in {log_dir})")
    with stack:
        e = stack.endpoints
        s3 = _client("s3", e.aws, ORCHESTRATOR_KEY, pool=32)
        sqs = _client("sqs", e.aws, ORCHESTRATOR_KEY)
        ddb = _client("dynamodb", e.aws, OBSERVER_KEY)
        warm_id, batch_id = (f"bench_{kind}_{spec.tasks}_{uuid.uuid4().hex[:6]}" for kind in ("warm", "standing"))
        warm_files, files = upload(s3, R2_BUCKET, warm_id, spec.tasks), upload(s3, R2_BUCKET, batch_id, spec.tasks)
        started = time.monotonic()
        submit(s3, sqs, R2_BUCKET, warm_id, warm_files)
        warm_status = wait_done(ddb, warm_id, timeout_s)
        result.stopped_before = wait_settled(ddb)
        result.bound_s = bound_s(spec, result.stopped_before)
        result.warm_up_s = time.monotonic() - started
        console.print(f"  warm-up {warm_status} in {result.warm_up_s:.1f} s; {result.stopped_before} machines stopped")
        fly_before = requests.get(f"{e.fly}/_emulator/stats", timeout=10).json()
        ddb_before = requests.get(f"{e.aws}/_arke/dynamodb-requests", timeout=10).json()
        submitted = time.monotonic()
        submit(s3, sqs, R2_BUCKET, batch_id, files)
        result.status = wait_done(ddb, batch_id, timeout_s)
        result.submit_to_done_s = time.monotonic() - submitted
        ddb_after = requests.get(f"{e.aws}/_arke/dynamodb-requests", timeout=10).json()
        fly_after = requests.get(f"{e.fly}/_emulator/stats", timeout=10).json()
        for name, stat in (("machines_started", "starts_accepted"), ("machines_created", "creates_accepted"),
                           ("starts_refused", "starts_refused")):
            setattr(result, name, fly_after.get(stat, 0) - fly_before.get(stat, 0))
        result.ddb_by_operation = counts_delta(ddb_before, ddb_after, ORCHESTRATOR_KEY)
        result.ddb_requests = sum(result.ddb_by_operation.values())
        ended, result.tasks_completed, result.tasks_failed = task_ends(ddb, batch_id)
        result.makespan_s = makespan_s(stint_created_ms(ddb, batch_id), ended)
    return result


def results_table(results: list[StandingResult]) -> Table:
    table = Table(title="Standing pool: local stack, the measured batch starts stopped machines")
    for name in ("run", "status", "stopped", "makespan s", "bound s", "makespan/bound", "submit->DONE s", "started",
                 "created", "refused starts", "DDB req/task", "warm-up s"):
        table.add_column(name, justify="left" if name in ("run", "status") else "right")
    for r in results:
        table.add_row(r.spec.label, r.status, str(r.stopped_before), _f(r.makespan_s), _f(r.bound_s),
                      "-" if r.ratio is None else f"{r.ratio:.2f}x", _f(r.submit_to_done_s), str(r.machines_started),
                      str(r.machines_created), str(r.starts_refused), f"{r.ddb_requests / r.spec.tasks:.1f}",
                      _f(r.warm_up_s))
    return table


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def write_json(results: list[StandingResult], directory: Path = RESULTS_DIR) -> Path:
    now = datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"scale-standing-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps({"at": now.isoformat(timespec="seconds"),
                                "runs": [r.as_json() for r in results]}, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_standing", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="tasks per batch (repeatable; default 2000)")
    parser.add_argument("--standing", type=int, default=300, help="stopped machines the warm-up leaves")
    parser.add_argument("--warm-rate", type=float, default=50.0, help="creations a second during the warm-up")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="an orchestrator or emulator knob over the benchmark's (repeatable)")
    args = parser.parse_args(argv)
    console = Console() if Console().is_terminal else Console(width=200)
    extra = parse_env(args.env)
    specs = [StandingSpec(n, min(args.standing, n), warm_rate=args.warm_rate, extra_env=extra)
             for n in (args.n or [2000])]
    results = [run(spec, console) for spec in specs]
    console.print(results_table(results))
    for r in results:
        if r.machines_created:
            console.print(f"{r.spec.label}: {r.machines_created} machines were created, at the warm-up's rate")
    console.print(f"JSON: {write_json(results)}")
    return 0 if all(r.status == "DONE" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
