"""Configuration, read once from the environment into one typed object.

Names and defaults are the seed's (contracts §6) plus the ones this service adds. Secrets
are not read here: `secrets.py` resolves them from SSM with an environment fallback. Nothing
else in `chalicelib/` reads `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise


class SettingsError(ValueError):
    """A configuration value is present but unusable (names the variable, never its value)."""


def _number(env: Mapping[str, str], name: str, default: float, minimum: float, kind: type,
            what: str) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    return int(_number(env, name, default, minimum, int, "an integer"))


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return float(_number(env, name, default, minimum, float, "a number"))


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false")


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "").strip() or default


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default, 0.0)
    if value > 1.0:
        raise SettingsError(f"{name} must be between 0 and 1")
    return value


MEMORY_STEP_MB = 256  # Fly's guest.memory_mb steps
MAX_SHARED_MEMORY_MB = 16384  # Fly: 2048 MB per shared CPU, at most 8 of them


def _memory_mb(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = _int(env, name, default, minimum)
    if value % MEMORY_STEP_MB or value > MAX_SHARED_MEMORY_MB:
        raise SettingsError(f"{name} must be a multiple of {MEMORY_STEP_MB} up to {MAX_SHARED_MEMORY_MB}")
    return value


def _memory_range(env: Mapping[str, str]) -> tuple[int, int]:
    """MACHINE_MEMORY_MB (the default machine, the floor) and MAX_MACHINE_MEMORY_MB (the cap)."""
    floor = _memory_mb(env, "MACHINE_MEMORY_MB", Settings.machine_memory_mb, MEMORY_STEP_MB)
    cap = _memory_mb(env, "MAX_MACHINE_MEMORY_MB", Settings.max_machine_memory_mb, MEMORY_STEP_MB)
    if cap < floor:
        raise SettingsError("MAX_MACHINE_MEMORY_MB must be at least MACHINE_MEMORY_MB")
    return floor, cap


MACHINE_MODES = ("pool", "single")
# Fly's guest rules (docs: "Machine sizing", and the presets on the pricing page): the CPU
# counts each kind comes in, and the memory each CPU allows (in 256 MB steps).
CPU_COUNTS = {"shared": (1, 2, 4, 6, 8), "performance": (1, 2, 4, 6, 8, 10, 12, 14, 16)}
MB_PER_CPU = {"shared": (256, 2048), "performance": (2048, 8192)}


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = _str(env, name, default).lower()
    if value not in allowed:
        raise SettingsError(f"{name} must be {' or '.join(allowed)}")
    return value


def _pool_guest(env: Mapping[str, str]) -> tuple[str, int, int]:
    """POOL_CPU_KIND, POOL_CPUS and POOL_MEMORY_MB, checked against Fly's rules together (the
    memory allowed depends on the kind and count of CPUs), so a bad guest fails at start-up
    and not as a 422 on every machine creation."""
    kind = _choice(env, "POOL_CPU_KIND", Settings.pool_cpu_kind, tuple(CPU_COUNTS))
    cpus = _int(env, "POOL_CPUS", Settings.pool_cpus, 1)
    if cpus not in CPU_COUNTS[kind]:
        counts = ", ".join(str(n) for n in CPU_COUNTS[kind])
        raise SettingsError(f"POOL_CPUS must be one of {counts} for {kind} CPUs")
    memory_mb = _int(env, "POOL_MEMORY_MB", Settings.pool_memory_mb, MEMORY_STEP_MB)
    low, high = (cpus * per_cpu for per_cpu in MB_PER_CPU[kind])
    if memory_mb % MEMORY_STEP_MB or not low <= memory_mb <= high:
        raise SettingsError(
            f"POOL_MEMORY_MB must be a multiple of {MEMORY_STEP_MB} from {low} to {high} for {cpus} {kind} "
            f"CPU(s) (Fly: {MB_PER_CPU[kind][0]} to {MB_PER_CPU[kind][1]} MB per CPU)")
    return kind, cpus, memory_mb


MAX_POOL_TIERS = 9  # larger tiers beside POOL_MEMORY_MB (store/task_reads.py has a band for each)


def _pool_tiers(env: Mapping[str, str], kind: str, cpus: int, base_mb: int) -> tuple[int, ...]:
    """POOL_MEMORY_TIERS_MB: the pool's larger memories (docs/pool.md "Memory tiers"), each a
    guest Fly allows for POOL_CPU_KIND and POOL_CPUS, ascending, above POOL_MEMORY_MB. Unset:
    POOL_MEMORY_MB doubled while Fly allows it (2048, 4096, 8192 for one performance CPU);
    `none`: one memory. The tuple starts with POOL_MEMORY_MB."""
    low, high = (cpus * per_cpu for per_cpu in MB_PER_CPU[kind])
    raw = _str(env, "POOL_MEMORY_TIERS_MB", "").strip().lower()
    if not raw:
        tiers, size = [base_mb], 2 * base_mb
        while size <= high and len(tiers) <= MAX_POOL_TIERS:
            tiers.append(size)
            size *= 2
        return tuple(tiers)
    if raw == "none":
        return (base_mb,)
    try:
        larger = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise SettingsError(f"POOL_MEMORY_TIERS_MB must be MB numbers separated by commas, or none: {raw!r}") from None
    tiers = [base_mb, *larger]
    if any(b <= a for a, b in pairwise(tiers)) or len(larger) > MAX_POOL_TIERS:
        raise SettingsError(f"POOL_MEMORY_TIERS_MB must ascend from above POOL_MEMORY_MB={base_mb}, "
                            f"at most {MAX_POOL_TIERS} of them: {raw!r}")
    for memory_mb in larger:
        if memory_mb % MEMORY_STEP_MB or not low <= memory_mb <= high:
            raise SettingsError(f"POOL_MEMORY_TIERS_MB: {memory_mb} is not a multiple of {MEMORY_STEP_MB} "
                                f"from {low} to {high} for {cpus} {kind} CPU(s)")
    return tuple(tiers)


def _heartbeat(env: Mapping[str, str]) -> tuple[int, int]:
    """HEARTBEAT_TIMEOUT_MS and HEARTBEAT_INTERVAL_MS: the interval under half the timeout,
    so one lost beat never times a working machine's task out."""
    timeout = _int(env, "HEARTBEAT_TIMEOUT_MS", Settings.heartbeat_timeout_ms, 1000)
    interval = _int(env, "HEARTBEAT_INTERVAL_MS", Settings.heartbeat_interval_ms, 100)
    if 2 * interval >= timeout:
        raise SettingsError("HEARTBEAT_INTERVAL_MS must be less than half of HEARTBEAT_TIMEOUT_MS")
    return timeout, interval


