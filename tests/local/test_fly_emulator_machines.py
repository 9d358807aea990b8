"""Machines as real child processes: environment, callback proxy, memory limit,
auto_destroy, stop signals and shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from arke_local.fly_emulator import FlyEmulator
from arke_local.fly_emulator.settings import REPO_ROOT

IMAGE = "test/machine:1"

CALLBACK_SCRIPT = r"""
import json, os, urllib.request
url = os.environ["CALLBACK_URL"]
body = json.dumps({"task_id": os.environ["TASK_ID"], "batch_id": os.environ["BATCH_ID"],
                   "status": "success", "seen_callback_url": url}).encode()
request = urllib.request.Request(url, data=body, method="POST", headers={
    "Content-Type": "application/json", "Authorization": "Bearer callback-secret",
    "X-Callback-Token": "token-123"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(request, timeout=10) as response:
        response.read()
except Exception as exc:
    print("callback failed:", exc)
    raise SystemExit(3)
"""

ENV_DUMP_SCRIPT = r"""
import json, os, sys
with open(sys.argv[1], "w") as f:
    json.dump(dict(os.environ), f)
"""

ALLOCATE_SCRIPT = r"""
import time
chunks = []
for _ in range(64):                # up to 1 GiB, 16 MiB at a time, every page touched
    chunks.append(b"x" * (16 << 20))
    time.sleep(0.01)
print("allocated everything; the limit was not enforced")
"""

CHILD_HOG_SCRIPT = r"""
import subprocess, sys
child = subprocess.run([sys.executable, "-c", "import time\n"
                        "chunks = [b'x' * (16 << 20) for _ in range(64)]\ntime.sleep(30)"])
print("child ended with", child.returncode)
sys.exit(0 if child.returncode == -9 else 5)
"""

SLEEP_SCRIPT = r"""
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with open(sys.argv[1], "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
time.sleep(120)
"""

EXIT_SCRIPT = "import sys; sys.exit(int(sys.argv[1]))"


def machine_body(name: str, env: dict[str, str] | None = None, memory_mb: int = 256,
                 auto_destroy: bool = True) -> dict:
    return {"name": name, "region": "ord", "config": {
        "image": IMAGE, "env": env or {}, "auto_destroy": auto_destroy,
        "restart": {"policy": "no"},
        "guest": {"memory_mb": memory_mb, "cpus": 1, "cpu_kind": "shared"}}}


def script(tmp_path: Path, text: str, *args: str) -> dict:
    path = tmp_path / "machine_script.py"
    path.write_text(text)
    return {IMAGE: {"argv": [sys.executable, str(path), *args], "cwd": str(tmp_path)}}


def exit_event(machine: dict) -> dict:
    exits = [e for e in machine["events"] if e["type"] == "exit"]
    assert exits, machine["events"]
    return exits[0]["request"]["exit_event"]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(predicate, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_callback_reaches_the_receiver_through_the_proxy_intact(
        tmp_path, fly_emulator_factory, fly_emulator_client, fly_emulator_callback_receiver):
    receiver = fly_emulator_callback_receiver
    fly = fly_emulator_client(fly_emulator_factory(images=script(tmp_path, CALLBACK_SCRIPT)))
    callback_url = f"{receiver.url}/callback/batch_a/batch_a_tiff_1?attempt=2"
    machine = fly.create(machine_body("tiff-1", {"TASK_ID": "batch_a_tiff_1",
                                                 "BATCH_ID": "batch_a",
                                                 "CALLBACK_URL": callback_url})).json()
    assert machine["config"]["env"]["CALLBACK_URL"] == callback_url  # the API shows the original

    [callback] = receiver.wait_for(1)
    assert callback.path == "/callback/batch_a/batch_a_tiff_1"
    assert callback.query == "attempt=2"
    assert callback.headers["Authorization"] == "Bearer callback-secret"
    assert callback.headers["X-Callback-Token"] == "token-123"
    body = callback.json()
    assert body["task_id"] == "batch_a_tiff_1" and body["status"] == "success"
    seen = body["seen_callback_url"]
    assert seen == f"{fly.emulator.url}/_emulator/callback/{machine['id']}?attempt=2"

    done = fly.machine_until(machine["id"], "destroyed")
    assert done["state"] == "destroyed"
    assert exit_event(done)["exit_code"] == 0
    stats = fly.stats()
    assert stats["callbacks_received"] == stats["callbacks_forwarded"] == 1
    assert stats["machines_destroyed"] == 1


def test_machine_env_is_its_config_env_and_nothing_leaks(
        tmp_path, monkeypatch, fly_emulator_factory, fly_emulator_client):
    monkeypatch.setenv("EMULATOR_ONLY_SECRET", "must-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak-either")
    out = tmp_path / "env.json"
    fly = fly_emulator_client(fly_emulator_factory(images=script(tmp_path, ENV_DUMP_SCRIPT,
                                                                 str(out))))
    machine = fly.create(machine_body("env-1", {"TASK_ID": "t", "R2_BUCKET": "arke-staging"}))
    assert fly.machine_until(machine.json()["id"], "destroyed")["state"] == "destroyed"
    env = json.loads(out.read_text())
    assert env["TASK_ID"] == "t" and env["R2_BUCKET"] == "arke-staging"
    assert env["FLY_MACHINE_ID"] == machine.json()["id"]
    assert "EMULATOR_ONLY_SECRET" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    allowed = {"TASK_ID", "R2_BUCKET", "PATH", "LANG", "LC_ALL", "TMPDIR", "FLY_MACHINE_ID",
               "FLY_APP_NAME", "FLY_REGION", "FLY_IMAGE_REF", "FLY_VM_MEMORY_MB", "LC_CTYPE"}
    assert set(env) <= allowed, set(env) - allowed


def test_memory_limit_kills_a_process_beyond_guest_memory_mb(
        tmp_path, fly_emulator_factory, fly_emulator_client):
    fly = fly_emulator_client(fly_emulator_factory(images=script(tmp_path, ALLOCATE_SCRIPT)))
    machine = fly.create(machine_body("hog", memory_mb=128)).json()
    done = fly.machine_until(machine["id"], "destroyed", timeout=20)
    assert done["state"] == "destroyed"
    event = exit_event(done)
    assert event["exit_code"] == 137
    assert event["oom_killed"] is True
    assert fly.stats()["oom_kills"] == 1


def test_memory_limit_kills_the_biggest_process_like_the_oom_killer(
        tmp_path, fly_emulator_factory, fly_emulator_client):
    fly = fly_emulator_client(fly_emulator_factory(images=script(tmp_path, CHILD_HOG_SCRIPT)))
    machine = fly.create(machine_body("child-hog", memory_mb=128)).json()
    done = fly.machine_until(machine["id"], "destroyed", timeout=20)
    event = exit_event(done)
    assert (event["exit_code"], event["oom_killed"]) == (0, False)  # the parent survived
    assert fly.stats()["oom_kills"] == 1


@pytest.mark.parametrize(("auto_destroy", "final"), [(True, "destroyed"), (False, "stopped")])
def test_auto_destroy_decides_what_happens_after_exit(
        tmp_path, fly_emulator_factory, fly_emulator_client, auto_destroy, final):
    fly = fly_emulator_client(fly_emulator_factory(images=script(tmp_path, EXIT_SCRIPT, "4")))
    machine = fly.create(machine_body("exit-4", auto_destroy=auto_destroy)).json()
    done = fly.machine_until(machine["id"], final)
    assert done["state"] == final
    assert exit_event(done)["exit_code"] == 4
    assert exit_event(done)["restarting"] is False  # restart policy "no"
    time.sleep(0.3)
    assert fly.get(machine["id"]).json()["state"] == final  # never restarted
    listed = [m["id"] for m in fly.list().json()]
    assert listed == ([] if auto_destroy else [machine["id"]])
    assert fly.stats()["machines_exited_nonzero"] == 1


def test_stop_signals_the_process_and_records_a_requested_stop(
        tmp_path, fly_emulator_factory, fly_emulator_client):
    pids = tmp_path / "pids"
    fly = fly_emulator_client(fly_emulator_factory(images=script(tmp_path, SLEEP_SCRIPT,
                                                                 str(pids))))
    machine = fly.create(machine_body("sleeper", auto_destroy=False)).json()
    assert wait_until(lambda: pids.exists() and pids.read_text())
    main_pid, child_pid = map(int, pids.read_text().split())
    assert fly.stop(machine["id"], {"signal": "SIGTERM", "timeout": "5s"}).json() == {"ok": True}
    assert fly.wait(machine["id"], "stopped").status_code == 200
    event = exit_event(fly.get(machine["id"]).json())
    assert event["requested_stop"] is True and event["exit_code"] == 143
    assert wait_until(lambda: not alive(main_pid) and not alive(child_pid))


def test_shutdown_kills_every_machine_process(tmp_path, fly_emulator_client):
    pids = tmp_path / "pids"
    emulator = FlyEmulator(port=0, create_rate=0,
                           images=script(tmp_path, SLEEP_SCRIPT, str(pids))).start()
    try:
        fly = fly_emulator_client(emulator)
        fly.create(machine_body("sleeper"))
        assert wait_until(lambda: pids.exists() and pids.read_text())
        main_pid, child_pid = map(int, pids.read_text().split())
        assert alive(main_pid) and alive(child_pid)
    finally:
        emulator.stop()
    assert wait_until(lambda: not alive(main_pid) and not alive(child_pid), timeout=5)


STUBBORN_SCRIPT = r"""
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
time.sleep(120)
"""


def test_stop_kills_after_the_timeout_when_the_signal_is_ignored(
        tmp_path, fly_emulator_factory, fly_emulator_client):
    pid_file = tmp_path / "pid"
    fly = fly_emulator_client(fly_emulator_factory(images=script(tmp_path, STUBBORN_SCRIPT,
                                                                 str(pid_file))))
    machine = fly.create(machine_body("stubborn")).json()
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text())
    began = time.monotonic()
    fly.stop(machine["id"], {"timeout": "300ms"})
    done = fly.machine_until(machine["id"], "destroyed")
    assert done["state"] == "destroyed"
    assert 0.25 <= time.monotonic() - began < 5
    assert exit_event(done)["exit_code"] == 137
    assert not alive(int(pid_file.read_text()))


def test_module_entry_point_cleans_up_on_sigterm(tmp_path):
    pids = tmp_path / "pids"
    images = script(tmp_path, SLEEP_SCRIPT, str(pids))
    env = {"PATH": os.environ.get("PATH", ""), "FLY_EMULATOR_PORT": "0",
           "FLY_EMULATOR_IMAGES": json.dumps(images)}
    emulator = subprocess.Popen([sys.executable, "-m", "arke_local.fly_emulator"],
                                cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        first_line = emulator.stderr.readline()
        url = re.search(r"listening on (http://\S+)", first_line).group(1)
        response = requests.post(f"{url}/v1/apps/a/machines", json=machine_body("s"),
                                 headers={"Authorization": "Bearer x"}, timeout=10)
        assert response.status_code == 200, response.text
        assert wait_until(lambda: pids.exists() and pids.read_text())
        main_pid, child_pid = map(int, pids.read_text().split())
        emulator.send_signal(signal.SIGTERM)
        assert emulator.wait(timeout=10) == 0
        rest = emulator.stderr.read()
        assert "[FlyEmulator] stopped" in rest
        assert "Bearer" not in first_line + rest
    finally:
        if emulator.poll() is None:
            emulator.kill()
            emulator.wait()
    assert wait_until(lambda: not alive(main_pid) and not alive(child_pid), timeout=5)
