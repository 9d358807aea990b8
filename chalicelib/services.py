"""The process's long-lived parts, built once per cold start and shared by all handlers:
settings, the phase registry, secrets, the Fly client, and the outbound-pressure limits."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import requests

from . import r2
from .fly import FlyClient
from .models import configure_models
from .phases import PhaseRegistry, default_registry
from .phases.base import Presign
from .pool.candidates import Candidates
from .ratelimit import RetryAfterGate, TokenBucket
from .secrets import load_secrets, secret
from .settings import Settings, get_settings
from .store import ready_tasks_from


@dataclass
class Services:
    settings: Settings
    registry: PhaseRegistry
    bucket: TokenBucket
    gate: RetryAfterGate = field(default_factory=RetryAfterGate)
    http: requests.Session = field(default_factory=requests.Session)
    _fly: FlyClient | None = None
    _presign: Presign | None = None
    _r2: object | None = None
    _r2_lock: threading.Lock = field(default_factory=threading.Lock)
    # pool pulls' recent reads of their batches (pool/machine_api.py): batch id -> (when, batch)
    pulled_batches: dict = field(default_factory=dict)
    # ready tasks read for pool pulls, one handed to each (pool/candidates.py)
    candidates: Candidates = field(default_factory=lambda: Candidates(ready_tasks_from))

    def secrets(self) -> dict[str, str]:
        return load_secrets(self.settings)

    def presign(self) -> Presign:
        if self._presign is None:
            self._presign = r2.presigner(self.settings, self.secrets())
        return self._presign

    def r2(self):  # noqa: ANN201 - a boto3 S3 client, shared by the spawn threads
        """The orchestrator's R2 client for TIFF headers (short timeouts); boto3 clients are thread-safe
        once made, but making them is not, hence the lock."""
        with self._r2_lock:
            if self._r2 is None:
                self._r2 = r2.client(self.settings, self.secrets(), r2.HEADER_READ_TIMEOUT_S,
                                     r2.HEADER_READ_ATTEMPTS, r2.HEADER_CONNECT_TIMEOUT_S)
            return self._r2

    def fly(self) -> FlyClient:
        if self._fly is None:
            self._fly = FlyClient(self.settings, secret(self.settings, "FLY_API_TOKEN"))
        return self._fly


_lock = threading.Lock()
_services: Services | None = None


def build_services(settings: Settings, registry: PhaseRegistry | None = None) -> Services:
    configure_models(settings)
    return Services(
        settings=settings,
        registry=registry or default_registry(),
        bucket=TokenBucket(settings.fly_create_rate, settings.fly_create_burst),
    )


def get_services() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = build_services(get_settings())
        return _services


def use_services(services: Services | None) -> None:
    """Install (or with None, drop) the process's services: tests and the local stack."""
    global _services
    with _lock:
        _services = services
