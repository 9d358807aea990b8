"""A machine's record: its lifecycle states, the transitions allowed between them, its
events, and its API shape (the Machine schema of the OpenAPI file).

Holds data only; processes and threads belong to the supervisor.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import string
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .settings import ImageCommand


class MachineState(enum.StrEnum):
    CREATED = "created"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"


S = MachineState
TRANSITIONS: dict[MachineState, frozenset[MachineState]] = {
    S.CREATED: frozenset({S.STARTING, S.STOPPING, S.DESTROYING}),
    S.STARTING: frozenset({S.STARTED, S.STOPPING, S.STOPPED, S.DESTROYING}),
    S.STARTED: frozenset({S.STOPPING, S.STOPPED, S.DESTROYING}),
    S.STOPPING: frozenset({S.STOPPED, S.DESTROYING}),
    S.STOPPED: frozenset({S.STARTING, S.DESTROYING}),  # POST start
    S.DESTROYING: frozenset({S.DESTROYED}),
    S.DESTROYED: frozenset(),
}
# Event type recorded when a machine enters a state (as in Fly's event log).
EVENT_TYPES = {
    S.CREATED: "launch",
    S.STARTING: "start",
    S.STARTED: "start",
    S.STOPPING: "stop",
    S.STOPPED: "exit",
    S.DESTROYING: "destroy",
    S.DESTROYED: "destroy",
}
ACTIVE = frozenset({S.CREATED, S.STARTING, S.STARTED, S.STOPPING})


def can_move(current: MachineState, target: MachineState) -> bool:
    return target in TRANSITIONS[current]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_machine_id() -> str:
    return secrets.token_hex(7)  # Fly ids are 14 hex characters


def new_instance_id() -> str:
    alphabet = string.digits + "ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, ULID-like
    return "01" + "".join(secrets.choice(alphabet) for _ in range(24))


def new_private_ip() -> str:
    return "fdaa:0:{:x}:a7b:{:x}:{:x}:{:x}:2".format(*(secrets.randbelow(0xFFFF) for _ in range(4)))


_ADJECTIVES = ("quiet", "bold", "misty", "young", "ancient", "silent", "autumn", "patient")
_NOUNS = ("river", "sun", "forest", "meadow", "field", "snow", "lake", "cloud")


def new_machine_name() -> str:
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.randbelow(10000)}"


def image_ref(image: str) -> dict:
    """Split `registry/repository:tag` as Fly reports it; the digest is a stable fake."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = "docker.io", image
    path = path.partition("@")[0]
    repository, sep, tag = path.rpartition(":")
    if not sep or "/" in tag:
        repository, tag = path, "latest"
    digest = "sha256:" + hashlib.sha256(image.encode()).hexdigest()
    return {"registry": registry, "repository": repository, "tag": tag, "digest": digest,
            "labels": {}}


@dataclass
class Machine:
    id: str
    name: str
    app: str
    region: str
    config: dict  # as the client sent it (the original CALLBACK_URL included)
    command: ImageCommand
    env: dict[str, str]  # what the process gets (CALLBACK_URL possibly proxied)
    memory_mb: int
    auto_destroy: bool
    stop_signal: str | None
    stop_timeout: str | None
    callback_url: str | None  # the original CALLBACK_URL, where the proxy forwards
    orchestrator_url: str | None = None  # a pool machine's original ORCHESTRATOR_URL (proxied)
    state: MachineState = MachineState.CREATED
    instance_id: str = field(default_factory=new_instance_id)
    private_ip: str = field(default_factory=new_private_ip)
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    events: list[dict] = field(default_factory=list)
    process: subprocess.Popen | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    stop_requested: bool = False
    destroy_requested: bool = False
    crash_injected: bool = False
    fault: str | None = None  # the injected fault that ended or froze it (exit event "fault")
    hung: bool = False  # frozen by the hang fault: started, but does nothing any more
    # A pool machine's crash or hang waiting to strike: (kind, task_id, attempt).
    pending_task_fault: tuple[str, str, int] | None = None
    wake: threading.Event = field(default_factory=threading.Event)
    # A synthetic machine's job stops at once when set (cancelled, crashed or hung).
    halt: threading.Event = field(default_factory=threading.Event)
    runner: threading.Thread | None = None

    def record(self, state: MachineState, source: str, request: dict | None = None,
               event_type: str | None = None) -> None:
        self.state = state
        self.updated_at = now_iso()
        self.events.append({
            "id": new_instance_id(),
            "type": event_type or EVENT_TYPES[state],
            "status": state.value,
            "source": source,
            "timestamp": int(time.time() * 1000),
            "request": request or {},
        })

    def new_run(self) -> None:
        """Forget the last run (a stopped machine is started again): its exit, its faults,
        its process, its stop request; fresh events to wake and halt the next run."""
        self.process = None
        self.exit_code = None
        self.oom_killed = self.stop_requested = self.crash_injected = self.hung = False
        self.fault = None
        self.pending_task_fault = None
        self.wake = threading.Event()
        self.halt = threading.Event()

    def migrate(self) -> str:
        """Move to another (fake) host, as a migrated start does: a new private IP. Returns
        the new host's id."""
        self.private_ip = new_private_ip()
        return secrets.token_hex(4)

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "region": self.region,
            "instance_id": self.instance_id,
            "private_ip": self.private_ip,
            "config": self.config,
            "image_ref": image_ref(self.config["image"]),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "events": list(reversed(self.events)),  # newest first, as Fly lists them
            "checks": [],
        }
