"""Scale benchmark (issue 10): one batch of N TIFFs through the whole local stack at Fly's
real create rate, in pool mode and in single mode, held against the makespan bound.

Run: `make bench-scale` (all runs), or `python -m bench.scale [--only-small] [--n N]
[--mode pool|single] [--env KEY=VALUE ...]`. Each run gets its own stack (moto, the Fly
emulator with synthetic machines, `chalice local`, the pump) on free ports, configured as
Fly is: 1 create/s, burst 3, in the orchestrator and the emulator alike; every machine
boots in 5 s (the emulator's boot delay fault knob) and spends 3 s per task (single mode:
the synthetic machine's work time; pool mode: its per-task time). Everything else is the
orchestrator's production default (e.g. ALARM_DELAY_TIFF_CONVERSION), unless --env says so.

What it measures, and how:
- makespan: first machine created (the emulator's `created_at`) -> last task ended (the
  tasks' `ended_at`): the interval the bound describes. Also submit -> DONE as the harness
  saw it (upload excluded; includes intake, the pump's first pass and delivery's wait).
- bound: `chalicelib.pool_sizing.makespan_bound_s`; ratio = makespan / bound. Single mode
  also prints what a create-limited run must take, about N/r (the harness's own check).
- machines created, 429s: the emulator's counters (`/_emulator/stats`), before/after.
- peak pool: the largest `machines_active` (machines not destroyed) in a 1 s poll.
- DynamoDB requests per task: counted by the stack's moto server per signer
  (`/_arke/dynamodb-requests`): the orchestrator's processes sign with the stack's key,
  the harness reads under its own, so only the orchestrator's requests (API, intake, tick,
  from submit to DONE, idle polls included) are divided by N.
- pass interval: mean and max seconds from one pass's end to the next's, from the metric line
  each pass emits at its end (with a timestamp) in the pump's log: is the tick running passes
  often? (A pass that spends its slice creating, then waits ALARM_DELAY, shows slice + delay.)

Results print as a rich table and go to bench/results/scale-<UTC time>.json (committed:
the closing note of issue 10 quotes them, and a later run is compared with an earlier one).
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ORCHESTRATOR_KEY = "testing"  # the stack's AWS access key (arke_local.endpoints)
OBSERVER_KEY = "bench-observer"  # the harness's own DynamoDB reads, kept out of the count
BATCHES_TABLE = "arke-preprocess-batches"
TASKS_TABLE = "arke-preprocess-tasks"
MODES = ("pool", "single")
UPLOAD_THREADS = 32


@dataclass(frozen=True)
class RunSpec:
    """One benchmark run: N tasks in one mode, on Fly's real numbers."""

    mode: str
    tasks: int
    task_s: float = 3.0
    boot_s: float = 5.0
    create_rate: float = 1.0
    burst: int = 3
    per_machine: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.mode} N={self.tasks}"


@dataclass
class RunResult:
    spec: RunSpec
    batch_id: str = ""
    status: str = ""
    upload_s: float = 0.0
    submit_to_done_s: float | None = None
    makespan_s: float | None = None  # first machine created -> last task ended
    bound_s: float | None = None
    expected_single_s: float | None = None  # ~N/r: what a create-limited run must take
    machines_created: int = 0
    peak_pool: int = 0
    rate_limited_429: int = 0
    injected_429: int = 0
    ddb_requests: int = 0
    ddb_by_operation: dict[str, int] = field(default_factory=dict)
    tasks_completed: int = 0
    tasks_failed: int = 0
    pass_gap_mean_s: float | None = None  # between the batch's passes (the pump's log)
    pass_gap_max_s: float | None = None
    pool_samples: list[int] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.makespan_s is None or not self.bound_s:
            return None
        return self.makespan_s / self.bound_s

    @property
    def ddb_per_task(self) -> float:
        return self.ddb_requests / self.spec.tasks if self.spec.tasks else 0.0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["ddb_requests_per_task"] = self.ddb_per_task
        return data


# --- configuration (pure) ------------------------------------------------------------------