@dataclass(frozen=True)
class Settings:
    stage: str = "dev"
    region: str = "us-east-1"
    batches_table: str = "arke-preprocess-batches"
    tasks_table: str = "arke-preprocess-tasks"
    files_table: str = "arke-preprocess-files"
    queue_name: str = "arke-preprocess-jobs"
    dlq_name: str = "preprocess-dlq"
    ssm_prefix: str = "/arke-preprocess/dev/"

    fly_api_hostname: str = "https://api.machines.dev"
    fly_app_name: str = "arke-tiff-worker"
    fly_worker_image: str = "registry.fly.io/arke-tiff-worker:latest"
    fly_region: str = "ord"
    fly_create_rate: float = 1.0
    fly_create_burst: int = 3
    fly_request_timeout_ms: int = 15000
    max_machines_in_flight: int = 1000
    spawn_concurrency: int = 8
    machine_memory_mb: int = 1024  # the seed's machine; the floor of every request
    max_machine_memory_mb: int = 8192

    orchestrator_url: str = ""
    worker_url: str = "https://ingest.arke.institute"
    r2_bucket: str = "arke-staging"
    r2_endpoint_url: str = ""

    batch_size_tiff_conversion: int = 1000
    alarm_delay_tiff_conversion_ms: int = 5000
    alarm_delay_error_retry_ms: int = 30000
    max_retry_attempts: int = 5
    task_timeout_tiff_conversion_ms: int = 300000
    delivery_timeout_ms: int = 30000
    max_failed_fraction: float = 1.0
    accept_unsigned_callbacks: bool = False
    machine_r2_credentials: bool = False
    presign_margin_ms: int = 600000
    tick_margin_ms: int = 10000
    lease_ms: int = 60000
    sweep_delay_ms: int = 10000

    machine_mode: str = "pool"  # pool: machines pull tasks (docs/pool.md); single: one per task
    pool_cpu_kind: str = "performance"
    pool_cpus: int = 1
    pool_memory_mb: int = 2048
    pool_tiers_mb: tuple[int, ...] = (2048, 4096, 8192)  # POOL_MEMORY_MB, then the larger tiers
    worker_concurrency: int = 1
    heartbeat_timeout_ms: int = 60000
    heartbeat_interval_ms: int = 10000
    max_pool_machines_per_batch: int = 300
    pool_prior_task_ms: int = 3000
    pool_boot_ms: int = 5000
    pool_standing: bool = True  # machines stopped between batches and started for the next
    pool_max_machines: int = 1000  # standing machines that may exist (started or stopped)
    pool_min_machines: int = 0  # stopped machines kept however long idle
    pool_idle_retention_s: int = 3600  # a stopped machine idle longer is destroyed
    pool_start_ms: int = 1500  # ms from a stopped machine's start to its first pull, for the sizing
    pool_start_concurrency: int = 32  # starts at once in one pass (Fly limits them per machine)

    env: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def pool_tiers(self) -> tuple[int, ...]:
        """The pool's memories, POOL_MEMORY_MB first (tier 0), ascending; settings made in
        code with another POOL_MEMORY_MB keep only the tiers above it."""
        return (self.pool_memory_mb, *(m for m in self.pool_tiers_mb if m > self.pool_memory_mb))

    @property
    def test_route_enabled(self) -> bool:
        """`POST /test` exists on dev and local stages only (contracts §4)."""
        return self.stage in ("dev", "local")

    def phase_int(self, prefix: str, phase: str, default: int) -> int:
        """A per-phase number such as `BATCH_SIZE_TIFF_CONVERSION`, for phases added later."""
        return _int(self.env, f"{prefix}_{phase}", default, 1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        stage = _str(env, "STAGE", "dev")
        machine_memory_mb, max_machine_memory_mb = _memory_range(env)
        pool_cpu_kind, pool_cpus, pool_memory_mb = _pool_guest(env)
        heartbeat_timeout_ms, heartbeat_interval_ms = _heartbeat(env)
        return cls(
            stage=stage,
            region=_str(env, "AWS_DEFAULT_REGION", _str(env, "AWS_REGION", "us-east-1")),
            batches_table=_str(env, "BATCHES_TABLE", cls.batches_table),
            tasks_table=_str(env, "TASKS_TABLE", cls.tasks_table),
            files_table=_str(env, "FILES_TABLE", cls.files_table),
            queue_name=_str(env, "QUEUE_NAME", cls.queue_name),
            dlq_name=_str(env, "DLQ_NAME", cls.dlq_name),
            ssm_prefix=_str(env, "SSM_PREFIX", f"/arke-preprocess/{stage}/"),
            fly_api_hostname=_str(env, "FLY_API_HOSTNAME", cls.fly_api_hostname).rstrip("/"),
            fly_app_name=_str(env, "FLY_APP_NAME", cls.fly_app_name),
            fly_worker_image=_str(env, "FLY_WORKER_IMAGE", cls.fly_worker_image),
            fly_region=_str(env, "FLY_REGION", cls.fly_region),
            fly_create_rate=_float(env, "FLY_CREATE_RATE", cls.fly_create_rate, 0.001),
            fly_create_burst=_int(env, "FLY_CREATE_BURST", cls.fly_create_burst, 1),
            fly_request_timeout_ms=_int(env, "FLY_REQUEST_TIMEOUT_MS", cls.fly_request_timeout_ms, 100),
            max_machines_in_flight=_int(env, "MAX_MACHINES_IN_FLIGHT", cls.max_machines_in_flight, 1),
            spawn_concurrency=_int(env, "SPAWN_CONCURRENCY", cls.spawn_concurrency, 1),
            machine_memory_mb=machine_memory_mb,
            max_machine_memory_mb=max_machine_memory_mb,
            orchestrator_url=_str(env, "ORCHESTRATOR_URL", "").rstrip("/"),
            worker_url=_str(env, "WORKER_URL", cls.worker_url).rstrip("/"),
            r2_bucket=_str(env, "R2_BUCKET", cls.r2_bucket),
            r2_endpoint_url=_str(env, "R2_ENDPOINT_URL", ""),
            batch_size_tiff_conversion=_int(env, "BATCH_SIZE_TIFF_CONVERSION", cls.batch_size_tiff_conversion, 1),
            alarm_delay_tiff_conversion_ms=_int(env, "ALARM_DELAY_TIFF_CONVERSION", cls.alarm_delay_tiff_conversion_ms, 50),
            alarm_delay_error_retry_ms=_int(env, "ALARM_DELAY_ERROR_RETRY", cls.alarm_delay_error_retry_ms, 50),
            max_retry_attempts=_int(env, "MAX_RETRY_ATTEMPTS", cls.max_retry_attempts, 1),
            task_timeout_tiff_conversion_ms=_int(env, "TASK_TIMEOUT_TIFF_CONVERSION", cls.task_timeout_tiff_conversion_ms, 100),
            delivery_timeout_ms=_int(env, "DELIVERY_TIMEOUT_MS", cls.delivery_timeout_ms, 100),
            max_failed_fraction=_fraction(env, "MAX_FAILED_FRACTION", cls.max_failed_fraction),
            accept_unsigned_callbacks=_bool(env, "ACCEPT_UNSIGNED_CALLBACKS", False),
            machine_r2_credentials=_bool(env, "MACHINE_R2_CREDENTIALS", False),
            presign_margin_ms=_int(env, "PRESIGN_MARGIN_MS", cls.presign_margin_ms, 0),
            tick_margin_ms=_int(env, "TICK_MARGIN_MS", cls.tick_margin_ms, 0),
            lease_ms=_int(env, "LEASE_MS", cls.lease_ms, 1000),
            sweep_delay_ms=_int(env, "SWEEP_DELAY_MS", cls.sweep_delay_ms, 0),
            machine_mode=_choice(env, "MACHINE_MODE", cls.machine_mode, MACHINE_MODES),
            pool_cpu_kind=pool_cpu_kind,
            pool_cpus=pool_cpus,
            pool_memory_mb=pool_memory_mb,
            pool_tiers_mb=_pool_tiers(env, pool_cpu_kind, pool_cpus, pool_memory_mb),
            worker_concurrency=_int(env, "WORKER_CONCURRENCY", cls.worker_concurrency, 1),
            heartbeat_timeout_ms=heartbeat_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            max_pool_machines_per_batch=_int(env, "MAX_POOL_MACHINES_PER_BATCH", cls.max_pool_machines_per_batch, 1),
            pool_prior_task_ms=_int(env, "POOL_PRIOR_TASK_MS", cls.pool_prior_task_ms, 1),
            pool_boot_ms=_int(env, "POOL_BOOT_MS", cls.pool_boot_ms, 0),
            pool_standing=_bool(env, "POOL_STANDING", cls.pool_standing),
            pool_max_machines=_int(env, "POOL_MAX_MACHINES", cls.pool_max_machines, 1),
            pool_min_machines=_int(env, "POOL_MIN_MACHINES", cls.pool_min_machines, 0),
            pool_idle_retention_s=_int(env, "POOL_IDLE_RETENTION_S", cls.pool_idle_retention_s, 0),
            pool_start_ms=_int(env, "POOL_START_MS", cls.pool_start_ms, 0),
            pool_start_concurrency=_int(env, "POOL_START_CONCURRENCY", cls.pool_start_concurrency, 1),
            env=dict(env),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read on first use (so tests can set the env before)."""
    return Settings.from_env()
