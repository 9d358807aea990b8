"""The orchestrator's Fly client (chalicelib/fly.py) against the Fly emulator over real HTTP:
the calls a standing pool makes (create with skip_launch, start, stop, update, list) and the
errors they come back with (FlyStartRefusedError, FlyRateLimitedError, FlyError)."""

from __future__ import annotations

import pytest
import requests

from arke_local.fly_emulator import FaultSettings
from chalicelib.errors import FlyError, FlyRateLimitedError, FlyStartRefusedError
from chalicelib.fly import FlyClient
from chalicelib.settings import Settings

IDLE_IMAGE = "test/idle:1"
APP = "arke-tiff-worker"  # the fixtures' app and token (tests/local/conftest.py)
TOKEN = "test-token"


def request(name: str, image: str = IDLE_IMAGE, env: dict | None = None) -> dict:
    return {"name": name, "region": "ord", "config": {
        "image": image, "auto_destroy": False, "restart": {"policy": "no"}, "env": env or {},
        "guest": {"memory_mb": 256, "cpus": 1, "cpu_kind": "shared"}}}


def client_for(url: str) -> FlyClient:
    session = requests.Session()
    session.trust_env = False  # loopback: never an HTTP proxy from the environment
    settings = Settings(fly_api_hostname=url, fly_app_name=APP,
                        fly_request_timeout_ms=5000)
    return FlyClient(settings, TOKEN, session=session)


@pytest.fixture
def pair(fly_emulator_factory, fly_emulator_client):
    """`pair(**EmulatorSettings changes)`: (the orchestrator's FlyClient, the tests' client)."""
    def make(**changes: object):
        changes.setdefault("start_latency_s", 0)
        emulator = fly_emulator_factory(images={IDLE_IMAGE: "idle"}, **changes)
        return client_for(emulator.url), fly_emulator_client(emulator)

    return make


def test_a_standing_machine_is_created_stopped_started_stopped_and_listed(pair):
    client, fly = pair()
    created = client.create_machine(request("pool-1"), skip_launch=True)
    assert created["state"] == "stopped" and created["name"] == "pool-1"
    [listed] = client.list_machines()
    assert (listed["id"], listed["state"], listed["region"]) == (created["id"], "stopped", "ord")
    assert listed["config"]["image"] == IDLE_IMAGE and listed["instance_id"]

    assert client.start_machine(created["id"]) == {
        "previous_state": "stopped", "migrated": False, "new_host": ""}
    assert fly.wait(created["id"], "started").status_code == 200
    assert client.list_machines()[0]["state"] == "started"
    assert client.stop_machine(created["id"]) is None
    assert fly.wait(created["id"], "stopped").status_code == 200
    assert client.list_machines()[0]["state"] == "stopped"
    assert client.destroy_machine(created["id"])
    assert client.list_machines() == []  # destroyed machines are not listed


def test_create_without_skip_launch_starts_the_machine_as_before(pair):
    client, fly = pair()
    created = client.create_machine(request("task-1"))
    assert created["state"] == "created"
    assert fly.wait(created["id"], "started").status_code == 200


def test_update_machine_reconfigures_a_stopped_machine(pair):
    client, fly = pair()
    created = client.create_machine(request("pool-u", env={"BATCH_ID": "b1"}), skip_launch=True)
    version = client.list_machines()[0]["instance_id"]
    config = request("pool-u", env={"BATCH_ID": "b2"})["config"]
    updated = client.update_machine(created["id"], config, current_version=version)
    assert (updated["id"], updated["state"]) == (created["id"], "stopped")
    assert updated["instance_id"] != version
    assert fly.get(created["id"]).json()["config"]["env"] == {"BATCH_ID": "b2"}
    with pytest.raises(FlyError) as stale:
        client.update_machine(created["id"], config, current_version=version)
    assert (type(stale.value), stale.value.status) == (FlyError, 409)
    with pytest.raises(FlyError) as unknown_image:
        client.update_machine(created["id"], {**config, "image": "registry.fly.io/nope:1"})
    assert unknown_image.value.status == 422


def test_a_start_refused_for_the_machines_state_or_host_is_named(pair):
    faults = FaultSettings(start_script=[409, 503, "migrated"], migrate_delay_s=0)
    client, fly = pair(faults=faults, rate_limits={"start": {"rate": 0}})
    running = client.create_machine(request("running"))
    fly.wait(running["id"], "started")
    with pytest.raises(FlyStartRefusedError) as not_stopped:
        client.start_machine(running["id"])  # the script is for stopped machines only
    assert not_stopped.value.status == 412
    assert "unable to start machine from current state" in str(not_stopped.value)

    stopped = client.create_machine(request("stopped"), skip_launch=True)
    with pytest.raises(FlyStartRefusedError) as host_full:
        client.start_machine(stopped["id"])
    assert host_full.value.status == 409
    with pytest.raises(FlyError) as unavailable:
        client.start_machine(stopped["id"])
    assert (type(unavailable.value), unavailable.value.status) == (FlyError, 503)
    migrated = client.start_machine(stopped["id"])
    assert migrated["migrated"] is True and migrated["new_host"]
    with pytest.raises(FlyError) as missing:
        client.start_machine("00000000000000")
    assert (type(missing.value), missing.value.status) == (FlyError, 404)


def test_rate_limits_come_back_as_fly_rate_limited_error(pair):
    client, _ = pair(rate_limits={"list": {"rate": 1, "burst": 1}, "start": {"burst": 1},
                                  "stop": {"burst": 1}})
    stopped = client.create_machine(request("limited"), skip_launch=True)
    client.list_machines()
    with pytest.raises(FlyRateLimitedError) as listed:
        client.list_machines()
    assert (listed.value.status, listed.value.retry_after_s) == (429, 1)
    client.start_machine(stopped["id"])
    with pytest.raises(FlyRateLimitedError):
        client.start_machine(stopped["id"])
    client.stop_machine(stopped["id"])
    with pytest.raises(FlyRateLimitedError):
        client.stop_machine(stopped["id"])


def test_no_answer_is_a_fly_error_without_status(fly_emulator_factory):
    emulator = fly_emulator_factory(images={IDLE_IMAGE: "idle"})
    url = emulator.url
    emulator.stop()
    client = client_for(url)
    for call in (client.list_machines, lambda: client.start_machine("m"),
                 lambda: client.stop_machine("m"), lambda: client.update_machine("m", {})):
        with pytest.raises(FlyError) as failed:
            call()
        assert failed.value.status is None and "unreachable" in str(failed.value)
