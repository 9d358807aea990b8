"""The emulator's configuration, read once: from the environment (`EmulatorSettings.from_env`)
or built in code (tests). Nothing else in the package reads `os.environ` for configuration;
the only other read is copying the names in `pass_env` into a machine's environment.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .durations import TaskDuration
from .faults import FaultSettings
from .ratelimit import RateLimit, parse_rate_limits

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_IMAGE = "registry.fly.io/arke-tiff-worker:latest"
IDLE = "idle"  # image-map value: the machine has no process and stays started until stopped
SYNTHETIC = "synthetic"  # image-map value: the emulator plays the worker in a thread (synthetic.py)
DEFAULT_PASS_ENV = ("PATH", "LANG", "LC_ALL", "TMPDIR")


@dataclass(frozen=True)
class ImageCommand:
    """What a machine of one image runs: `argv` in `cwd`, the synthetic worker (a thread of
    the emulator), or nothing at all when idle."""

    argv: tuple[str, ...] = ()
    cwd: str | None = None
    synthetic: bool = False

    @property
    def idle(self) -> bool:
        return not self.argv and not self.synthetic


def default_images() -> dict[str, ImageCommand]:
    return {WORKER_IMAGE: ImageCommand((sys.executable, "-m", "worker"), str(REPO_ROOT))}


def parse_images(raw: Mapping[str, object]) -> dict[str, ImageCommand]:
    """Image map from its JSON form. Each value is one of: a list of strings (argv, run in the
    repo root), `{"argv": [...], "cwd": "..."}`, `"idle"`, `"synthetic"`, or an `ImageCommand`."""
    images: dict[str, ImageCommand] = {}
    for image, spec in raw.items():
        if isinstance(spec, ImageCommand):
            images[image] = spec
        elif spec == IDLE:
            images[image] = ImageCommand()
        elif spec == SYNTHETIC:
            images[image] = ImageCommand(synthetic=True)
        elif isinstance(spec, list | tuple) and spec and all(isinstance(a, str) for a in spec):
            images[image] = ImageCommand(tuple(spec), str(REPO_ROOT))
        elif isinstance(spec, dict) and set(spec) <= {"argv", "cwd"} and spec.get("argv"):
            argv = spec["argv"]
            if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
                raise ValueError(f"image {image!r}: argv must be a list of strings")
            images[image] = ImageCommand(tuple(argv), spec.get("cwd") or str(REPO_ROOT))
        else:
            raise ValueError(
                f"image {image!r}: expected an argv list, {{'argv': [...], 'cwd': ...}}, 'idle' "
                "or 'synthetic'"
            )
    return images


@dataclass(frozen=True)
class EmulatorSettings:
    host: str = "127.0.0.1"
    port: int = 4280
    token: str | None = None  # when set, the Bearer token must equal it
    apps: frozenset[str] | None = None  # None: any app name exists
    images: Mapping[str, object] = field(default_factory=default_images)
    idle_unmapped: bool = False  # unmapped images run idle instead of being refused
    pass_env: tuple[str, ...] = DEFAULT_PASS_ENV
    create_rate: float = 1.0  # tokens per second; <= 0 disables the limit
    create_burst: int = 3
    # Per-action limits merged over ratelimit.DEFAULT_RATE_LIMITS, e.g.
    # {"get": {"rate": 5, "burst": 10}, "start": {"key": "app"}}; `rate_table` is the result.
    rate_limits: Mapping[str, object] = field(default_factory=dict)
    start_latency_s: float = 0.4  # POST start of a stopped machine: starting -> started
    max_machines: int = 100  # machines not yet destroyed, over all apps
    default_region: str = "ord"
    default_memory_mb: int = 256  # Fly's shared-cpu-1x default
    memory_poll_s: float = 0.05  # RSS watchdog period
    stop_timeout_s: float = 5.0  # SIGTERM -> SIGKILL when the stop request names none
    proxy_callbacks: bool = True
    synthetic_work_s: float = 0.2  # how long a synthetic machine "converts" before its output
    # A synthetic pool machine's time per task: "3", "uniform:2:4" or "normal:3:0.5" (seconds).
    synthetic_task_s: TaskDuration | str | float = "0.2"
    synthetic_seed: int | None = None  # seeds the task-duration draws
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", parse_images(self.images))
        if not isinstance(self.synthetic_task_s, TaskDuration):
            object.__setattr__(self, "synthetic_task_s",
                               TaskDuration.parse(self.synthetic_task_s, self.synthetic_seed))
        if self.apps is not None:
            object.__setattr__(self, "apps", frozenset(self.apps))
        parse_rate_limits(self.rate_limits, self.create_rate, self.create_burst)  # fail now
        if self.start_latency_s < 0:
            raise ValueError("start_latency_s must be >= 0")

    @property
    def rate_table(self) -> dict[str, RateLimit]:
        """Every action's limit: the defaults, create from create_rate/create_burst, then
        `rate_limits` (kept as given, so `replace(create_rate=...)` still applies)."""
        return parse_rate_limits(self.rate_limits, self.create_rate, self.create_burst)

    def replace(self, **changes: object) -> EmulatorSettings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmulatorSettings:
        env = os.environ if environ is None else environ
        kw: dict[str, object] = {}

        def get(name: str) -> str | None:
            value = env.get(f"FLY_EMULATOR_{name}")
            return value if value not in (None, "") else None

        if (v := get("HOST")) is not None:
            kw["host"] = v
        if (v := get("PORT")) is not None:
            kw["port"] = int(v)
        if (v := get("TOKEN")) is not None:
            kw["token"] = v
        if (v := get("APPS")) is not None:
            kw["apps"] = frozenset(a.strip() for a in v.split(",") if a.strip())
        if (v := get("IMAGES")) is not None:
            raw = json.loads(v)
            if not isinstance(raw, dict):
                raise ValueError("FLY_EMULATOR_IMAGES must be a JSON object")
            kw["images"] = {**default_images(), **raw}
        if (v := get("IDLE_UNMAPPED")) is not None:
            kw["idle_unmapped"] = _flag(v)
        if (v := get("PASS_ENV")) is not None:
            extra = tuple(n.strip() for n in v.split(",") if n.strip())
            kw["pass_env"] = DEFAULT_PASS_ENV + extra
        if (v := get("CREATE_RATE")) is not None:
            kw["create_rate"] = float(v)
        if (v := get("CREATE_BURST")) is not None:
            kw["create_burst"] = int(v)
        if (v := get("RATE_LIMITS")) is not None:
            raw = json.loads(v)
            if not isinstance(raw, dict):
                raise ValueError("FLY_EMULATOR_RATE_LIMITS must be a JSON object")
            kw["rate_limits"] = raw
        if (v := get("START_LATENCY_S")) is not None:
            kw["start_latency_s"] = float(v)
        if (v := get("MAX_MACHINES")) is not None:
            kw["max_machines"] = int(v)
        if (v := get("PROXY_CALLBACKS")) is not None:
            kw["proxy_callbacks"] = _flag(v)
        if (v := get("SYNTHETIC_WORK_S")) is not None:
            kw["synthetic_work_s"] = float(v)
        if (v := get("SYNTHETIC_TASK_S")) is not None:
            kw["synthetic_task_s"] = v
        if (v := get("SYNTHETIC_SEED")) is not None:
            kw["synthetic_seed"] = int(v)
        kw["faults"] = FaultSettings.from_env(env)
        return cls(**kw)


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}