def stack_env(spec: RunSpec) -> dict[str, str]:
    """The orchestrator's and the emulator's knobs for one run (over the stack's own)."""
    from arke_local.fly_emulator import SYNTHETIC, WORKER_IMAGE

    env = {
        "MACHINE_MODE": spec.mode,
        "FLY_CREATE_RATE": str(spec.create_rate),
        "FLY_CREATE_BURST": str(spec.burst),
        "FLY_EMULATOR_CREATE_RATE": str(spec.create_rate),
        "FLY_EMULATOR_CREATE_BURST": str(spec.burst),
        "FLY_EMULATOR_IMAGES": json.dumps({WORKER_IMAGE: SYNTHETIC}),
        "FLY_EMULATOR_FAULT_BOOT_DELAY_S": str(spec.boot_s),
        "FLY_EMULATOR_MAX_MACHINES": str(max(1000, 2 * spec.tasks)),
        "WORKER_CONCURRENCY": str(spec.per_machine),
    }
    if spec.mode == "single":
        env["FLY_EMULATOR_SYNTHETIC_WORK_S"] = str(spec.task_s)
    else:
        env["FLY_EMULATOR_SYNTHETIC_TASK_S"] = str(spec.task_s)
    env.update(spec.extra_env)
    return env


def expected_single_s(spec: RunSpec) -> float:
    """What one machine per task must take at the create rate: the burst, then one create
    every 1/r s, and the last machine's boot and task: about N/r."""
    return max(0, spec.tasks - spec.burst) / spec.create_rate + spec.boot_s + spec.task_s


def default_timeout_s(spec: RunSpec, bound: float) -> float:
    """How long a run may take before the harness gives up: well past what it should take
    (single: 3x the create-limited time; pool: 4x the bound), and at least 10 minutes."""
    expected = 3 * expected_single_s(spec) if spec.mode == "single" else 4 * bound
    return max(600.0, expected)


def bound_s(spec: RunSpec) -> float:
    """The makespan bound of issue 10, from the one function the pool sizing uses too."""
    from chalicelib.pool_sizing import makespan_bound_s

    return makespan_bound_s(spec.tasks, spec.task_s, spec.create_rate, spec.boot_s,
                            per_machine=spec.per_machine, burst=spec.burst)


def runs_for(n: int | None, mode: str | None, only_small: bool, extra_env: dict[str, str]) -> list[RunSpec]:
    """The runs to do: by default 10,000 in pool mode, then 300 in both modes."""
    if n is not None:
        modes = [mode] if mode else list(MODES)
        return [RunSpec(m, n, extra_env=extra_env) for m in modes]
    small = [RunSpec(m, 300, extra_env=extra_env) for m in MODES if mode in (None, m)]
    large = [] if only_small or mode == "single" else [RunSpec("pool", 10_000, extra_env=extra_env)]
    return large + small


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"--env wants KEY=VALUE, not {pair!r}")
        env[name] = value
    return env


# --- reading what happened (pure) ----------------------------------------------------------

def iso_epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def makespan_s(machines: list[dict], task_ended_ms: list[int]) -> float | None:
    """First machine created -> last task ended, in seconds (None when either is missing)."""
    created = [iso_epoch(m["created_at"]) for m in machines if m.get("created_at")]
    if not created or not task_ended_ms:
        return None
    return max(task_ended_ms) / 1000 - min(created)


def pass_gaps_s(pump_log: str, batch_id: str) -> tuple[float, float] | None:
    """(mean, max) seconds between the batch's passes, from the metric line each pass emits
    (CloudWatch EMF `MachinesSpawned`, with its timestamp) in the pump's log."""
    stamps = []
    for line in pump_log.splitlines():
        if not line.startswith('{"_aws"') or '"MachinesSpawned"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("batch_id") == batch_id:
            stamps.append(record["_aws"]["Timestamp"] / 1000)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return (sum(gaps) / len(gaps), max(gaps)) if gaps else None


def counts_delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], key: str) -> dict[str, int]:
    old, new = before.get(key, {}), after.get(key, {})
    return {op: n - old.get(op, 0) for op, n in sorted(new.items()) if n - old.get(op, 0)}


# --- output (pure) -------------------------------------------------------------------------

def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def results_table(results: list[RunResult]) -> Table:
    table = Table(title="Scale benchmark: local stack, Fly's create rate (synthetic machines)")
    for name in ("run", "status", "makespan s", "bound s", "makespan/bound", "N/r check s",
                 "submit->DONE s", "machines", "peak pool", "429s", "DDB req/task", "pass every s (max)"):
        table.add_column(name, justify="left" if name in ("run", "status") else "right")
    for r in results:
        table.add_row(
            r.spec.label, r.status, _s(r.makespan_s), _s(r.bound_s), _x(r.ratio),
            _s(r.expected_single_s), _s(r.submit_to_done_s), str(r.machines_created), str(r.peak_pool),
            str(r.rate_limited_429 + r.injected_429), f"{r.ddb_per_task:.1f}",
            "-" if r.pass_gap_mean_s is None else f"{r.pass_gap_mean_s:.1f} ({r.pass_gap_max_s:.1f})",
        )
    return table


