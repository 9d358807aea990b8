"""The worker's configuration, read once from the environment into typed objects.

Contract variables (contracts §3) are required; everything else is optional with a
default, so the worker runs with exactly the seed's environment. Secrets are kept out
of `repr` so they can never reach a log line. Pool mode (docs/pool.md) has its own
machine-level settings, `PoolSettings`, which turn each assignment into the same
per-task `ContractSettings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from worker.exceptions import ConfigError

REQUIRED = (
    "TASK_ID",
    "BATCH_ID",
    "INPUT_R2_KEY",
    "R2_ACCOUNT_ID",
    "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY",
    "R2_BUCKET",
    "CALLBACK_URL",
)
# With presigned URLs for both transfers, the machine needs no R2 account or keys.
REQUIRED_PRESIGNED = ("TASK_ID", "BATCH_ID", "INPUT_R2_KEY", "CALLBACK_URL", "INPUT_URL", "OUTPUT_URL")

# Bytes of memory per pixel a large conversion needs at its peak (plain scans are
# decoded strip by strip and the encoder picks a path within the memory budget,
# worker.encode.memory_budget;
# Pillow's whole-image decoding of other kinds takes 4 bytes a pixel for RGB), plus a
# fixed allowance for the interpreter, libraries and buffers. A 1024 MB machine takes
# plain scans up to ~260 MP.
BYTES_PER_PIXEL = 3.4
FIXED_OVERHEAD = 128 * 1024 * 1024
DEFAULT_TIMEOUT_S = 300.0
JPEG_QUALITY = 95
# The least memory a pool slot's conversion gets: WORKER_CONCURRENCY asks for more slots
# than the machine holds at this size, the pool runs fewer (1024 MB: 2 slots).
MIN_SLOT_MEMORY = 512 * 1024 * 1024

_conversions_at_once = 1  # share_memory: set once at pool start, inherited by forks


def share_memory(slots: int) -> None:
    """Pool mode runs `slots` conversions at once: from now on each (and each forked
    child) may use 1/slots of the machine (`memory_limit_bytes`), so the pixel limit
    and the encoder's memory budget are one slot's."""
    global _conversions_at_once
    _conversions_at_once = max(1, int(slots))


def conversion_slots(requested: int, memory: int) -> int:
    """How many conversions at once `memory` bytes allow: `requested`, but never so
    many that one gets less than MIN_SLOT_MEMORY (at least one)."""
    return max(1, min(requested, memory // MIN_SLOT_MEMORY))


def memory_limit_bytes() -> int:
    """The memory one conversion may use: the machine's (`machine_memory_bytes`), shared
    among the conversions that run at once (`share_memory`; contract mode: one)."""
    return machine_memory_bytes() // _conversions_at_once


def machine_memory_bytes() -> int:
    """The machine's memory: Fly's FLY_VM_MEMORY_MB (also set by the local emulator),
    else the cgroup limit, else RAM."""
    fly = os.environ.get("FLY_VM_MEMORY_MB", "").strip()
    if fly.isdigit() and int(fly) > 0:
        return int(fly) * 1024 * 1024
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 50:
            return int(text)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1024 * 1024 * 1024


def default_max_pixels(memory: int | None = None) -> int:
    memory = memory_limit_bytes() if memory is None else memory
    return max(1_000_000, int((memory - FIXED_OVERHEAD) / BYTES_PER_PIXEL))


def _number(env: Mapping[str, str], name: str, default: float, kind=float):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """Bounds on one conversion: pixels (memory) and wall-clock seconds."""

    max_pixels: int
    timeout_s: float = DEFAULT_TIMEOUT_S
    quality: int = JPEG_QUALITY

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        return cls(
            max_pixels=_number(env, "WORKER_MAX_PIXELS", 0, int) or default_max_pixels(),
            timeout_s=_number(env, "WORKER_CONVERT_TIMEOUT_S", DEFAULT_TIMEOUT_S),
        )


@dataclass(frozen=True)
class ContractSettings:
    """One task's environment (contracts §3) plus the optional extras."""

    task_id: str
    batch_id: str
    input_r2_key: str
    r2_account_id: str
    # OUTPUT_R2_KEY: the key the orchestrator decided at intake; without it, the seed's rule.
    output_r2_key: str | None
    r2_access_key_id: str = field(repr=False)
    r2_secret_access_key: str = field(repr=False)
    r2_bucket: str
    callback_url: str
    input_url: str | None = field(default=None, repr=False)
    output_url: str | None = field(default=None, repr=False)
    callback_token: str | None = field(default=None, repr=False)
    r2_endpoint_url: str | None = None
    callback_attempts: int = 6
    callback_backoff_s: float = 1.0
    callback_timeout_s: float = 15.0
    workdir: str | None = None
    part_size: int = 16 * 1024 * 1024
    # Pool mode only (the assignment's `max_memory_mb`): the largest machine memory of the
    # pool, given when it is larger than this machine's; contract mode never has one.
    max_memory_mb: int | None = None

    @property
    def endpoint_url(self) -> str:
        if self.r2_endpoint_url:
            return self.r2_endpoint_url
        return f"https://{self.r2_account_id}.r2.cloudflarestorage.com"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ContractSettings:
        env = os.environ if env is None else env
        presigned = bool(env.get("INPUT_URL", "").strip() and env.get("OUTPUT_URL", "").strip())
        required = REQUIRED_PRESIGNED if presigned else REQUIRED
        missing = [name for name in required if not env.get(name, "").strip()]
        if missing:
            raise ConfigError("Missing environment variables: " + ", ".join(missing))
        return cls(
            task_id=env["TASK_ID"].strip(),
            batch_id=env["BATCH_ID"].strip(),
            input_r2_key=env["INPUT_R2_KEY"],
            output_r2_key=env.get("OUTPUT_R2_KEY", "").strip() or None,
            r2_account_id=env.get("R2_ACCOUNT_ID", "").strip(),
            r2_access_key_id=env.get("R2_ACCESS_KEY_ID", "").strip(),
            r2_secret_access_key=env.get("R2_SECRET_ACCESS_KEY", "").strip(),
            r2_bucket=env.get("R2_BUCKET", "").strip(),
            callback_url=env["CALLBACK_URL"].strip(),
            input_url=env.get("INPUT_URL", "").strip() if presigned else None,
            output_url=env.get("OUTPUT_URL", "").strip() if presigned else None,
            callback_token=env.get("CALLBACK_TOKEN", "").strip() or None,
            r2_endpoint_url=env.get("R2_ENDPOINT_URL", "").strip() or None,
            callback_attempts=_number(env, "WORKER_CALLBACK_ATTEMPTS", 6, int),
            callback_backoff_s=_number(env, "WORKER_CALLBACK_BACKOFF_S", 1.0),
            callback_timeout_s=_number(env, "WORKER_CALLBACK_TIMEOUT_S", 15.0),
            workdir=env.get("WORKER_TMPDIR", "").strip() or None,
            part_size=int(_number(env, "WORKER_PART_SIZE_MB", 16.0) * 1024 * 1024),
        )


