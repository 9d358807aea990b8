"""Machine memory (issue 9 §3): sized from the TIFF's header read from R2 (moto) by ranged
GETs, bounded by MACHINE_MEMORY_MB and MAX_MACHINE_MEMORY_MB in Fly's steps, doubled after
an out_of_memory callback, and recorded on the task and each attempt."""

from __future__ import annotations

import time

import boto3
import pytest
from botocore.exceptions import ClientError

import app
from chalicelib import machine_size, r2
from chalicelib.fly import exit_was_oom
from chalicelib.models import Task
from chalicelib.settings import Settings, SettingsError
from chalicelib.tiff_header import TiffHeaderError
from worker import encode

from .conftest import (
    LambdaContext,
    callback_path,
    drive,
    error_body,
    list_tasks,
    make_services,
    message,
    post_callback,
    run_pass,
    sqs_event,
)
from .tiff_headers import tiff_header_file

MIB = 1024 * 1024
OOM = "conversion process was killed by SIGKILL (out of memory?)"


# ---- the rule ------------------------------------------------------------------------------

def test_the_formula_is_the_workers():
    assert machine_size.FULL_QUALITY_BYTES_PER_PIXEL == encode.MOZJPEG_FULL_BYTES_PER_PIXEL
    assert (machine_size.PROCESS_BASELINE, machine_size.RESERVE_FRACTION, machine_size.MIN_RESERVE) == (
        encode.PROCESS_BASELINE, encode.RESERVE_FRACTION, encode.MIN_RESERVE)
    for width, height in [(1, 1), (640, 480), (6000, 4000), (10000, 10000), (20000, 12500), (90000, 60000)]:
        for mode in ("RGB", "L"):
            assert machine_size.full_quality_memory(width, height, mode) == encode.full_quality_memory(
                width, height, mode)


def _header(width, height, samples=3):
    from chalicelib.tiff_header import ImageHeader

    return ImageHeader(width, height, samples, 8, 2 if samples == 3 else 1)


@pytest.mark.parametrize(("width", "height", "samples"), [
    (6000, 4000, 3), (10000, 10000, 3), (20000, 12500, 3), (20000, 15000, 3), (30000, 25000, 1),
])  # fmt: skip
def test_the_first_machine_is_the_smallest_fly_size_that_fits_full_quality(width, height, samples):
    settings = Settings()
    got = machine_size.memory_for_image(_header(width, height, samples), settings)
    need_mb = encode.full_quality_memory(width, height, "RGB" if samples == 3 else "L") / MIB
    assert got % 256 == 0
    assert got >= min(need_mb, settings.max_machine_memory_mb) and got >= settings.machine_memory_mb
    assert got - 256 < max(need_mb, settings.machine_memory_mb)  # the smallest step that fits


def test_the_default_size_and_the_cap_bound_every_request():
    settings = Settings.from_env({"MAX_MACHINE_MEMORY_MB": "4096"})
    assert machine_size.memory_for_image(None, settings) == 1024  # an unreadable header
    assert machine_size.memory_for_image(_header(100, 100), settings) == 1024
    assert machine_size.memory_for_image(_header(60000, 50000), settings) == 4096
    assert machine_size.memory_for_image(_header(60000, 50000), Settings()) == 8192


def test_escalation_doubles_up_to_the_cap_and_stays_there():
    settings = Settings()
    assert [machine_size.escalated_memory_mb(m, settings) for m in (1024, 2304, 4096, 6144, 8192)] == [
        2048, 4608, 8192, 8192, 8192]
    assert machine_size.attempt_memory_mb(None, settings) is None
    lowered = Settings.from_env({"MAX_MACHINE_MEMORY_MB": "2048"})
    assert machine_size.attempt_memory_mb(8192, lowered) == 2048  # a cap lowered since


@pytest.mark.parametrize(("memory_mb", "cpus"), [(1024, 2), (4096, 2), (4352, 4), (8192, 4), (8448, 8),
                                                 (16384, 8)])
