"""The supervisor: every process group it started is gone after stop, stubborn ones too;
the stack's environment follows docs/interfaces.md; the CLI parses as documented."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from arke_local.cli import build_parser
from arke_local.endpoints import STACK_CHALICE_STAGE, Ports, orchestrator_env
from arke_local.stack import (
    Component,
    LocalStack,
    ProcessSupervisor,
    StackError,
    StackOptions,
    _group_alive,
)

SPAWNS_A_GRANDCHILD = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "print('up', flush=True); time.sleep(60)"
)
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(60)"
)


def _wait_for_line(path, text, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


def test_stop_leaves_no_process_behind(tmp_path):
    sup = ProcessSupervisor(log_dir=tmp_path)
    env = dict(os.environ)
    a = sup.start(Component("tree", [sys.executable, "-c", SPAWNS_A_GRANDCHILD]), env, tmp_path)
    b = sup.start(Component("stubborn", [sys.executable, "-c", IGNORES_SIGTERM]), env, tmp_path)
    _wait_for_line(tmp_path / "tree.log", "up")
    _wait_for_line(tmp_path / "stubborn.log", "up")
    groups = [a.pgid, b.pgid]
    assert all(_group_alive(g) for g in groups)
    started = time.monotonic()
    sup.stop_all(grace_s=1.0)
    assert time.monotonic() - started < 8
    assert not any(_group_alive(g) for g in groups)
    assert sup.running == []


def test_stack_environment_names():
    ports = Ports(moto=15000, fly=14280, api=18000, ingest=14290)
    stack = LocalStack(StackOptions(ports=ports, extra_env={"FLY_CREATE_RATE": "20"}))
    env = stack.env()
    assert env["STAGE"] == "local"
    assert env["AWS_ENDPOINT_URL"] == env["R2_ENDPOINT_URL"] == "http://127.0.0.1:15000"
    assert env["FLY_API_HOSTNAME"] == "http://127.0.0.1:14280"
    assert env["ORCHESTRATOR_URL"] == "http://127.0.0.1:18000"
    assert env["WORKER_URL"] == "http://127.0.0.1:14290"
    assert env["FLY_EMULATOR_PORT"] == "14280"
    assert env["FLY_CREATE_RATE"] == "20"
    assert env["R2_BUCKET"] == "arke-staging" and env["SSM_PREFIX"] == "/arke-preprocess/local/"
    names = [c.name for group in stack.components() for c in group]
    assert names == ["moto", "ingest", "fly", "api", "pump"]


def test_worker_url_replaces_the_receiver():
    stack = LocalStack(StackOptions(ports=Ports(), worker_url="http://127.0.0.1:9999"))
    assert stack.env()["WORKER_URL"] == "http://127.0.0.1:9999"
    assert "ingest" not in [c.name for group in stack.components() for c in group]


def test_ports_from_env():
    ports = Ports.from_env({"ARKE_API_PORT": "8100", "ARKE_MOTO_PORT": "5100"})
    assert (ports.api, ports.moto, ports.fly, ports.ingest) == (8100, 5100, 4280, 4290)


def test_cli_parses_options_before_and_after_the_command():
    parser = build_parser()
    a = parser.parse_args(["--api-url", "http://x", "tasks", "b1", "--failed"])
    b = parser.parse_args(["tasks", "b1", "--api-url", "http://x", "--failed"])
    assert a.api_url == b.api_url == "http://x" and a.failed and b.failed
    c = parser.parse_args(["submit", "dir", "--no-watch", "--manifest", "always"])
    assert c.folder == "dir" and c.no_watch and c.manifest == "always" and c.api_url is None
    assert parser.parse_args(["local", "up"]).action == "up"


def test_a_busy_port_is_refused_before_anything_starts():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        free = Ports.free()
        stack = LocalStack(StackOptions(ports=Ports(moto=busy, fly=free.fly, api=free.api, ingest=free.ingest)))
        with pytest.raises(StackError, match=f"moto {busy}"):
            stack.start()
        assert stack.supervisor.running == []


def test_chalice_local_stage_does_not_override_the_stack_environment():
    """`chalice local` puts the stage's environment_variables over the process's own, so a
    name the stack sets (ports, endpoints, credentials) must not be pinned in config.json:
    it would break every stack on other ports (tests, the demo beside `make up`)."""
    config = json.loads((Path(__file__).resolve().parents[2] / ".chalice" / "config.json").read_text())
    local = config["stages"][STACK_CHALICE_STAGE]
    pinned = set(local.get("environment_variables", {})) | set(config.get("environment_variables", {}))
    controlled = set(orchestrator_env(LocalStack().endpoints)) - {"STAGE"}
    assert not pinned & controlled, f"set by the stack, not in .chalice/config.json: {sorted(pinned & controlled)}"


def test_the_stack_emulator_holds_a_250_machine_pool(monkeypatch):
    from arke_local.fly_emulator import EmulatorSettings

    monkeypatch.delenv("FLY_EMULATOR_MAX_MACHINES", raising=False)
    env = LocalStack(StackOptions(ports=Ports())).env()
    assert EmulatorSettings.from_env(env).max_machines >= 250 > EmulatorSettings().max_machines
    monkeypatch.setenv("FLY_EMULATOR_MAX_MACHINES", "40")  # the caller's word wins
    assert EmulatorSettings.from_env(LocalStack(StackOptions(ports=Ports())).env()).max_machines == 40
