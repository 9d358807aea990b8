"""`arke-preprocess local up`: serves on the ports it prints, and SIGTERM stops every
process it started, machines' process groups included."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from arke_local.endpoints import Ports
from arke_local.stack import _group_alive

pytestmark = pytest.mark.e2e
REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "arke-preprocess")


def test_e2e_local_up_serves_and_sigterm_leaves_nothing(tmp_path):
    ports = Ports.free()
    env = dict(os.environ)
    env.update({
        "ARKE_MOTO_PORT": str(ports.moto), "ARKE_FLY_PORT": str(ports.fly),
        "ARKE_API_PORT": str(ports.api), "ARKE_INGEST_PORT": str(ports.ingest),
    })
    env.pop("WORKER_URL", None)
    out_path = tmp_path / "up.log"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([CLI, "local", "up", "--log-dir", str(tmp_path / "logs")],
                                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "ready" not in out_path.read_text():
            assert proc.poll() is None, out_path.read_text()
            time.sleep(0.2)
        text = out_path.read_text()
        assert "ready" in text, text
        for port in (ports.moto, ports.fly, ports.api, ports.ingest):
            assert f":{port}" in text
        health = requests.get(f"http://127.0.0.1:{ports.api}/health", timeout=5).json()
        assert health["status"] == "ok"
        assert requests.get(f"http://127.0.0.1:{ports.ingest}/received", timeout=5).ok
        assert requests.get(f"http://127.0.0.1:{ports.fly}/_emulator/stats", timeout=5).ok
        groups = [int(p) for p in re.findall(r"started \(pid (\d+)", text)]
        assert len(groups) == 5
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not [g for g in groups if _group_alive(g)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
