"""The emulator's deciding parts, without HTTP: token buckets and the per-action rate-limit
table, fault settings (start faults too), request validation, settings from the
environment, the state table."""

from __future__ import annotations

import sys

import pytest

from arke_local.fly_emulator import WORKER_IMAGE, EmulatorSettings, FaultSettings, MachineState
from arke_local.fly_emulator.errors import ApiError
from arke_local.fly_emulator.faults import FaultInjector
from arke_local.fly_emulator.machines import can_move, image_ref
from arke_local.fly_emulator.process import exit_code, parse_duration, parse_signal
from arke_local.fly_emulator.ratelimit import RateLimit, RateLimiter, TokenBucket, parse_rate_limits
from arke_local.fly_emulator.settings import REPO_ROOT
from arke_local.fly_emulator.validation import parse_create


def test_token_bucket_bursts_then_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucket(rate=1.0, burst=3, clock=lambda: now[0])
    assert [bucket.take()[0] for _ in range(3)] == [True] * 3
    assert bucket.take() == (False, 1)
    now[0] = 0.5
    assert bucket.take() == (False, 1)
    now[0] = 1.0
    assert bucket.take() == (True, 0)
    assert TokenBucket(rate=0, burst=1).take() == (True, 0)
    slow = TokenBucket(rate=0.25, burst=1, clock=lambda: now[0])
    slow.take()
    assert slow.take() == (False, 4)


@pytest.mark.parametrize("changes", [{"rate_429": 1.5}, {"rate_5xx": -0.1},
                                     {"boot_delay_s": -1}, {"seed": "x"},
                                     {"script": [201]}, {"script": "429"},
                                     {"callback_script": ["explode"]}])
def test_fault_settings_refuse_bad_values(changes):
    with pytest.raises(ValueError):
        FaultSettings(**changes)


def test_fault_injector_script_then_rates():
    injector = FaultInjector(FaultSettings(script=[429, "timeout"], rate_5xx=1.0,
                                           create_timeout_delay_s=3))
    assert injector.scripted_create().status == 429
    timeout = injector.scripted_create()
    assert timeout.timeout and timeout.delay_s == 3 and not timeout.refused
    assert injector.scripted_create() is None
    assert injector.roll_create().status == 503
    injector.update({"rate_5xx": 0, "callback_script": ["crash"]})
    assert injector.roll_create().status == 200
    assert injector.callback_fault() == "crash"
    assert injector.callback_fault() == "forward"
    with pytest.raises(ValueError):
        injector.update({"nope": 1})


def test_settings_from_env():
    settings = EmulatorSettings.from_env({
        "FLY_EMULATOR_PORT": "5000",
        "FLY_EMULATOR_TOKEN": "tok",
        "FLY_EMULATOR_IMAGES": '{"x:1": ["echo", "hi"], "y:1": "idle"}',
        "FLY_EMULATOR_CREATE_RATE": "2.5",
        "FLY_EMULATOR_MAX_MACHINES": "7",
        "FLY_EMULATOR_FAULT_RATE_429": "0.25",
        "FLY_EMULATOR_FAULT_SCRIPT": '[429, "timeout"]',
        "FLY_EMULATOR_FAULT_SEED": "3",
    })
    assert (settings.port, settings.token, settings.create_rate, settings.max_machines) == (
        5000, "tok", 2.5, 7)
    assert settings.images["x:1"].argv == ("echo", "hi")
    assert settings.images["y:1"].idle
    worker = settings.images[WORKER_IMAGE]  # the default stays unless overridden
    assert worker.argv == (sys.executable, "-m", "worker") and worker.cwd == str(REPO_ROOT)
    assert settings.faults.rate_429 == 0.25 and settings.faults.script == [429, "timeout"]
    assert settings.faults.seed == 3
    with pytest.raises(ValueError):
        EmulatorSettings(images={"z": 42})


def test_parse_create_reads_the_seed_request():
    request = parse_create({
        "name": "tiff-t1", "region": "ord",
        "config": {"image": WORKER_IMAGE, "env": {"TASK_ID": "t1"}, "auto_destroy": True,
                   "restart": {"policy": "no"},
                   "guest": {"memory_mb": 1024, "cpus": 2, "cpu_kind": "shared"}}})
    assert (request.name, request.region, request.memory_mb, request.auto_destroy) == (
        "tiff-t1", "ord", 1024, True)
    assert request.env == {"TASK_ID": "t1"}
    with pytest.raises(ApiError) as refused:
        parse_create({"config": {"image": WORKER_IMAGE, "guest": {"cpus": True}}})
    assert refused.value.status == 400


