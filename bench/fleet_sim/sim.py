"""One fleet simulation run: the Chalice app's real handlers (intake, tick, pull, heartbeat,
callback) and the real store on in-process moto, with the clock, Fly's transport and the
machines simulated as events on a virtual clock (loop.py).

What is simulated, and where it meets the real code:
- the clock, sleeps, thread pools, locks and uuids: seams.py, found by type in chalicelib;
- Fly: a `requests` adapter mounted on the session the orchestrator's own FlyClient uses
  (fly_api.py), over a model of machines and Fly's limits (fly_model.py);
- the machines' workers: worker.py, which reach the app through the API model (api.py);
- DynamoDB's latency and per-partition throughput: botocore hooks on the orchestrator's
  clients around moto (dynamo.py, capacity.py);
- the ingest service's final-callback endpoint: a 200 at the transport boundary;
- the TIFFs' memory (`Scenario.large_fraction`, `oom_fraction`): a seeded share of each
  batch's TIFFs needs more than the pool's smallest machine, as its header says (the
  worker answers `needs_memory` on a smaller machine) or only once converting (it ends
  `out_of_memory` there); docs/pool.md "Memory tiers".

Deterministic: one seed draws every fault, uuid and the global `random` the orchestrator
uses (its candidate shuffles); two runs of one seed give one trace.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import BaseAdapter

from .capacity import RCU_PER_PARTITION, WCU_PER_PARTITION, PartitionLimits, PartitionStats
from .clock import VirtualClock
from .cpu import Cores
from .dynamo import DynamoModel
from .fly_api import FlyAdapter, FlyApi, response_for
from .fly_model import FlyFaults, FlyModel, SimMachine
from .loop import Loop, Slot
from .profiles import PROFILES
from .seams import RealSleepGuard, Seams
from .worker import ContractWorker, PoolWorker, TiffNeed, WorkerFaults, WorkerSpec

ORCHESTRATOR_URL = "https://orchestrator.sim"
FLY_URL = "https://fly.sim"
INGEST_URL = "https://ingest.sim"
BUCKET = "arke-staging"

BASE_ENV = {
    "STAGE": "dev", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing", "ORCHESTRATOR_URL": ORCHESTRATOR_URL,
    "FLY_API_HOSTNAME": FLY_URL, "WORKER_URL": INGEST_URL, "FLY_API_TOKEN": "fly-sim-token",
    "CALLBACK_SIGNING_KEY": "callback-sim-key", "ADMIN_TOKEN": "admin-sim-token",
    "R2_ACCOUNT_ID": "acct", "R2_ACCESS_KEY_ID": "r2-key-id", "R2_SECRET_ACCESS_KEY": "r2-secret",
    "MACHINE_MODE": "pool",
    "MOTO_S3_CUSTOM_ENDPOINTS": "https://acct.r2.cloudflarestorage.com",  # R2's account endpoint, served by moto
}


@dataclass(frozen=True)
class Faults:
    """The emulator's faults, as rates. `ON` is what the safety runs use."""

    worker: WorkerFaults = WorkerFaults()
    fly: FlyFaults = FlyFaults()


OFF = Faults()
ON = Faults(
    WorkerFaults(crash_mid_task_rate=0.01, hang_rate=0.005, crash_before_callback_rate=0.005,
                 duplicate_callback_rate=0.02, late_callback_rate=0.01),
    FlyFaults(rate_429=0.05, start_failure_rate=0.02),
)


