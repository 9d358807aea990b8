"""Injected faults: scripted create answers, random rates with a seed, create timeouts,
boot delay, and the callback proxy's crash / duplicate / delay."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import requests

from arke_local.fly_emulator import FaultSettings

IDLE_IMAGE = "test/idle:1"
IMAGE = "test/callback:1"

CALLBACK_SCRIPT = r"""
import json, os, time, urllib.request
body = json.dumps({"task_id": os.environ["TASK_ID"], "status": "success"}).encode()
request = urllib.request.Request(os.environ["CALLBACK_URL"], data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(request, timeout=10) as response:
        response.read()
except Exception as exc:
    print("callback failed:", exc)
    raise SystemExit(3)
"""


def idle_body(name: str) -> dict:
    return {"name": name, "config": {"image": IDLE_IMAGE, "auto_destroy": True,
                                     "restart": {"policy": "no"}}}


def callback_body(name: str, callback_url: str) -> dict:
    return {"name": name, "config": {
        "image": IMAGE, "auto_destroy": True, "restart": {"policy": "no"},
        "env": {"TASK_ID": name, "CALLBACK_URL": callback_url},
        "guest": {"memory_mb": 256, "cpus": 1, "cpu_kind": "shared"}}}


@pytest.fixture
def callback_images(tmp_path: Path) -> dict:
    path = tmp_path / "callback.py"
    path.write_text(CALLBACK_SCRIPT)
    return {IMAGE: [sys.executable, str(path)], IDLE_IMAGE: "idle"}


def test_scripted_create_answers_in_order(fly_emulator_factory, fly_emulator_client):
    faults = FaultSettings(script=[429, 500, "timeout", 200], create_timeout_delay_s=1.5)
    fly = fly_emulator_client(fly_emulator_factory(images={IDLE_IMAGE: "idle"}, faults=faults))

    first = fly.create(idle_body("a"))
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "1"
    assert first.json() == {"error": "rate limit exceeded"}
    second = fly.create(idle_body("a"))
    assert second.status_code == 500
    assert set(second.json()) == {"error"}
    assert fly.list(include_deleted="true").json() == []  # refused creates create nothing

    with pytest.raises(requests.Timeout):
        fly.create(idle_body("a"), timeout=0.5)
    [created] = fly.list().json()  # the timed-out create did create the machine
    assert created["name"] == "a"
    assert fly.create(idle_body("a")).status_code == 409  # a retry under the same name

    assert fly.create(idle_body("b")).status_code == 200
    stats = fly.stats()
    assert (stats["injected_429"], stats["injected_5xx"], stats["injected_create_timeouts"]) == (
        1, 1, 1)
    assert stats["creates_accepted"] == 2
    assert fly.admin("GET", "faults").json()["script"] == []


def test_fault_knobs_via_admin_endpoint_with_a_seed(fly_emulator_factory, fly_emulator_client):
    fly = fly_emulator_client(fly_emulator_factory(images={IDLE_IMAGE: "idle"}))
    assert fly.admin("POST", "faults", {"rate_429": 2}).status_code == 400
    assert fly.admin("POST", "faults", {"rate_1000": 0.5}).status_code == 400
    assert fly.admin("POST", "faults", {"script": ["maybe"]}).status_code == 400

    def run() -> list[int]:
        fly.admin("POST", "faults", {"rate_429": 0.3, "rate_5xx": 0.3, "seed": 7})
        return [fly.create(idle_body(f"m-{time.monotonic_ns()}")).status_code for _ in range(12)]

    first = run()
    assert run() == first  # the same seed gives the same faults
    assert {429, 503, 200} <= set(first)
    snapshot = fly.admin("GET", "faults").json()
    assert snapshot["rate_429"] == 0.3 and snapshot["seed"] == 7
    stats = fly.stats()
    assert stats["injected_429"] == 2 * first.count(429)
    assert stats["injected_5xx"] == 2 * first.count(503)

    fly.admin("POST", "faults", {"rate_429": 0, "rate_5xx": 0})
    assert fly.create(idle_body("after")).status_code == 200


def test_boot_delay_holds_the_machine_before_started(fly_emulator_factory, fly_emulator_client):
    fly = fly_emulator_client(fly_emulator_factory(images={IDLE_IMAGE: "idle"},
                                                   faults=FaultSettings(boot_delay_s=0.6)))
    started_at = time.monotonic()
    machine = fly.create(idle_body("slow")).json()
    assert fly.get(machine["id"]).json()["state"] == "created"
    assert fly.wait(machine["id"], "started").status_code == 200
    assert time.monotonic() - started_at >= 0.5


def test_crash_before_callback_drops_it_and_kills_the_machine(
        callback_images, fly_emulator_factory, fly_emulator_client,
        fly_emulator_callback_receiver):
    receiver = fly_emulator_callback_receiver
    fly = fly_emulator_client(fly_emulator_factory(
        images=callback_images, faults=FaultSettings(crash_before_callback_rate=1.0)))
    machine = fly.create(callback_body("crashy", f"{receiver.url}/callback/b/crashy")).json()
    done = fly.machine_until(machine["id"], "destroyed")
    assert done["state"] == "destroyed"
    exit_event = next(e for e in done["events"] if e["type"] == "exit")["request"]["exit_event"]
    assert exit_event["exit_code"] != 0
    assert exit_event["fault"] == "crash_before_callback"
    assert receiver.wait_for(1, timeout=0.5) == []
    stats = fly.stats()
    assert stats["crashes_before_callback"] == 1
    assert stats["callbacks_forwarded"] == 0
    assert stats["machines_exited_nonzero"] == 1


def test_duplicate_callback_arrives_twice(callback_images, fly_emulator_factory,
                                          fly_emulator_client, fly_emulator_callback_receiver):
    receiver = fly_emulator_callback_receiver
    fly = fly_emulator_client(fly_emulator_factory(
        images=callback_images, faults=FaultSettings(duplicate_callback_rate=1.0)))
    machine = fly.create(callback_body("dup", f"{receiver.url}/callback/b/dup?attempt=1")).json()
    first, second = receiver.wait_for(2)
    assert first.body == second.body and first.query == second.query == "attempt=1"
    done = fly.machine_until(machine["id"], "destroyed")
    assert next(e for e in done["events"] if e["type"] == "exit")["request"]["exit_event"][
        "exit_code"] == 0
    stats = fly.stats()
    assert stats["duplicate_callbacks"] == 1 and stats["callbacks_forwarded"] == 2


def test_callback_script_and_delay(callback_images, fly_emulator_factory, fly_emulator_client,
                                   fly_emulator_callback_receiver):
    receiver = fly_emulator_callback_receiver
    faults = FaultSettings(callback_script=["duplicate", "forward"], callback_delay_s=0.4)
    fly = fly_emulator_client(fly_emulator_factory(images=callback_images, faults=faults))
    began = time.monotonic()
    fly.create(callback_body("one", f"{receiver.url}/cb/one"))
    assert len(receiver.wait_for(2)) == 2
    assert time.monotonic() - began >= 0.4
    fly.create(callback_body("two", f"{receiver.url}/cb/two"))
    received = receiver.wait_for(3)
    time.sleep(0.5)
    assert [r.path for r in receiver.received] == ["/cb/one", "/cb/one", "/cb/two"]
    assert len(received) == 3
    assert fly.stats()["callbacks_delayed"] == 2


def test_unknown_callback_machine_is_404(fly_emulator_factory, fly_emulator_client):
    fly = fly_emulator_client(fly_emulator_factory())
    response = requests.post(f"{fly.emulator.url}/_emulator/callback/nope", json={}, timeout=5)
    assert response.status_code == 404
    assert "error" in response.json()
