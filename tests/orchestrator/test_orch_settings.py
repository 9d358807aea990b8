"""Settings from the environment: the seed's defaults, and precise errors for bad values
that name the variable but never echo its value."""

from __future__ import annotations

import pytest

from arke_local.fly_emulator.validation import parse_create
from chalicelib.pool_guest import pool_guest
from chalicelib.settings import Settings, SettingsError


def test_seed_defaults():
    s = Settings.from_env({})
    assert (s.fly_app_name, s.fly_worker_image, s.fly_region) == (
        "arke-tiff-worker", "registry.fly.io/arke-tiff-worker:latest", "ord")
    assert (s.worker_url, s.r2_bucket, s.batch_size_tiff_conversion) == (
        "https://ingest.arke.institute", "arke-staging", 1000)
    assert (s.alarm_delay_tiff_conversion_ms, s.alarm_delay_error_retry_ms, s.max_retry_attempts) == (5000, 30000, 5)
    assert (s.task_timeout_tiff_conversion_ms, s.fly_create_rate, s.fly_create_burst) == (300000, 1.0, 3)
    assert s.fly_api_hostname == "https://api.machines.dev" and s.max_failed_fraction == 1.0
    assert not s.accept_unsigned_callbacks and not s.machine_r2_credentials
    assert s.ssm_prefix == "/arke-preprocess/dev/" and s.test_route_enabled


@pytest.mark.parametrize(("env", "message"), [
    ({"BATCH_SIZE_TIFF_CONVERSION": "lots"}, "BATCH_SIZE_TIFF_CONVERSION must be an integer"),
    ({"BATCH_SIZE_TIFF_CONVERSION": "0"}, "BATCH_SIZE_TIFF_CONVERSION must be at least 1"),
    ({"FLY_CREATE_RATE": "fast"}, "FLY_CREATE_RATE must be a number"),
    ({"MAX_FAILED_FRACTION": "1.5"}, "MAX_FAILED_FRACTION must be between 0 and 1"),
    ({"ACCEPT_UNSIGNED_CALLBACKS": "maybe"}, "ACCEPT_UNSIGNED_CALLBACKS must be true or false"),
])
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value) == message
    assert list(env.values())[0] not in str(info.value)


def test_prod_has_no_test_route():
    assert not Settings.from_env({"STAGE": "prod"}).test_route_enabled


# --- pool mode (issue 10) ----------------------------------------------------------------------

def test_pool_defaults():
    s = Settings.from_env({})
    assert s.machine_mode == "pool"
    assert (s.pool_cpu_kind, s.pool_cpus, s.pool_memory_mb) == ("performance", 1, 2048)
    assert (s.worker_concurrency, s.max_pool_machines_per_batch) == (1, 300)
    assert (s.heartbeat_timeout_ms, s.heartbeat_interval_ms) == (60000, 10000)
    assert (s.pool_prior_task_ms, s.pool_boot_ms) == (3000, 5000)
    assert (s.pool_standing, s.pool_max_machines, s.pool_min_machines) == (True, 1000, 0)
    assert (s.pool_idle_retention_s, s.pool_start_ms, s.pool_start_concurrency) == (3600, 1500, 32)


def test_pool_values_are_read():
    s = Settings.from_env({
        "MACHINE_MODE": "Single", "POOL_CPU_KIND": "shared", "POOL_CPUS": "2", "POOL_MEMORY_MB": "512",
        "WORKER_CONCURRENCY": "3", "HEARTBEAT_TIMEOUT_MS": "30000", "HEARTBEAT_INTERVAL_MS": "14999",
        "MAX_POOL_MACHINES_PER_BATCH": "50", "POOL_PRIOR_TASK_MS": "1200", "POOL_BOOT_MS": "0"})
    assert s.machine_mode == "single"
    assert pool_guest(s) == {"cpu_kind": "shared", "cpus": 2, "memory_mb": 512}
    assert (s.worker_concurrency, s.heartbeat_timeout_ms, s.heartbeat_interval_ms) == (3, 30000, 14999)
    assert (s.max_pool_machines_per_batch, s.pool_prior_task_ms, s.pool_boot_ms) == (50, 1200, 0)
    s = Settings.from_env({"POOL_STANDING": "off", "POOL_MAX_MACHINES": "20", "POOL_MIN_MACHINES": "5",
                           "POOL_IDLE_RETENTION_S": "0", "POOL_START_MS": "400", "POOL_START_CONCURRENCY": "4"})
    assert (s.pool_standing, s.pool_max_machines, s.pool_min_machines) == (False, 20, 5)
    assert (s.pool_idle_retention_s, s.pool_start_ms, s.pool_start_concurrency) == (0, 400, 4)


