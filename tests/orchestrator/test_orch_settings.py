"""Settings from the environment: the seed's defaults, and precise errors for bad values
that name the variable but never echo its value."""

from __future__ import annotations

import pytest

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