def test_guest_cpus_follow_flys_2048_mb_per_shared_cpu(memory_mb, cpus):
    guest = machine_size.machine_guest(memory_mb)
    assert guest == {"memory_mb": memory_mb, "cpus": cpus, "cpu_kind": "shared"}
    assert memory_mb <= 2048 * guest["cpus"]


@pytest.mark.parametrize(("env", "says"), [
    ({"MAX_MACHINE_MEMORY_MB": "1000"}, "multiple of 256"),
    ({"MAX_MACHINE_MEMORY_MB": "20480"}, "up to 16384"),
    ({"MAX_MACHINE_MEMORY_MB": "100"}, "at least 256"),
    ({"MACHINE_MEMORY_MB": "2048", "MAX_MACHINE_MEMORY_MB": "1024"}, "at least MACHINE_MEMORY_MB"),
    ({"MACHINE_MEMORY_MB": "lots"}, "integer"),
])  # fmt: skip
def test_memory_settings_are_checked(env, says):
    with pytest.raises(SettingsError, match=says):
        Settings.from_env(env)


# ---- reading the header from R2 (moto) ------------------------------------------------------

def _put(key: str, data: bytes) -> None:
    boto3.client("s3", region_name="us-east-1").put_object(Bucket="arke-staging", Key=key, Body=data)


def _gets(s3) -> list[str]:  # noqa: ANN001 - boto3 client
    ranges: list[str] = []
    s3.meta.events.register("before-call.s3.GetObject", lambda params, **_: ranges.append(params["headers"]["Range"]))
    return ranges


def test_an_ifd_at_the_end_costs_a_second_ranged_get(services):
    _put("big.tif", tiff_header_file(20000, 15000, 3, ifd_at_end=True, data_bytes=3_000_000, order=">"))
    s3 = r2.client(services.settings, services.secrets())
    ranges = _gets(s3)
    header = r2.read_tiff_header(s3, "arke-staging", "big.tif")
    assert (header.width, header.height, header.samples_per_pixel, header.mode) == (20000, 15000, 3, "RGB")
    assert ranges == ["bytes=0-65535", f"bytes={8 + 3_000_000}-{8 + 3_000_000 + 65535}"]


def test_a_header_at_the_start_costs_one_get(services):
    _put("small.tif", tiff_header_file(4000, 3000, 1, big=True))
    s3 = r2.client(services.settings, services.secrets())
    ranges = _gets(s3)
    assert r2.read_tiff_header(s3, "arke-staging", "small.tif").mode == "L"
    assert ranges == ["bytes=0-65535"]


def test_missing_short_and_foreign_objects_raise(services):
    s3 = r2.client(services.settings, services.secrets())
    with pytest.raises(ClientError):
        r2.read_tiff_header(s3, "arke-staging", "nothing-here.tif")
    _put("notes.tif", b"just some text, not an image")
    with pytest.raises(TiffHeaderError, match="byte order"):
        r2.read_tiff_header(s3, "arke-staging", "notes.tif")
    _put("empty.tif", b"")
    with pytest.raises((TiffHeaderError, ClientError)):
        r2.read_tiff_header(s3, "arke-staging", "empty.tif")
    # an IFD offset past the end of the object: the ranged GET is refused (416)
    _put("cut.tif", tiff_header_file(5000, 5000, 3, ifd_at_end=True, data_bytes=100_000)[:90_000])
    with pytest.raises(TiffHeaderError, match="past the end"):
        r2.read_tiff_header(s3, "arke-staging", "cut.tif")


# ---- the orchestrator's requests ------------------------------------------------------------

def _start(services, tiffs: list[bytes | None]) -> list[str]:
    """A batch of these TIFFs (None: not in R2), one pass; their keys in message order."""
    body = message(tiffs=len(tiffs), others=0)
    keys = [f["r2_key"] for f in body["directories"][0]["files"]]
    for key, data in zip(keys, tiffs, strict=True):
        if data is not None:
            _put(key, data)
    app.intake(sqs_event(body), LambdaContext(30))
    run_pass(services)
    return keys