@pytest.mark.parametrize(("kind", "cpus", "memory_mb"), [
    ("performance", 1, 2048), ("performance", 1, 8192), ("performance", 2, 4096), ("performance", 16, 131072),
    ("shared", 1, 256), ("shared", 1, 2048), ("shared", 8, 16384), ("shared", 6, 1536),
])
def test_every_guest_fly_allows_is_accepted_and_the_emulator_takes_it(kind, cpus, memory_mb):
    s = Settings.from_env({"POOL_CPU_KIND": kind, "POOL_CPUS": str(cpus), "POOL_MEMORY_MB": str(memory_mb)})
    guest = pool_guest(s)
    assert guest == {"cpu_kind": kind, "cpus": cpus, "memory_mb": memory_mb}
    request = parse_create({"config": {"image": "worker", "guest": guest}})
    assert request.memory_mb == memory_mb


@pytest.mark.parametrize(("env", "message"), [
    ({"MACHINE_MODE": "many"}, "MACHINE_MODE must be pool or single"),
    ({"POOL_CPU_KIND": "dedicated"}, "POOL_CPU_KIND must be shared or performance"),
    ({"POOL_CPUS": "3"}, "POOL_CPUS must be one of 1, 2, 4, 6, 8, 10, 12, 14, 16 for performance CPUs"),
    ({"POOL_CPU_KIND": "shared", "POOL_CPUS": "16", "POOL_MEMORY_MB": "4096"},
     "POOL_CPUS must be one of 1, 2, 4, 6, 8 for shared CPUs"),
    ({"POOL_CPUS": "0"}, "POOL_CPUS must be at least 1"),
    ({"POOL_MEMORY_MB": "1024"},
     "POOL_MEMORY_MB must be a multiple of 256 from 2048 to 8192 for 1 performance CPU(s) (Fly: 2048 to 8192 MB per CPU)"),
    ({"POOL_CPUS": "2", "POOL_MEMORY_MB": "2048"},
     "POOL_MEMORY_MB must be a multiple of 256 from 4096 to 16384 for 2 performance CPU(s) (Fly: 2048 to 8192 MB per CPU)"),
    ({"POOL_MEMORY_MB": "8448"},
     "POOL_MEMORY_MB must be a multiple of 256 from 2048 to 8192 for 1 performance CPU(s) (Fly: 2048 to 8192 MB per CPU)"),
    ({"POOL_CPU_KIND": "shared", "POOL_MEMORY_MB": "2304"},
     "POOL_MEMORY_MB must be a multiple of 256 from 256 to 2048 for 1 shared CPU(s) (Fly: 256 to 2048 MB per CPU)"),
    ({"POOL_MEMORY_MB": "3000"},
     "POOL_MEMORY_MB must be a multiple of 256 from 2048 to 8192 for 1 performance CPU(s) (Fly: 2048 to 8192 MB per CPU)"),
    ({"POOL_MEMORY_MB": "lots"}, "POOL_MEMORY_MB must be an integer"),
    ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY must be at least 1"),
    ({"HEARTBEAT_INTERVAL_MS": "30000"}, "HEARTBEAT_INTERVAL_MS must be less than half of HEARTBEAT_TIMEOUT_MS"),
    ({"HEARTBEAT_TIMEOUT_MS": "20000"}, "HEARTBEAT_INTERVAL_MS must be less than half of HEARTBEAT_TIMEOUT_MS"),
    ({"HEARTBEAT_TIMEOUT_MS": "999"}, "HEARTBEAT_TIMEOUT_MS must be at least 1000"),
    ({"MAX_POOL_MACHINES_PER_BATCH": "0"}, "MAX_POOL_MACHINES_PER_BATCH must be at least 1"),
    ({"POOL_PRIOR_TASK_MS": "0"}, "POOL_PRIOR_TASK_MS must be at least 1"),
    ({"POOL_BOOT_MS": "-1"}, "POOL_BOOT_MS must be at least 0"),
    ({"POOL_STANDING": "sometimes"}, "POOL_STANDING must be true or false"),
    ({"POOL_MAX_MACHINES": "0"}, "POOL_MAX_MACHINES must be at least 1"),
    ({"POOL_MIN_MACHINES": "-1"}, "POOL_MIN_MACHINES must be at least 0"),
    ({"POOL_IDLE_RETENTION_S": "-5"}, "POOL_IDLE_RETENTION_S must be at least 0"),
    ({"POOL_START_CONCURRENCY": "0"}, "POOL_START_CONCURRENCY must be at least 1"),
])
def test_bad_pool_values_name_the_variable(env, message):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value) == message
