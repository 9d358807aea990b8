"""Fixtures of the end-to-end tests: the whole local stack as real processes on loopback
(free ports, so a running `make up` is left alone), sped up through the orchestrator's and
the emulator's own environment knobs, and one generated sample batch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from arke_local.client import OrchestratorClient
from arke_local.endpoints import Ports
from arke_local.samples import Sample, generate_batch
from arke_local.stack import LocalStack, StackOptions
from arke_local.target import Target, resolve

REPO_ROOT = Path(__file__).resolve().parents[2]

# Knobs of the orchestrator (chalicelib.settings) and the emulator (FLY_EMULATOR_*).
E2E_ENV = {
    "FLY_CREATE_RATE": "25",
    "FLY_CREATE_BURST": "25",
    "FLY_EMULATOR_CREATE_RATE": "25",
    "FLY_EMULATOR_CREATE_BURST": "25",
    "ALARM_DELAY_TIFF_CONVERSION": "500",
    "ALARM_DELAY_ERROR_RETRY": "1000",
    "TASK_TIMEOUT_TIFF_CONVERSION": "20000",
    "ARKE_PUMP_WAIT_S": "1",
    "ARKE_PUMP_RETRY_VISIBILITY_S": "1",
    # 2 cores: more machines at once only make each slower (and time out).
    "MAX_MACHINES_IN_FLIGHT": "6",
}
NO_FAULTS = {
    "rate_429": 0.0,
    "rate_5xx": 0.0,
    "create_timeout_rate": 0.0,
    "crash_before_callback_rate": 0.0,
    "duplicate_callback_rate": 0.0,
    "callback_delay_s": 0.0,
    "boot_delay_s": 0.0,
    "script": [],
    "callback_script": [],
}


@dataclass
class E2EStack:
    stack: LocalStack
    target: Target
    api: OrchestratorClient
    log_dir: Path

    @property
    def fly_url(self) -> str:
        return self.stack.endpoints.fly

    @property
    def ingest_url(self) -> str:
        return self.stack.endpoints.ingest

    def emulator_stats(self) -> dict:
        return requests.get(f"{self.fly_url}/_emulator/stats", timeout=10).json()

    def set_faults(self, **knobs) -> dict:
        resp = requests.post(f"{self.fly_url}/_emulator/faults", json=knobs, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def clear_faults(self) -> dict:
        return self.set_faults(**NO_FAULTS)

    def received(self, batch_id: str) -> dict:
        return requests.get(f"{self.ingest_url}/received/{batch_id}", timeout=10).json()

    def log_tails(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(out)


def run_local_stack(tmp_path_factory, name: str, extra_env: dict[str, str], handle_class: type):
    """Start the whole local stack on free loopback ports with `extra_env`, yield a
    `handle_class` for it, and stop it (every process group) at the end."""
    log_dir = tmp_path_factory.mktemp(f"{name}-logs")
    stack = LocalStack(
        StackOptions(ports=Ports.free(), log_dir=log_dir, extra_env=dict(extra_env), project_dir=REPO_ROOT)
    )
    started = time.monotonic()
    stack.start()
    print(f"\n[{name}] stack up in {time.monotonic() - started:.1f} s; logs in {log_dir}")
    target = resolve(stage="local", api_url=stack.endpoints.api, endpoint_url=stack.endpoints.aws, environ={})
    client = OrchestratorClient(stack.endpoints.api, admin_token=target.admin_token)
    try:
        yield handle_class(stack, target, client, log_dir)
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def e2e_local_stack(tmp_path_factory):
    """The whole local stack (moto, infra, Fly emulator, chalice local, pump, ingest
    receiver) on free loopback ports; stopped, with every process group, at the end."""
    yield from run_local_stack(tmp_path_factory, "e2e", E2E_ENV, E2EStack)


@pytest.fixture(scope="session")
def e2e_sample_batch(tmp_path_factory) -> tuple[Path, list[Sample]]:
    """22 good TIFFs of every kind, one corrupt TIFF, and two files that are not TIFFs."""
    folder = tmp_path_factory.mktemp("e2e-batch")
    return folder, generate_batch(folder, 23, seed=2024, broken=1, max_side=240)
