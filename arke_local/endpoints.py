"""Where the local stack listens, and the environment it hands the orchestrator.

Only names and numbers live here: no process is started and no network is touched.
Every port has a default and an environment override, so a second stack (tests, the
demo) can run beside a `make up` on free ports.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

HOST = "127.0.0.1"
REGION = "us-east-1"
LOCAL_STAGE = "local"
# The Chalice stage the stack runs its own API with: it pins only STAGE, so the stack's
# environment (its ports, which tests and the demo choose freely) wins. The `local` stage of
# .chalice/config.json pins the default endpoints instead, for a hand-run `chalice local`.
STACK_CHALICE_STAGE = "local-stack"

# The dummy credentials of the local stack. moto accepts anything; these are not secrets.
LOCAL_AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# Dummy values for the local stage only (they open nothing outside this machine).
LOCAL_SECRETS = {
    "FLY_API_TOKEN": "local-fly-token",
    "R2_ACCOUNT_ID": "local",
    "R2_ACCESS_KEY_ID": "testing",
    "R2_SECRET_ACCESS_KEY": "testing",
    "CALLBACK_SIGNING_KEY": "local-callback-signing-key",
    "ADMIN_TOKEN": "local-admin-token",
}

QUEUE_NAME = "arke-preprocess-jobs"
DLQ_NAME = "preprocess-dlq"
R2_BUCKET = "arke-staging"

# (environment variable, default port)
PORT_ENV = {
    "moto": ("ARKE_MOTO_PORT", 5000),
    "fly": ("ARKE_FLY_PORT", 4280),
    "api": ("ARKE_API_PORT", 8000),
    "ingest": ("ARKE_INGEST_PORT", 4290),
}


@dataclass(frozen=True)
class Ports:
    moto: int = 5000
    fly: int = 4280
    api: int = 8000
    ingest: int = 4290

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Ports:
        environ = os.environ if environ is None else environ
        values = {name: int(environ.get(var, default)) for name, (var, default) in PORT_ENV.items()}
        return cls(**values)

    @classmethod
    def free(cls) -> Ports:
        return cls(**{name: free_port() for name in PORT_ENV})

    def all_free(self) -> bool:
        return all(port_is_free(p) for p in (self.moto, self.fly, self.api, self.ingest))


@dataclass(frozen=True)
class Endpoints:
    """URLs of one local stack; `worker_url` is the ingest receiver unless replaced."""

    ports: Ports = field(default_factory=Ports)
    host: str = HOST
    worker_url_override: str | None = None

    @property
    def aws(self) -> str:
        return f"http://{self.host}:{self.ports.moto}"

    @property
    def fly(self) -> str:
        return f"http://{self.host}:{self.ports.fly}"

    @property
    def api(self) -> str:
        return f"http://{self.host}:{self.ports.api}"

    @property
    def ingest(self) -> str:
        return f"http://{self.host}:{self.ports.ingest}"

    @property
    def worker_url(self) -> str:
        return self.worker_url_override or self.ingest

    def with_ports(self, ports: Ports) -> Endpoints:
        return replace(self, ports=ports)


def orchestrator_env(endpoints: Endpoints, stage: str = LOCAL_STAGE) -> dict[str, str]:
    """The environment of docs/interfaces.md for the orchestrator and the pump."""
    env = {
        "STAGE": stage,
        "AWS_ENDPOINT_URL": endpoints.aws,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "QUEUE_NAME": QUEUE_NAME,
        "DLQ_NAME": DLQ_NAME,
        "FLY_API_HOSTNAME": endpoints.fly,
        "ORCHESTRATOR_URL": endpoints.api,
        "WORKER_URL": endpoints.worker_url,
        "R2_ENDPOINT_URL": endpoints.aws,
        "R2_BUCKET": R2_BUCKET,
        "SSM_PREFIX": f"/arke-preprocess/{stage}/",
    }
    env.update(LOCAL_AWS_CREDENTIALS)
    env.update(LOCAL_SECRETS)
    return env


def runtime_dir(environ: dict[str, str] | None = None) -> Path:
    """Where the stack keeps its runtime files (moto's log, ...): outside the repo tree, so
    `chalice local`'s reloader, which watches every file under the project, never sees them.
    ARKE_LOCAL_STATE_DIR, else $XDG_CACHE_HOME/arke-local, else ~/.cache/arke-local."""
    environ = os.environ if environ is None else environ
    if environ.get("ARKE_LOCAL_STATE_DIR"):
        return Path(environ["ARKE_LOCAL_STATE_DIR"]).expanduser()
    cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "arke-local"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True