def _guest_by_key(fly) -> dict[str, dict]:
    return {callback_path(r)[1]["INPUT_R2_KEY"]: r["body"]["config"]["guest"] for r in fly.created()}


def test_a_large_scan_gets_a_bigger_machine_and_the_task_shows_it(services, client, fly, logs):
    big = tiff_header_file(20000, 15000, 3, ifd_at_end=True, data_bytes=200_000)  # 300 MP RGB
    small = tiff_header_file(6000, 4000, 3)  # 24 MP
    keys = _start(services, [big, small, None, b"GIF89a not a tiff"])
    guests = _guest_by_key(fly)
    expected_big = machine_size.fly_step(encode.full_quality_memory(20000, 15000) / MIB)
    assert expected_big == 2304
    assert guests[keys[0]] == {"memory_mb": expected_big, "cpus": 2, "cpu_kind": "shared"}
    assert guests[keys[1]]["memory_mb"] == 1024
    assert guests[keys[2]]["memory_mb"] == 1024 and guests[keys[3]]["memory_mb"] == 1024  # fallbacks
    out = logs.readouterr().out
    assert out.count("tiff_header_unreadable") == 2 and "NoSuchKey" in out and "byte order" in out
    tasks = {t["input_r2_key"]: t for t in list_tasks(client)}
    assert tasks[keys[0]]["memory_mb"] == expected_big and tasks[keys[0]]["next_memory_mb"] is None
    assert tasks[keys[0]]["history"][0]["memory_mb"] == expected_big
    assert tasks[keys[1]]["memory_mb"] == 1024


def test_an_unreachable_r2_costs_one_header_read_per_pass(services, env, fly, logs):
    services = make_services(env, R2_ENDPOINT_URL="http://127.0.0.1:9", SPAWN_CONCURRENCY="1")  # refused
    _start(services, [tiff_header_file(20000, 15000, 3)] * 3)
    assert [g["memory_mb"] for g in _guest_by_key(fly).values()] == [1024, 1024, 1024]
    out = logs.readouterr().out
    assert out.count("tiff_header_unreadable") == 1 and "rest_of_pass" in out and "Could not connect" in out


def test_the_request_never_exceeds_the_cap(services, env, fly):
    services = make_services(env, MAX_MACHINE_MEMORY_MB="6144")
    _start(services, [tiff_header_file(60000, 50000, 3, big=True)])  # 3 GP: 23 GB at full quality
    assert [g for g in _guest_by_key(fly).values()] == [{"memory_mb": 6144, "cpus": 4, "cpu_kind": "shared"}]


def test_out_of_memory_doubles_the_next_machine_up_to_the_cap(services, env, client, fly):
    services = make_services(env, MAX_MACHINE_MEMORY_MB="4096", MAX_RETRY_ATTEMPTS="4")
    _start(services, [tiff_header_file(6000, 4000, 3)])
    for attempt in range(1, 5):
        drive(services, lambda attempt=attempt: len(fly.created()) == attempt)
        request = fly.created()[-1]
        post_callback(client, request, error_body(callback_path(request)[1], OOM, "out_of_memory"))
    memories = [r["body"]["config"]["guest"]["memory_mb"] for r in fly.created()]
    assert memories == [1024, 2048, 4096, 4096]  # at the cap it stays there until attempts run out
    (task,) = list_tasks(client)
    assert task["status"] == "failed" and task["error_code"] == "out_of_memory"
    assert [h["memory_mb"] for h in task["history"]] == memories
    assert (task["memory_mb"], task["next_memory_mb"]) == (4096, 4096)