def speedups(results: list[RunResult]) -> list[str]:
    """One line per size run in both modes: single's makespan / pool's."""
    lines = []
    by_size: dict[int, dict[str, RunResult]] = {}
    for r in results:
        by_size.setdefault(r.spec.tasks, {})[r.spec.mode] = r
    for size, modes in sorted(by_size.items()):
        pool, single = modes.get("pool"), modes.get("single")
        if pool and single and pool.makespan_s and single.makespan_s:
            lines.append(f"N={size}: pool {pool.makespan_s:,.0f} s vs single {single.makespan_s:,.0f} s: "
                         f"speed-up {single.makespan_s / pool.makespan_s:.1f}x")
    return lines


def write_json(results: list[RunResult], directory: Path = RESULTS_DIR, now: datetime | None = None) -> Path:
    now = now or datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"scale-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps({"at": now.isoformat(timespec="seconds"),
                                "runs": [r.as_json() for r in results]}, indent=1) + "\n")
    return path


# --- doing (the stack) ---------------------------------------------------------------------

def tiny_tiff() -> bytes:
    """A valid 8x8 RGB TIFF: its header reads as a real one (single mode sizes machines
    from it); synthetic machines never read the pixels."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 60, 30)).save(buf, "TIFF")
    return buf.getvalue()


def upload(s3, bucket: str, batch_id: str, count: int) -> list:
    """N tiny TIFFs at staging/{batch}/scans/page_NNNNN.tif, from UPLOAD_THREADS threads."""
    from arke_local.submission import LocalFile

    body = tiny_tiff()
    files = [LocalFile(f"scans/page_{i:05d}.tif", len(body)) for i in range(count)]

    def put(f: LocalFile) -> None:
        s3.put_object(Bucket=bucket, Key=f"staging/{batch_id}/{f.relpath}", Body=body, ContentType="image/tiff")

    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        list(pool.map(put, files))
    return files


def submit(s3, sqs, bucket: str, batch_id: str, files: list) -> None:
    """The ingest service's message (a manifest in R2 when large), onto the job queue."""
    from arke_local.endpoints import QUEUE_NAME
    from arke_local.submission import build_message

    message, manifest = build_message(batch_id, files, manifest="auto")
    if manifest is not None:
        s3.put_object(Bucket=bucket, Key=message["manifest_r2_key"], Body=json.dumps(manifest).encode(),
                      ContentType="application/json")
    url = sqs.get_queue_url(QueueName=QUEUE_NAME)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(message))


class PoolSampler:
    """Polls the emulator's stats once a second for the number of live machines."""

    def __init__(self, fly_url: str, interval_s: float = 1.0):
        self.fly_url, self.interval_s = fly_url, interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pool-sampler", daemon=True)

    def _loop(self) -> None:
        import requests

        while not self._stop.is_set():
            try:
                stats = requests.get(f"{self.fly_url}/_emulator/stats", timeout=5).json()
                self.samples.append(int(stats.get("machines_active", 0)))
            except (requests.RequestException, ValueError):
                pass
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PoolSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _client(service: str, endpoint: str, key: str, pool: int = 10):
    import boto3
    from botocore.config import Config

    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key="testing",
                        config=Config(max_pool_connections=pool, retries={"max_attempts": 5, "mode": "standard"}))


def wait_done(ddb, batch_id: str, timeout_s: float) -> str:
    """Poll the batch's status (a GetItem under the observer's key) until DONE or ERROR."""
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        item = ddb.get_item(TableName=BATCHES_TABLE, Key={"batch_id": {"S": batch_id}}).get("Item")
        status = item["status"]["S"] if item else ""
        if status in ("DONE", "ERROR"):
            return status
        time.sleep(0.5)
    return status or "TIMEOUT"


def task_ends(ddb, batch_id: str) -> tuple[list[int], int, int]:
    """(ended_at of every ended task, completed, failed), by a paginated query of each of
    the batch's shard keys (docs/scale.md)."""
    from chalicelib.models import batch_shard_keys

    ended, completed, failed = [], 0, 0
    for key in batch_shard_keys(batch_id):
        kw: dict[str, Any] = {"TableName": TASKS_TABLE, "KeyConditionExpression": "shard_key = :k",
                              "ExpressionAttributeValues": {":k": {"S": key}}}
        while True:
            page = ddb.query(**kw)
            for item in page["Items"]:
                status = item.get("status", {}).get("S")
                completed += status == "completed"
                failed += status == "failed"
                if "N" in item.get("ended_at", {}):
                    ended.append(int(float(item["ended_at"]["N"])))
            if "LastEvaluatedKey" not in page:
                break
            kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return ended, completed, failed


