"""The emulator's Machines API over real HTTP: shapes, auth, refusals, limits."""

from __future__ import annotations

import time

import pytest
import requests

IDLE_IMAGE = "test/idle:1"
MACHINE_KEYS = {"id", "name", "state", "region", "instance_id", "private_ip", "config",
                "image_ref", "created_at", "updated_at", "events"}


def idle_body(name: str | None = "m-1", **config: object) -> dict:
    body: dict = {"region": "ord", "config": {"image": IDLE_IMAGE, "auto_destroy": True,
                                               "restart": {"policy": "no"},
                                               "guest": {"memory_mb": 256, "cpus": 1,
                                                         "cpu_kind": "shared"}, **config}}
    if name is not None:
        body["name"] = name
    return body


@pytest.fixture
def fly(fly_emulator_factory, fly_emulator_client):
    return fly_emulator_client(fly_emulator_factory(images={IDLE_IMAGE: "idle"}))


def test_create_get_list_wait_stop_delete_round_trip(fly):
    created = fly.create(idle_body("tiff-batch_a_1", env={"TASK_ID": "t1"}))
    assert created.status_code == 200, created.text
    machine = created.json()
    assert machine.keys() >= MACHINE_KEYS
    assert machine["name"] == "tiff-batch_a_1"
    assert machine["state"] == "created"
    assert machine["region"] == "ord"
    assert len(machine["id"]) == 14
    assert machine["config"]["env"] == {"TASK_ID": "t1"}
    assert machine["image_ref"]["repository"] == "test/idle"
    assert machine["events"][0]["type"] == "launch"

    assert fly.wait(machine["id"], "started").json() == {"ok": True}
    shown = fly.get(machine["id"]).json()
    assert shown["state"] == "started"
    assert [e["status"] for e in shown["events"]][:2] == ["started", "starting"]  # newest first
    assert [m["id"] for m in fly.list().json()] == [machine["id"]]
    assert fly.list(region="ams").json() == []

    assert fly.stop(machine["id"]).json() == {"ok": True}
    assert fly.wait(machine["id"], "destroyed").status_code == 200  # auto_destroy
    assert fly.get(machine["id"]).json()["state"] == "destroyed"
    assert fly.list().json() == []
    assert [m["id"] for m in fly.list(include_deleted="true").json()] == [machine["id"]]
    assert fly.delete(machine["id"]).status_code == 404


def test_delete_refuses_a_running_machine_unless_forced(fly):
    machine = fly.create(idle_body(auto_destroy=False)).json()
    fly.wait(machine["id"], "started")
    refused = fly.delete(machine["id"])
    assert refused.status_code == 412
    assert "still active" in refused.json()["error"]
    assert fly.delete(machine["id"], force=True).json() == {"ok": True}
    assert fly.get(machine["id"]).json()["state"] == "destroyed"


def test_stopped_machine_without_auto_destroy_stays_until_deleted(fly):
    machine = fly.create(idle_body(auto_destroy=False)).json()
    fly.wait(machine["id"], "started")
    fly.stop(machine["id"])
    assert fly.wait(machine["id"], "stopped").status_code == 200
    assert fly.get(machine["id"]).json()["state"] == "stopped"
    assert fly.delete(machine["id"]).status_code == 200
    assert fly.get(machine["id"]).json()["state"] == "destroyed"


def test_wait_times_out_with_408_and_checks_its_parameters(fly):
    machine = fly.create(idle_body()).json()
    timed_out = fly.wait(machine["id"], "stopped", timeout=1)
    assert timed_out.status_code == 408
    assert "error" in timed_out.json()
    assert fly.wait(machine["id"], "sleeping").status_code == 400
    bad = fly.session.get(f"{fly.base}/{machine['id']}/wait", params={"timeout": "soon"})
    assert bad.status_code == 400
    assert fly.wait("00000000000000", "started").status_code == 404


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic abc"},
                                     {"Authorization": "Bearer "},
                                     {"Authorization": "Bearer wrong-token"}])
def test_requests_without_the_bearer_token_are_refused(fly, headers):
    fly.session.headers.pop("Authorization")
    for response in (fly.session.post(fly.base, json=idle_body(), headers=headers),
                     fly.session.get(fly.base, headers=headers)):
        assert response.status_code == 401
        assert isinstance(response.json()["error"], str)
    assert fly.stats()["creates_accepted"] == 0