# BATCH_ID is absent on a standing machine (docs/pool.md "Standing pool"): it serves
# whichever batch claims it, and learns each pull's address from the answers.
POOL_REQUIRED = ("MACHINE_NAME", "MACHINE_TOKEN", "ORCHESTRATOR_URL")


@dataclass(frozen=True)
class PoolSettings:
    """A pool machine's environment (docs/pool.md): who it is, where to pull, how many
    conversions at once; the R2 keys only when the orchestrator gives machines keys
    (else every assignment carries presigned URLs)."""

    batch_id: str
    machine_name: str
    machine_token: str = field(repr=False)
    orchestrator_url: str
    concurrency: int = 1
    r2_bucket: str = ""
    r2_account_id: str = ""
    r2_access_key_id: str = field(default="", repr=False)
    r2_secret_access_key: str = field(default="", repr=False)
    r2_endpoint_url: str | None = None
    callback_attempts: int = 6
    callback_backoff_s: float = 1.0
    callback_timeout_s: float = 15.0
    workdir: str | None = None
    part_size: int = 16 * 1024 * 1024
    # Pull retries on 5xx / no answer: 1 s, 2 s, 4 s ... at most 10 s apart, ~60 s in all.
    pull_backoff_s: float = 1.0
    pull_backoff_max_s: float = 10.0
    pull_give_up_s: float = 60.0
    request_timeout_s: float = 15.0

    @property
    def pool_url(self) -> str:
        """Where the first pull goes: the batch's machine address, or for a standing
        machine (no batch yet) the machine-scoped one that finds its current batch."""
        if not self.batch_id:
            return f"{self.orchestrator_url}/pool/machines/{self.machine_name}"
        return f"{self.orchestrator_url}/pool/{self.batch_id}/machines/{self.machine_name}"

    @property
    def has_r2_keys(self) -> bool:
        return bool(self.r2_access_key_id and self.r2_secret_access_key and self.r2_account_id)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PoolSettings:
        env = os.environ if env is None else env
        missing = [name for name in POOL_REQUIRED if not env.get(name, "").strip()]
        if missing:
            raise ConfigError("Missing environment variables: " + ", ".join(missing))
        return cls(
            batch_id=env.get("BATCH_ID", "").strip(),
            machine_name=env["MACHINE_NAME"].strip(),
            machine_token=env["MACHINE_TOKEN"].strip(),
            orchestrator_url=env["ORCHESTRATOR_URL"].strip().rstrip("/"),
            concurrency=_number(env, "WORKER_CONCURRENCY", 1, int),
            r2_bucket=env.get("R2_BUCKET", "").strip(),
            r2_account_id=env.get("R2_ACCOUNT_ID", "").strip(),
            r2_access_key_id=env.get("R2_ACCESS_KEY_ID", "").strip(),
            r2_secret_access_key=env.get("R2_SECRET_ACCESS_KEY", "").strip(),
            r2_endpoint_url=env.get("R2_ENDPOINT_URL", "").strip() or None,
            callback_attempts=_number(env, "WORKER_CALLBACK_ATTEMPTS", 6, int),
            callback_backoff_s=_number(env, "WORKER_CALLBACK_BACKOFF_S", 1.0),
            callback_timeout_s=_number(env, "WORKER_CALLBACK_TIMEOUT_S", 15.0),
            workdir=env.get("WORKER_TMPDIR", "").strip() or None,
            part_size=int(_number(env, "WORKER_PART_SIZE_MB", 16.0) * 1024 * 1024),
            pull_backoff_s=_number(env, "WORKER_PULL_BACKOFF_S", 1.0),
            pull_backoff_max_s=_number(env, "WORKER_PULL_BACKOFF_MAX_S", 10.0),
            pull_give_up_s=_number(env, "WORKER_PULL_GIVE_UP_S", 60.0),
            request_timeout_s=_number(env, "WORKER_PULL_TIMEOUT_S", 15.0),
        )

    def task_settings(self, task: Mapping) -> ContractSettings:
        """One assignment (the pull answer's `task`) as the per-task settings contract
        mode reads from its environment, so both modes run the same steps (whether it
        can be worked here at all is worker.pool's `assignment_problem`)."""
        presigned = bool(task.get("input_url") and task.get("output_url"))
        return ContractSettings(
            task_id=str(task["task_id"]),
            batch_id=str(task.get("batch_id") or self.batch_id),
            input_r2_key=str(task.get("input_r2_key") or ""),
            output_r2_key=task.get("output_r2_key") or None,
            r2_account_id=self.r2_account_id,
            r2_access_key_id=self.r2_access_key_id,
            r2_secret_access_key=self.r2_secret_access_key,
            r2_bucket=str(task.get("r2_bucket") or self.r2_bucket),
            callback_url=str(task["callback_url"]),
            input_url=task.get("input_url") if presigned else None,
            output_url=task.get("output_url") if presigned else None,
            callback_token=task.get("callback_token") or None,
            r2_endpoint_url=self.r2_endpoint_url,
            callback_attempts=self.callback_attempts,
            callback_backoff_s=self.callback_backoff_s,
            callback_timeout_s=self.callback_timeout_s,
            workdir=self.workdir,
            part_size=self.part_size,
            max_memory_mb=_memory_mb(task.get("max_memory_mb")),
        )


def _memory_mb(value: object) -> int | None:
    """An assignment's `max_memory_mb`: a positive whole number of MB, else None (an
    absent or malformed field leaves the task to this machine, as before tiers)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON may spell 4096 as 4096.0
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value