def test_only_out_of_memory_escalates_and_the_escalation_is_kept(services, client, fly):
    (key,) = _start(services, [tiff_header_file(20000, 15000, 3)])
    boto3.client("s3", region_name="us-east-1").delete_object(Bucket="arke-staging", Key=key)

    def fail_last(error: str, code: str, count: int) -> None:
        request = fly.created()[-1]
        post_callback(client, request, error_body(callback_path(request)[1], error, code))
        drive(services, lambda: len(fly.created()) == count)

    fail_last("Failed to download TIFF: 503", "transfer_failed", 2)
    fail_last(OOM, "out_of_memory", 3)
    (task,) = list_tasks(client)
    assert task["next_memory_mb"] == 4608
    fail_last("Failed to upload JPEG: 500", "transfer_failed", 4)  # a later failure keeps it
    # the retries did not read the header again (it is gone: that would give 1024)
    assert [r["body"]["config"]["guest"]["memory_mb"] for r in fly.created()] == [2304, 2304, 4608, 4608]


def test_an_attempt_claimed_before_memory_was_recorded_escalates_from_the_seeds_machine(services, client, fly):
    _start(services, [None])
    (request,) = fly.created()
    env = callback_path(request)[1]
    # as an item written by the version before this one: no memory recorded at its claim
    Task.of("batch_abc", env["TASK_ID"]).update(actions=[Task.memory_mb.remove(), Task.memory_mb_after_oom.remove()])
    answer = post_callback(client, request, error_body(env, OOM, "out_of_memory"))
    assert answer.status_code == 200 and answer.json_body.get("ignored") is None, answer.body
    drive(services, lambda: len(fly.created()) == 2)
    assert fly.created()[1]["body"]["config"]["guest"]["memory_mb"] == 2048


# ---- a machine killed outright: no callback, the timeout asks Fly why -----------------------

def _exit(oom: object) -> dict:
    return {"type": "exit", "request": {"exit_event": {"exit_code": 137, "oom_killed": oom}}}


@pytest.mark.parametrize(("machine", "killed"), [
    ({"events": [{"type": "destroy"}, _exit(True)]}, True),
    ({"events": [_exit(False)]}, False),
    ({"events": [_exit("true")]}, False),  # only Fly's boolean counts
    ({"events": [{"type": "start", "request": {"exit_event": {"oom_killed": True}}}]}, False),
    ({"events": [{"type": "exit", "request": None}, "junk", None]}, False),
    ({"events": "none"}, False), ({}, False), ([], False), (None, False),
])  # fmt: skip
def test_an_oom_kill_is_read_from_the_machines_exit_event(machine, killed):
    assert exit_was_oom(machine) is killed


@pytest.mark.parametrize("oom", [True, False])
def test_a_timed_out_attempt_whose_machine_was_oom_killed_gets_twice_the_memory(services, env, client, fly, oom):
    services = make_services(env, TASK_TIMEOUT_TIFF_CONVERSION="300")
    _start(services, [None])
    if oom:
        fly.oom_killed.add(fly.created()[0]["id"])
    drive(services, lambda: len(fly.created()) == 2)
    assert fly.shown == [fly.created()[0]["id"]]  # one Get Machine, for the silent one
    assert fly.created()[1]["body"]["config"]["guest"]["memory_mb"] == (2048 if oom else 1024)
    (task,) = list_tasks(client)
    assert ("killed for memory (OOM)" in task["history"][0]["error"]) is oom
    assert task["error_code"] == ("out_of_memory" if oom else None)


def test_when_fly_does_not_answer_a_pass_stops_asking_and_times_out_as_before(services, env, client, fly):
    services = make_services(env, TASK_TIMEOUT_TIFF_CONVERSION="300")
    _start(services, [None, None, None])
    fly.show_answer = 429
    fly.oom_killed.update(r["id"] for r in fly.created())
    time.sleep(0.35)  # all three deadlines pass, so one pass times them out together
    run_pass(services)
    assert len(fly.shown) == 1  # the first 429 ended the asking for that pass
    drive(services, lambda: len(fly.created()) == 6)
    assert [r["body"]["config"]["guest"]["memory_mb"] for r in fly.created()[3:]] == [1024] * 3
    assert {t["error_code"] for t in list_tasks(client)} == {None}