@pytest.mark.parametrize(("body", "status", "words"), [
    (["not", "an", "object"], 400, "JSON object"),
    ({"config": {"image": IDLE_IMAGE}, "surprise": 1}, 400, "unknown field"),
    ({"config": {"image": IDLE_IMAGE, "imagee": "x"}}, 400, "unknown field"),
    ({"config": {"image": IDLE_IMAGE, "guest": {"memory_gb": 1}}}, 400, "unknown field"),
    ({"config": {"image": 42}}, 400, "config.image must be a string"),
    ({"config": {"image": IDLE_IMAGE, "env": {"A": 1}}}, 400, "config.env.A"),
    ({"config": {"image": IDLE_IMAGE, "auto_destroy": "yes"}}, 400, "boolean"),
    ({"config": {"image": IDLE_IMAGE, "guest": {"memory_mb": "1024"}}}, 400, "integer"),
    ({"config": {"image": IDLE_IMAGE, "restart": {"policy": "sometimes"}}}, 400, "policy"),
    ({"name": 7, "config": {"image": IDLE_IMAGE}}, 400, "name"),
    ({"config": {"env": {}}}, 422, "image"),
    ({"name": "x"}, 422, "config"),
    ({"config": {"image": IDLE_IMAGE, "guest": {"memory_mb": 0}}}, 422, "memory_mb"),
    ({"config": {"image": IDLE_IMAGE, "restart": {"policy": "always"}}}, 422, "not emulated"),
    ({"config": {"image": IDLE_IMAGE, "mounts": [{"volume": "v"}]}}, 422, "not emulated"),
    ({"config": {"image": "registry.fly.io/unknown:latest"}}, 422, "manifest unknown"),
])
def test_malformed_create_bodies_get_flys_error_shape(fly, body, status, words):
    response = fly.create(body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert words in response.json()["error"]
    assert fly.list(include_deleted="true").json() == []


def test_body_that_is_not_json_is_a_400(fly):
    response = fly.session.post(fly.base, data=b"{nope", timeout=10)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


def test_unknown_routes_404_and_wrong_methods_405(fly):
    missing = fly.session.get(f"{fly.emulator.url}/v1/apps/a/volumes", timeout=10)
    assert missing.status_code == 404
    assert "error" in missing.json()
    wrong = fly.session.put(fly.base, json={}, timeout=10)
    assert wrong.status_code == 405
    assert set(wrong.headers["Allow"].split(", ")) == {"GET", "POST"}
    assert "error" in wrong.json()
    assert fly.get("00000000000000").status_code == 404


def test_machine_names_are_unique_per_app_while_the_machine_exists(fly, fly_emulator_client):
    first = fly.create(idle_body("tiff-t1")).json()
    duplicate = fly.create(idle_body("tiff-t1"))
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.json()["error"]
    other_app = fly_emulator_client(fly.emulator, app="another-app")
    assert other_app.create(idle_body("tiff-t1")).status_code == 200
    fly.delete(first["id"], force=True)
    assert fly.create(idle_body("tiff-t1")).status_code == 200
    unnamed = fly.create(idle_body(name=None)).json()
    assert unnamed["name"]


def test_create_rate_limit_answers_429_with_retry_after(fly_emulator_factory, fly_emulator_client):
    fly = fly_emulator_client(fly_emulator_factory(images={IDLE_IMAGE: "idle"},
                                                   create_rate=1, create_burst=3))
    assert [fly.create(idle_body(f"m-{i}")).status_code for i in range(3)] == [200] * 3
    limited = fly.create(idle_body("m-3"))
    assert limited.status_code == 429
    assert limited.json() == {"error": "rate limit exceeded"}
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 2
    time.sleep(retry_after)
    assert fly.create(idle_body("m-3")).status_code == 200
    stats = fly.stats()
    assert stats["rate_limited_429"] == 1
    assert stats["creates_accepted"] == 4


def test_machine_cap_refuses_creates_beyond_it(fly_emulator_factory, fly_emulator_client):
    fly = fly_emulator_client(fly_emulator_factory(images={IDLE_IMAGE: "idle"}, max_machines=2))
    first = fly.create(idle_body("a")).json()
    assert fly.create(idle_body("b")).status_code == 200
    over = fly.create(idle_body("c"))
    assert over.status_code == 422
    assert "machine limit" in over.json()["error"]
    fly.delete(first["id"], force=True)
    assert fly.create(idle_body("c")).status_code == 200
    assert fly.stats()["cap_rejections"] == 1


def test_configured_apps_only(fly_emulator_factory, fly_emulator_client):
    emulator = fly_emulator_factory(images={IDLE_IMAGE: "idle"}, apps={"arke-tiff-worker"})
    assert fly_emulator_client(emulator).create(idle_body()).status_code == 200
    unknown = fly_emulator_client(emulator, app="nope").create(idle_body())
    assert unknown.status_code == 404


def test_unmapped_images_run_idle_when_configured(fly_emulator_factory, fly_emulator_client):
    fly = fly_emulator_client(fly_emulator_factory(images={}, idle_unmapped=True))
    machine = fly.create({"config": {"image": "anything:1"}}).json()
    assert fly.wait(machine["id"], "started").status_code == 200


def test_requests_session_without_token_is_refused_even_for_reads(fly):
    plain = requests.get(fly.base, timeout=10)
    assert plain.status_code == 401