@dataclass(frozen=True)
class Scenario:
    """One run: N tasks of `task_s`, cold (the pool is created) or on a standing pool of
    `standing` stopped machines made by a warm-up batch through the same code."""

    tasks: int
    seed: int = 1
    standing: int = 0
    task_s: float = 3.0
    per_machine: int = 1
    profile: str = "aws"
    faults: Faults = OFF
    wcu: float = WCU_PER_PARTITION
    rcu: float = RCU_PER_PARTITION
    create_rate: float = 1.0  # Fly's, and the orchestrator's FLY_CREATE_RATE
    create_burst: int = 3
    warm_rate: float = 50.0  # creations a second during the warm-up (bench.scale_standing's)
    warm_task_s: float = 20.0  # long enough that the warm-up's sizing wants `standing` machines
    env: tuple[tuple[str, str], ...] = ()  # KEY=VALUE over the orchestrator's settings (hashable)
    limit_s: float = 4 * 3600.0  # virtual seconds a batch may take before the run gives up
    # Memory tiers (docs/pool.md): of each batch's TIFFs (the warm-up's too), round(fraction x
    # count), drawn by the seed, whose header needs one of `large_mb` (drawn per TIFF) for full
    # quality, more than POOL_MEMORY_MB; and round(oom_fraction x count) others whose header
    # fits the smallest machine but whose conversion takes `oom_mb` (out_of_memory below it).
    large_fraction: float = 0.0
    large_mb: tuple[int, ...] = (3500, 6000)
    oom_fraction: float = 0.0
    oom_mb: int = 3000

    @property
    def label(self) -> str:
        kind = f"standing {self.standing}" if self.standing else "cold"
        memory = ""
        if self.large_fraction:
            memory += f" large={self.large_fraction:g}@{'/'.join(map(str, self.large_mb))}"
        if self.oom_fraction:
            memory += f" oom={self.oom_fraction:g}@{self.oom_mb}"
        return f"N={self.tasks} {kind} seed={self.seed} {self.profile}{memory}"


@dataclass
class BatchOutcome:
    batch_id: str
    status: str = ""
    submitted_at: float = 0.0
    done_at: float | None = None
    first_machine_at: float | None = None  # the batch's first machine record (bench.scale_standing)
    last_ended_at: float | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    machines_created: int = 0
    machines_started: int = 0
    machines_by_memory: dict[int, dict[str, int]] = field(default_factory=dict)  # memory -> created/started
    memory_events: dict[str, int] = field(default_factory=dict)  # the workers' needs_memory / out_of_memory answers
    needs: dict[str, TiffNeed] = field(default_factory=dict)  # input key -> what that TIFF needs
    ddb_requests: int = 0
    ddb_by_operation: dict[str, int] = field(default_factory=dict)

    @property
    def submit_to_done_s(self) -> float | None:
        return None if self.done_at is None else self.done_at - self.submitted_at

    @property
    def makespan_s(self) -> float | None:
        """First machine record -> last task ended, as bench.scale and scale_standing measure it."""
        if self.first_machine_at is None or self.last_ended_at is None:
            return None
        return self.last_ended_at - self.first_machine_at


class IngestAdapter(BaseAdapter):
    """The ingest service's enqueue-processed endpoint: 200 for every final callback."""

    def __init__(self, sim: Simulation) -> None:
        super().__init__()
        self.sim = sim

    def send(self, request: requests.PreparedRequest, **_: Any) -> requests.Response:
        self.sim.loop.sleep(0.05)
        self.sim.record("delivered", url=request.url)
        return response_for(request, 200, {"ok": True})

    def close(self) -> None:
        pass


