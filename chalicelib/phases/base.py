"""What a phase is: discover tasks, build a machine request, read a callback, name the next.

The seed's phase interface, kept. A phase never touches DynamoDB or Fly itself: the batch
runner hands it what it needs and carries out what it returns, so adding PDF splitting or
image variants is one new module and one line in the registry.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..machine_size import machine_guest
from ..settings import Settings
from ..transitions import Outcome


@dataclass(frozen=True)
class TaskSpec:
    """A task a phase discovered: its id, its input, the key its output will be written
    under (decided once, at discovery), and what else its machine needs."""

    task_id: str
    input_r2_key: str
    file_position: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    output_r2_key: str | None = None


@dataclass(frozen=True)
class FileEntry:
    """One file of the batch as the queue message gave it, with its place in the message."""

    position: int
    directory_path: str
    processing_config: dict[str, Any] | None
    info: dict[str, Any]


@dataclass(frozen=True)
class TaskView:
    """A task as phases see it (read-only, no pynamodb types)."""

    task_id: str
    phase: str
    status: str
    attempts: int
    input_r2_key: str
    file_position: int | None
    data: Mapping[str, Any]
    output_r2_key: str | None = None
    output_file_name: str | None = None
    output_file_size: int | None = None
    planned_output_key: str | None = None


Presign = Callable[[str, str, int], str]  # (method "get" | "put", key, expires_s) -> URL


@dataclass(frozen=True)
class MachineContext:
    """What a phase may put in a machine's request besides the task itself."""

    settings: Settings
    secrets: Mapping[str, str] = field(repr=False)
    callback_url: str
    callback_token: str | None = field(default=None, repr=False)
    presign: Presign | None = field(default=None, repr=False)
    memory_mb: int = 1024  # the machine's guest.memory_mb (machine_size.py decides it)


@dataclass(frozen=True)
class Discovery:
    """What a phase may look at when it discovers its tasks."""

    batch_id: str
    files: Iterable[FileEntry]
    previous_tasks: Iterable[TaskView]


def r2_credentials(settings: Settings, secrets: Mapping[str, str]) -> dict[str, str]:
    """The seed's R2 keys for a machine's environment (MACHINE_R2_CREDENTIALS=true)."""
    env = {name: secrets.get(name, "") for name in ("R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY")}
    if settings.r2_endpoint_url:
        env["R2_ENDPOINT_URL"] = settings.r2_endpoint_url
    return env


def task_id_for(prefix: str, batch_id: str, key: str) -> str:
    """Deterministic, URL-safe and short: `{prefix}_{16 base32 chars}` from (batch, key).

    16 base32 characters are 80 bits: no collision within a batch in practice, and
    `tiff-tiff_...` stays far below Fly's machine-name length.
    """
    digest = hashlib.sha256(f"{batch_id}\n{key}".encode()).digest()
    return f"{prefix}_{base64.b32encode(digest).decode('ascii')[:16].lower()}"


class Phase(ABC):
    """One step of a batch. Subclasses set the class attributes and the four methods."""

    name: str
    task_prefix: str
    log_prefix: str
    next_phase: str | None = None
    machine_prefix: str = "task"
    # Whether the runner sizes the machine's memory from the input's TIFF header.
    sizes_machine_from_tiff: bool = False

    def task_id(self, batch_id: str, key: str) -> str:
        return task_id_for(self.task_prefix, batch_id, key)

    def batch_size(self, settings: Settings) -> int:
        return settings.phase_int("BATCH_SIZE", self.name, settings.batch_size_tiff_conversion)

    def alarm_delay_ms(self, settings: Settings) -> int:
        return settings.phase_int("ALARM_DELAY", self.name, settings.alarm_delay_tiff_conversion_ms)

    def task_timeout_ms(self, settings: Settings) -> int:
        return settings.phase_int("TASK_TIMEOUT", self.name, settings.task_timeout_tiff_conversion_ms)

    def machine_name(self, task_id: str, attempt: int) -> str:
        """Fly names are unique per app: later attempts get a suffix, as an earlier
        attempt's machine may still exist (timed out, or created behind a timeout)."""
        base = f"{self.machine_prefix}-{task_id}"
        return base if attempt <= 1 else f"{base}-{attempt}"

    @abstractmethod
    def discover(self, discovery: Discovery) -> list[TaskSpec]:
        """The phase's tasks for a batch; deterministic, so a retried discovery is a no-op."""

    @abstractmethod
    def machine_env(self, batch_id: str, task: TaskView, attempt: int, ctx: MachineContext) -> dict[str, str]:
        """The environment of the machine that runs one attempt of `task`."""

    def assignment(self, batch_id: str, task: TaskView, attempt: int, ctx: MachineContext) -> dict[str, Any]:
        """What a pool machine's pull gets for one attempt of `task` (docs/pool.md)."""
        raise NotImplementedError(f"{self.name} has no pool assignment; run it with MACHINE_MODE=single")

    def pool_machine_name(self, tier_part: str = "") -> str:
        """Unique per app, like an attempt's name, and telling at a glance it is a pool's
        (and, with `tier_part`, of which memory tier: pool/large.py tier_name_part)."""
        return f"{self.machine_prefix}-pool-{tier_part}{uuid.uuid4().hex[:12]}"

    @abstractmethod
    def interpret_callback(self, body: Mapping[str, Any]) -> Outcome:
        """Read a validated callback body: success with outputs, or an error and whether
        retrying could help. Raises InvalidCallbackError for a body it cannot accept."""

    def final_entry(self, entry: dict[str, Any], file: FileEntry, task: TaskView | None) -> dict[str, Any]:
        """How this phase's result changes a file's entry in the final callback."""
        return entry

    def machine_request(self, batch_id: str, task: TaskView, attempt: int, ctx: MachineContext) -> dict[str, Any]:
        """The CreateMachineRequest of contracts §2."""
        return {
            "name": self.machine_name(task.task_id, attempt),
            "region": ctx.settings.fly_region,
            "config": {
                "image": ctx.settings.fly_worker_image,
                "env": self.machine_env(batch_id, task, attempt, ctx),
                "auto_destroy": True,
                "restart": {"policy": "no"},
                "guest": machine_guest(ctx.memory_mb),
            },
        }
