"""A hand-run `chalice local --stage local` beside the stack: no variable set by hand, the
routes answer from the stack's moto, and the stack writing its runtime files does not make
chalice's reloader restart the server.

The `local` stage names the stack's *default* endpoints, so this test needs moto on the
default port 5000 (free on CI's fresh machine; skipped when something else holds it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from arke_local.endpoints import (
    LOCAL_SECRETS,
    Endpoints,
    Ports,
    free_port,
    port_is_free,
    runtime_dir,
)
from arke_local.stack import Component, ProcessSupervisor

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RESTART_LINE = "Restarting local dev server."  # chalice's reloader logs it on every restart


def clean_env() -> dict[str, str]:
    """The environment of a new shell: none of the stack's or AWS's variables."""
    drop = ("AWS_", "ARKE_", "STAGE", "QUEUE_NAME", "DLQ_NAME", "FLY_", "R2_", "WORKER_URL",
            "ORCHESTRATOR_URL", "SSM_PREFIX", "CHALICE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.pop("ADMIN_TOKEN", None)
    return env


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise AssertionError(f"{url} not up after {timeout_s} s\n{log.read_text()}")


@pytest.fixture
def default_moto(tmp_path):
    ports = Ports()
    if not port_is_free(ports.moto):
        pytest.skip(f"port {ports.moto} is in use (a `make up`?): the local stage needs moto there")
    log = tmp_path / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "arke_local.moto_server", "-H", "127.0.0.1",
                                 "-p", str(ports.moto)], cwd=REPO, env=clean_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"{Endpoints(ports).aws}/moto-api/", proc, log)
        infra = subprocess.run([sys.executable, "-m", "arke_local.cli", "infra", "--stage", "local"], cwd=REPO,
                               env=clean_env(), capture_output=True, text=True, timeout=120)
        assert infra.returncode == 0, infra.stdout + infra.stderr
        yield Endpoints(ports)
    finally:
        proc.terminate()
        proc.wait(10)


def test_runtime_dir_is_outside_the_tree_and_configurable(tmp_path):
    assert not runtime_dir().resolve().is_relative_to(REPO)
    assert runtime_dir({"ARKE_LOCAL_STATE_DIR": str(tmp_path)}) == tmp_path
    assert runtime_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "arke-local"
    assert ProcessSupervisor().quiet_dir == runtime_dir() / "logs"


def test_chalice_local_stage_serves_the_routes_and_ignores_the_stacks_files(default_moto, tmp_path):
    port = free_port()
    log = tmp_path / "chalice.log"
    with open(log, "wb") as out:  # autoreload on, as a user runs it
        chalice = subprocess.Popen([str(BIN / "chalice"), "local", "--stage", "local", "--port", str(port)],
                                   cwd=REPO, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    api = f"http://127.0.0.1:{port}"
    supervisor = ProcessSupervisor()  # the stack's, with its default place for runtime files
    try:
        wait_http(f"{api}/health", chalice, log)
        # A route that reads DynamoDB (table names, endpoint, credentials from the stage) ...
        unknown = requests.get(f"{api}/status/batch_nope", timeout=10)
        assert unknown.status_code == 404, unknown.text
        # ... and one that needs a secret from the stack's SSM (the admin token).
        token = {"Authorization": f"Bearer {LOCAL_SECRETS['ADMIN_TOKEN']}"}
        assert requests.post(f"{api}/admin/reset/batch_nope", headers=token, timeout=10).status_code == 404
        assert requests.post(f"{api}/admin/reset/batch_nope", headers={"Authorization": "Bearer wrong"},
                             timeout=10).status_code == 403

        # The stack writes its runtime files (a quiet component's log, as moto's) for a while;
        # the reloader polls the project tree once a second.
        writer = Component("writer", [sys.executable, "-c",
                                      "import time\nfor i in range(40):\n print(i, flush=True); time.sleep(0.1)"],
                           quiet=True)
        running = supervisor.start(writer, clean_env(), REPO)
        running.process.wait(30)
        assert running.log_path is not None and running.log_path.stat().st_size > 0
        time.sleep(2.5)  # two more polls
        assert chalice.poll() is None
        assert RESTART_LINE not in log.read_text(), log.read_text()
        assert requests.get(f"{api}/status/batch_nope", timeout=10).status_code == 404
    finally:
        supervisor.stop_all()
        (supervisor.quiet_dir / "writer.log").unlink(missing_ok=True)
        os.killpg(chalice.pid, 15)
        chalice.wait(10)