class Simulation:
    """Wires the real app to the models; `run()` plays the scenario and returns outcomes."""

    def __init__(self, scenario: Scenario) -> None:
        import app as app_module
        from chalicelib import services as services_module

        self.scenario = sc = scenario
        self.profile = PROFILES[sc.profile]
        self.clock = VirtualClock()
        self.app = app_module.app
        self.loop = Loop(self.clock, [Slot(services_module, "_services"), Slot(self.app, "current_request")])
        self.trace: list[tuple] = []
        self.r2_puts: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
        self.callbacks: Counter = Counter()  # (task, status) -> answers
        self.needs: dict[str, TiffNeed] = {}  # input key -> what the TIFF needs (Scenario.large_fraction)
        self.memory_events: Counter = Counter()  # needs_memory / out_of_memory answers
        self.limits = PartitionLimits(sc.wcu, sc.rcu)
        self.dynamo = DynamoModel(self.loop, self.profile.dynamo, self.limits)
        spec = self.profile.fly
        self.fly = FlyModel(self.loop, spec, sc.faults.fly, sc.seed, self._worker, self.record)
        self.fly_api = FlyApi(self.fly)
        self.worker_spec = WorkerSpec()
        self.services: list[Any] = []
        self.env = dict(BASE_ENV, FLY_CREATE_RATE=str(sc.create_rate), FLY_CREATE_BURST=str(sc.create_burst),
                        WORKER_CONCURRENCY=str(sc.per_machine), **dict(sc.env))
        self.api: Any = None
        self._ticks = 0
        self.progress = bool(os.environ.get("FLEET_SIM_PROGRESS"))  # a line every 30 virtual s

    # ---- what the models report back ----------------------------------------------------

    def record(self, kind: str, **fields: Any) -> None:
        self.trace.append((round(self.loop.now, 6), kind, tuple(sorted(fields.items()))))

    def r2_put(self, key: str, task_id: str, attempt: int, machine: str) -> None:
        self.r2_puts[key].append((task_id, attempt, machine))

    def callback_answered(self, task_id: str, status: int, body: Any) -> None:
        self.callbacks[(task_id, status)] += 1

    def tiff_need(self, input_key: Any) -> TiffNeed | None:
        return self.needs.get(str(input_key)) if self.needs else None

    def memory_event(self, kind: str, **fields: Any) -> None:
        """A worker answered `needs_memory` or is ending `out_of_memory` (worker.py)."""
        self.memory_events[kind] += 1
        self.record(kind, **fields)

    def draw_needs(self, batch_id: str, keys: list[str]) -> dict[str, TiffNeed]:
        """Which of a batch's TIFFs need more memory (Scenario.large_fraction, oom_fraction),
        drawn by the seed and the batch alone."""
        sc = self.scenario
        large, oom = round(sc.large_fraction * len(keys)), round(sc.oom_fraction * len(keys))
        if not large and not oom:
            return {}
        rng = random.Random(f"needs:{sc.seed}:{batch_id}")
        chosen = rng.sample(keys, min(len(keys), large + oom))
        needs = {key: TiffNeed(header_mb=rng.choice(sc.large_mb)) for key in chosen[:large]}
        needs.update({key: TiffNeed(oom_mb=sc.oom_mb) for key in chosen[large:]})
        return needs

    def trace_digest(self) -> str:
        return hashlib.sha256(repr(self.trace).encode()).hexdigest()[:16]

    def _worker(self, machine: SimMachine) -> PoolWorker:
        env = machine.config.get("env", {})
        if env.get("TASK_ID") and env.get("WORKER_MODE") != "pool":  # a single-mode machine (a large task)
            return ContractWorker(self, machine, self.worker_spec, self.scenario.faults.worker)
        return PoolWorker(self, machine, self.worker_spec, self.scenario.faults.worker)

    # ---- the orchestrator's processes ---------------------------------------------------

    def _settings(self) -> Any:
        from chalicelib.settings import Settings

        return Settings.from_env(self.env)

    def new_process(self) -> dict[Slot, Any]:
        """A Lambda container's (or the one API process's) Services, as its cold start
        builds them, with Fly and ingest reached through the simulated transport."""
        from chalicelib.ddb_metrics import dynamodb_clients
        from chalicelib.fly import FlyClient
        from chalicelib.services import build_services

        settings = self._settings()
        services = build_services(settings)
        session = requests.Session()
        session.mount(FLY_URL, FlyAdapter(self.loop, self.fly_api, self.profile.fly.api_latency_s))
        services._fly = FlyClient(settings, self.env["FLY_API_TOKEN"], session=session)
        services.http.mount(INGEST_URL, IngestAdapter(self))
        self.dynamo.attach(dynamodb_clients(settings))
        self.services.append(services)
        return {self.loop.slots[0]: services, self.loop.slots[1]: None}

    def _tick(self, values: dict[Slot, Any]) -> None:
        """The scheduled tick, invoked again as soon as it returns (the pump's way; EventBridge
        with reserved concurrency 1 and a 75 s timeout is the same within a minute)."""
        self._ticks += 1
        ends = self.loop.now + 75.0
        clock = self.clock

        class Context:
            aws_request_id = f"tick-{self._ticks}"
            function_name = "tick"

            @staticmethod
            def get_remaining_time_in_millis() -> int:
                return max(0, int((ends - clock.now) * 1000))

        event = {"version": "0", "id": f"tick-{self._ticks}", "detail-type": "Scheduled Event",
                 "source": "aws.events", "account": "123456789012", "time": "2027-01-15T08:00:00Z",
                 "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:123456789012:rule/tick"],
                 "detail": {}}
        self.loop.spawn("tick", lambda: self.app_module.tick(event, Context()), values,
                        on_done=lambda actor: self._tick_done(actor, values))

    def _tick_done(self, actor: Any, values: dict[Slot, Any]) -> None:
        if actor.error is not None:
            self.api.errors.append(actor.error)
        if not self._stopped:
            self.loop.after(0.05, self._tick, actor.values)

    def submit(self, batch_id: str, count: int, prefix: str) -> BatchOutcome:
        """The ingest service's queue message (a manifest in R2 when large), taken in by
        `app.intake` in its own invocation."""
        import boto3

        from arke_local.submission import LocalFile, build_message

        files = [LocalFile(f"{prefix}/page_{i:06d}.tif", 4096) for i in range(count)]
        message, manifest = build_message(batch_id, files, manifest="auto")
        needs = self.draw_needs(batch_id, [f"{message['r2_prefix']}{f.relpath}" for f in files])
        self.needs.update(needs)
        if manifest is not None:
            boto3.client("s3", region_name="us-east-1").put_object(
                Bucket=BUCKET, Key=message["manifest_r2_key"], Body=json.dumps(manifest).encode())
        body = json.dumps(message)
        event = {"Records": [{"messageId": f"msg-{batch_id}", "receiptHandle": "rh", "body": body,
                              "attributes": {}, "messageAttributes": {}, "md5OfBody": "",
                              "eventSource": "aws:sqs", "awsRegion": "us-east-1",
                              "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:arke-preprocess-jobs"}]}
        outcome = BatchOutcome(batch_id, submitted_at=self.loop.now, needs=needs)
        self.record("submit", batch=batch_id, tasks=count)

        def done(actor: Any) -> None:
            if actor.error is not None:
                self.api.errors.append(actor.error)

        self.loop.spawn("intake", lambda: self.app_module.intake(event, None), self.new_process(), on_done=done)
        return outcome

    # ---- running ------------------------------------------------------------------------

    def run(self) -> list[BatchOutcome]:
        """The warm-up batch (standing scenario) and the measured batch, in one world."""
        import app as app_module
        from chalicelib import secrets
        from chalicelib import settings as settings_module
        from chalicelib.services import use_services

        self.app_module = app_module
        sc = self.scenario
        if sc.standing:
            rate = str(sc.warm_rate)
            self.env.update(POOL_STANDING="true", MAX_POOL_MACHINES_PER_BATCH=str(sc.standing),
                            FLY_CREATE_RATE=rate, FLY_CREATE_BURST="10")
            # S, unless the scenario's env says more (room for larger tiers' standing machines)
            self.env.setdefault("POOL_MAX_MACHINES", str(max(sc.standing, 1)))
            self.fly.create_rate, self.fly.create_burst = sc.warm_rate, 10
        else:
            self.env.setdefault("MAX_POOL_MACHINES_PER_BATCH", self.env.get("MAX_POOL_MACHINES_PER_BATCH", "300"))
            self.fly.create_rate, self.fly.create_burst = sc.create_rate, sc.create_burst
        saved_env = dict(os.environ)
        os.environ.update(self.env)
        settings_module.get_settings.cache_clear()
        secrets.forget_secrets()
        random.seed(f"global:{sc.seed}")
        outcomes: list[BatchOutcome] = []
        with _quiet(), _moto():
            self._prepare()
            seams = Seams(self.clock, self.loop, sc.seed).install()
            guard = RealSleepGuard().install()
            try:
                self.api = _api(self)
                if self.profile.api.cores:
                    self.api.cores = self.dynamo.cores = Cores(self.profile.api.cores)
                self._stopped = False
                self._tick(self.new_process())
                if sc.standing:
                    self.worker_spec = WorkerSpec(task_s=_const(sc.warm_task_s))
                    warm = self._play("batch_warm", 2 * sc.standing, "warm")
                    outcomes.append(warm)
                    self._settle()
                self.worker_spec = WorkerSpec(task_s=_const(sc.task_s))
                outcomes.append(self._play("batch_measured", sc.tasks, "scans"))
                self._stopped = True
            finally:
                guard.uninstall()
                seams.uninstall()
                use_services(None)
                os.environ.clear()
                os.environ.update(saved_env)
                settings_module.get_settings.cache_clear()
                secrets.forget_secrets()
        return outcomes

    def _prepare(self) -> None:
        import boto3

        from arke_local.moto_server import serialize_dynamodb, trim_per_request_costs
        from chalicelib.models import ensure_tables

        serialize_dynamodb()
        trim_per_request_costs()
        _share_botocore_loader()
        ensure_tables(self._settings())
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)

    def _play(self, batch_id: str, count: int, prefix: str) -> BatchOutcome:
        before = (Counter(self.dynamo.requests), self.fly.counts.get("created", 0), self.fly.counts.get("started", 0),
                  dict(self.fly.by_memory), Counter(self.memory_events), self.fly.billed_by_memory())
        # what the report says is the last batch's (the measured one): partitions, bills, API
        self.limits.writes, self.limits.reads = PartitionStats(), PartitionStats()
        self.measured_writes, self.measured_reads = self.limits.writes, self.limits.reads
        billed, api = self.fly.billed(), (self.api.busy_s, self.api.requests)
        outcome = self.submit(batch_id, count, prefix)
        deadline = self.loop.now + self.scenario.limit_s
        poll = {"next": self.loop.now}

        def finished() -> bool:
            if self.api.errors:
                raise self.api.errors[0]
            if self.loop.now < poll["next"]:
                return False
            poll["next"] = self.loop.now + 0.5
            if self.progress and int(self.loop.now * 2) % 60 == 0:  # every 30 virtual seconds
                done = sum(c for (_, status), c in self.callbacks.items() if status == 200)
                print(f"  [{batch_id}] t={self.loop.now:,.0f} s virtual, {done:,} callbacks answered 200, "
                      f"{self.loop.events_run:,} events", file=sys.__stderr__, flush=True)
            status = _batch_status(batch_id)
            if status in ("DONE", "ERROR"):
                outcome.status, outcome.done_at = status, self.loop.now
                return True
            return False

        if not self.loop.run(finished, deadline):
            outcome.status = _batch_status(batch_id) or "TIMEOUT"
        requests_now = Counter(self.dynamo.requests)
        requests_now.subtract(before[0])
        outcome.ddb_by_operation = {k: v for k, v in sorted(requests_now.items()) if v}
        outcome.ddb_requests = sum(outcome.ddb_by_operation.values())
        outcome.machines_created = self.fly.counts.get("created", 0) - before[1]
        outcome.machines_started = self.fly.counts.get("started", 0) - before[2]
        for (what, memory_mb), machines in sorted(self.fly.by_memory.items()):
            if machines - before[3].get((what, memory_mb), 0):
                outcome.machines_by_memory.setdefault(memory_mb, {"created": 0, "started": 0})[what] = (
                    machines - before[3].get((what, memory_mb), 0))
        events = Counter(self.memory_events)
        events.subtract(before[4])
        outcome.memory_events = {k: v for k, v in sorted(events.items()) if v}
        running, stopped = self.fly.billed()
        self.measured_billed = (running - billed[0], stopped - billed[1])
        self.measured_billed_by_memory = {
            m: (r - before[5].get(m, (0.0, 0.0))[0], st - before[5].get(m, (0.0, 0.0))[1])
            for m, (r, st) in sorted(self.fly.billed_by_memory().items())}
        self.measured_api = (self.api.busy_s - api[0], self.api.requests - api[1])
        _read_outcome(outcome)
        self.last_outcome = outcome
        self.record("batch_end", batch=batch_id, status=outcome.status)
        return outcome

    def _settle(self, limit_s: float = 120.0) -> None:
        """After the warm-up: until no machine runs any more (the batch's end stops them)."""
        from .fly_model import RUNNING

        deadline = self.loop.now + limit_s
        self.loop.run(lambda: not any(m.state in RUNNING for m in self.fly.machines.values()), deadline)