def run_one(spec: RunSpec, console: Console, timeout_s: float | None = None) -> RunResult:
    """Start a stack for `spec`, run its batch to the end, read the figures, stop the stack."""
    import requests

    from arke_local.endpoints import LOCAL_SECRETS, R2_BUCKET, Ports, runtime_dir
    from arke_local.stack import LocalStack, StackOptions

    result = RunResult(spec)
    result.bound_s = bound_s(spec)
    if spec.mode == "single":
        result.expected_single_s = expected_single_s(spec)
    log_dir = runtime_dir() / "bench-scale" / f"{spec.mode}-{spec.tasks}-{uuid.uuid4().hex[:6]}"
    stack = LocalStack(StackOptions(ports=Ports.free(), log_dir=log_dir, extra_env=stack_env(spec)))
    console.print(f"[bold]{spec.label}[/]: starting the stack (logs in {log_dir})")
    with stack:
        e = stack.endpoints
        s3 = _client("s3", e.aws, ORCHESTRATOR_KEY, pool=UPLOAD_THREADS)
        ddb = _client("dynamodb", e.aws, OBSERVER_KEY)
        batch_id = result.batch_id = f"bench_{spec.mode}_{spec.tasks}_{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        files = upload(s3, R2_BUCKET, batch_id, spec.tasks)
        result.upload_s = time.monotonic() - started
        console.print(f"  {spec.tasks} TIFFs uploaded in {result.upload_s:.1f} s")
        fly_before = requests.get(f"{e.fly}/_emulator/stats", timeout=10).json()
        ddb_before = requests.get(f"{e.aws}/_arke/dynamodb-requests", timeout=10).json()
        submitted = time.monotonic()
        with PoolSampler(e.fly) as sampler:
            submit(s3, _client("sqs", e.aws, ORCHESTRATOR_KEY), R2_BUCKET, batch_id, files)
            limit = timeout_s or default_timeout_s(spec, result.bound_s)
            result.status = wait_done(ddb, batch_id, limit)
            result.submit_to_done_s = time.monotonic() - submitted
        ddb_after = requests.get(f"{e.aws}/_arke/dynamodb-requests", timeout=10).json()
        fly_after = requests.get(f"{e.fly}/_emulator/stats", timeout=10).json()
        result.ddb_by_operation = counts_delta(ddb_before, ddb_after, ORCHESTRATOR_KEY)
        result.ddb_requests = sum(result.ddb_by_operation.values())
        result.pool_samples = sampler.samples
        result.peak_pool = max(sampler.samples, default=0)
        for name in ("rate_limited_429", "injected_429"):
            setattr(result, name, fly_after.get(name, 0) - fly_before.get(name, 0))
        result.machines_created = fly_after["creates_accepted"] - fly_before["creates_accepted"]
        machines = requests.get(f"{e.fly}/v1/apps/arke-tiff-worker/machines", params={"include_deleted": "true"},
                                headers={"Authorization": f"Bearer {LOCAL_SECRETS['FLY_API_TOKEN']}"},
                                timeout=60).json()
        ended, result.tasks_completed, result.tasks_failed = task_ends(ddb, batch_id)
        result.makespan_s = makespan_s(machines, ended)
    pump_log = log_dir / "pump.log"
    if pump_log.exists():
        gaps = pass_gaps_s(pump_log.read_text(errors="replace"), result.batch_id)
        if gaps is not None:
            result.pass_gap_mean_s, result.pass_gap_max_s = gaps
    console.print(f"  {result.status}: makespan {_s(result.makespan_s)} s, {result.machines_created} machines")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="one size only (in --mode, or both modes)")
    parser.add_argument("--mode", choices=MODES, help="one mode only")
    parser.add_argument("--only-small", action="store_true", help="skip the 10,000-task pool run")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="an orchestrator or emulator knob over the benchmark's (repeatable)")
    parser.add_argument("--timeout-s", type=float, help="per run (default: default_timeout_s)")
    args = parser.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a log or a pipe: the table's columns unwrapped
    specs = runs_for(args.n, args.mode, args.only_small, parse_env(args.env))
    results = [run_one(spec, console, args.timeout_s) for spec in specs]
    console.print(results_table(results))
    for line in speedups(results):
        console.print(line)
    for r in results:
        if r.expected_single_s is not None and r.makespan_s:
            console.print(f"{r.spec.label}: makespan {r.makespan_s:,.0f} s against ~N/r "
                          f"{r.expected_single_s:,.0f} s ({r.makespan_s / r.expected_single_s:.2f}x): "
                          "the harness's check")
    console.print(f"JSON: {write_json(results)}")
    return 0 if all(r.status == "DONE" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