def test_state_table_and_helpers():
    assert can_move(MachineState.STARTED, MachineState.STOPPED)
    assert not can_move(MachineState.DESTROYED, MachineState.STARTED)
    assert not can_move(MachineState.STOPPED, MachineState.STARTED)  # never restarted
    assert image_ref(WORKER_IMAGE)["registry"] == "registry.fly.io"
    assert image_ref(WORKER_IMAGE)["repository"] == "arke-tiff-worker"
    assert image_ref("localhost:5000/a/b")["tag"] == "latest"
    assert exit_code(-9) == 137 and exit_code(3) == 3
    assert parse_duration("500ms", 5) == 0.5 and parse_duration(None, 5) == 5
    assert parse_duration("2m", 5) == 120
    assert parse_signal("INT") == 2 and parse_signal(None) == 15
    with pytest.raises(ValueError):
        parse_duration("soon", 5)


def test_rate_limit_table_merges_overrides_and_keeps_create_from_its_settings():
    table = EmulatorSettings(create_rate=2, create_burst=5,
                             rate_limits={"get": {"rate": 5}, "start": {"key": "app"}}).rate_table
    assert table["create"] == RateLimit(2.0, 5, "app")
    assert table["get"] == RateLimit(5, 10, "machine")  # burst and key kept
    assert table["start"] == RateLimit(1.0, 3, "app")
    assert table["list"] == RateLimit(0.0, 3, "app")  # unlimited unless configured
    assert EmulatorSettings(rate_limits={"get": {"rate": 5}}).replace(create_rate=0).rate_table[
        "create"].rate == 0  # replace() still reaches the create entry
    for bad in ({"resize": {"rate": 1}}, {"create": {"key": "machine"}}, {"list": {"key": "machine"}},
                {"start": {"key": "org"}}, {"start": {"burst": 0}}, {"start": {"rate": "fast"}},
                {"start": {"sped": 1}}, {"start": 3}):
        with pytest.raises(ValueError):
            EmulatorSettings(rate_limits=bad)


def test_rate_limiter_keys_buckets_per_machine_or_per_app():
    now = [0.0]
    limiter = RateLimiter(parse_rate_limits({"start": {"burst": 1}, "stop": {"burst": 1, "key": "app"}},
                                            1.0, 3), clock=lambda: now[0])
    assert limiter.take("start", "a", "m1") == (True, 0)
    assert limiter.take("start", "a", "m1") == (False, 1)
    assert limiter.take("start", "a", "m2") == (True, 0)
    assert limiter.take("stop", "a", "m1") == (True, 0)
    assert limiter.take("stop", "a", "m2") == (False, 1)
    assert limiter.take("stop", "b", "m3") == (True, 0)  # another app
    assert all(limiter.take("get", "a", "m1")[0] for _ in range(50))  # unlimited by default
    now[0] = 1.0
    assert limiter.take("start", "a", "m1") == (True, 0)


def test_start_fault_knobs_from_env_and_their_checks():
    settings = EmulatorSettings.from_env({
        "FLY_EMULATOR_START_LATENCY_S": "0.1",
        "FLY_EMULATOR_RATE_LIMITS": '{"list": {"rate": 1}}',
        "FLY_EMULATOR_FAULT_START_SCRIPT": '[409, "migrated"]',
        "FLY_EMULATOR_FAULT_START_FAILURE_STATUS": "503",
        "FLY_EMULATOR_FAULT_START_FAILURE_RATE": "0.5",
    })
    assert settings.start_latency_s == 0.1
    assert settings.rate_table["list"].rate == 1
    assert settings.faults.start_script == [409, "migrated"]
    assert (settings.faults.start_failure_status, settings.faults.start_failure_rate) == (503, 0.5)
    injector = FaultInjector(settings.faults)
    assert injector.start_fault().status == 409
    assert injector.start_fault().migrated
    for bad in ({"start_script": [201]}, {"start_script": ["crash"]},
                {"start_failure_status": 429}, {"start_failure_rate": 2}):
        with pytest.raises(ValueError):
            FaultSettings(**bad)
    with pytest.raises(ValueError):
        EmulatorSettings(start_latency_s=-1)
    assert can_move(MachineState.STOPPED, MachineState.STARTING)  # POST start