def _share_botocore_loader() -> None:
    """pynamodb makes a botocore session per connection and each parses the service JSON
    again (~0.2 s); every simulated cold start makes connections. Sessions sharing one data
    loader parse it once (tests/orchestrator/conftest.py does the same); nothing else changes."""
    import botocore.session
    import pynamodb.connection.base

    shared = botocore.session.get_session()

    def session() -> botocore.session.Session:
        new = botocore.session.get_session()
        new.register_component("data_loader", shared.get_component("data_loader"))
        return new

    pynamodb.connection.base.get_session = session


def _api(sim: Simulation) -> Any:
    from .api import ApiFleet, Gateway

    return ApiFleet(sim.loop, Gateway(sim.app), sim.profile.api, sim.new_process)


def _const(seconds: float) -> Any:
    from arke_local.fly_emulator.durations import TaskDuration

    return TaskDuration("constant", seconds)


def _batch_status(batch_id: str) -> str | None:
    from chalicelib import store

    batch = store.get_batch(batch_id)
    return batch.status if batch is not None else None


def _read_outcome(outcome: BatchOutcome) -> None:
    """The batch's task rows, counters and machine records, read as the harness (outside any
    actor: not delayed, not counted)."""
    from moto.dynamodb.models import dynamodb_backends

    from chalicelib.store.counts import PHASE_COUNTS

    backend = dynamodb_backends["123456789012"]["us-east-1"]
    batch_id = outcome.batch_id
    tasks, first_machine, total = [], None, 0
    summed = dict.fromkeys(PHASE_COUNTS, 0)
    for name, table in backend.tables.items():
        for item in table.all_items():
            plain = {k: _plain(v) for k, v in item.to_json()["Attributes"].items()}
            key = str(plain.get("batch_id", ""))
            if name.endswith("tasks") and (key == batch_id or key.startswith(f"{batch_id}#")):
                tasks.append(plain)
            elif key == batch_id and "tasks_total" in plain:
                total = int(plain.get("tasks_total") or 0)
            elif key.startswith(f"#counts#{batch_id}#"):  # a task shard's counters (store/counts.py)
                for name in PHASE_COUNTS:
                    summed[name] += int(plain.get(name) or 0)
            elif key.startswith(f"#machine#{batch_id}#") and "created_at" in plain:
                at = float(plain["created_at"]) / 1000
                first_machine = at if first_machine is None else min(first_machine, at)
    outcome.counters = {"tasks_total": total, **summed}
    outcome.tasks = tasks
    ended = [float(t["ended_at"]) / 1000 for t in tasks if t.get("ended_at") is not None]
    from .clock import EPOCH_S

    outcome.last_ended_at = max(ended) - EPOCH_S if ended else None
    outcome.first_machine_at = first_machine - EPOCH_S if first_machine is not None else None


def _plain(attribute: dict[str, Any]) -> Any:
    [(kind, value)] = attribute.items()
    if kind == "N":
        return float(value)
    if kind == "M":
        return {k: _plain(v) for k, v in value.items()}
    if kind == "L":
        return [_plain(v) for v in value]
    return value


@contextlib.contextmanager
def _moto() -> Any:
    from moto import mock_aws

    with mock_aws():
        yield


@contextlib.contextmanager
def _quiet() -> Any:
    """The orchestrator logs a JSON line per event; a run of 100,000 tasks would print
    millions. They go nowhere (set FLEET_SIM_LOG=path to keep them)."""
    path = os.environ.get("FLEET_SIM_LOG")
    sink = open(path or os.devnull, "w")  # noqa: SIM115 - closed below
    moved: list[tuple[logging.StreamHandler, Any]] = []
    if not path:
        logging.disable(logging.INFO)  # the loggers' handlers hold the real stdout
    else:  # ... so they are pointed at the file for the run
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in getattr(logger, "handlers", []):
                if type(handler) is logging.StreamHandler and handler.stream in (sys.stdout, sys.stderr):
                    moved.append((handler, handler.setStream(sink)))
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        logging.disable(logging.NOTSET)
        for handler, stream in moved:
            handler.setStream(stream)
        sink.close()
        sys.stdout.flush()
