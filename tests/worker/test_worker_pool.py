"""Pool mode (`WORKER_MODE=pool`, docs/pool.md): the real worker (`python -m worker`,
a subprocess) against an orchestrator's pool API played on loopback exactly as the
protocol says (worker_pool_orchestrator), moto's S3 server for R2 and real TIFFs."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import worker_tiffmaker as tm
from PIL import Image
from worker_helpers import BUCKET, REPO
from worker_pool_orchestrator import PoolOrchestrator

from worker.pull import backoff_delays
from worker.settings import MIN_SLOT_MEMORY, conversion_slots

CONTRACT_BODY = {"task_id", "batch_id", "status", "output_r2_key", "output_file_name",
                 "output_file_size", "performance"}  # fmt: skip


def tiff(side: int = 0) -> bytes:
    """The quadrant test image, or a `side` x `side` tiled-noise RGB scan: small to
    store, slow to encode (about 4 s at 3000 here), for a conversion still running when
    the test acts on it."""
    buf = io.BytesIO()
    if not side:
        tifffile.imwrite(buf, tm.quadrant_rgb(), photometric="rgb", compression="lzw")
    else:
        tile = np.random.default_rng(side).integers(0, 256, (50, 50, 3), np.uint8)
        image = np.tile(tile, (side // 50, side // 50, 1))
        tifffile.imwrite(buf, image, photometric="rgb", compression="zlib", rowsperstrip=256)
    return buf.getvalue()


def put(s3, key: str, data: bytes) -> str:
    s3.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType="image/tiff")
    return key


def start(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "worker"], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def run(env: dict, timeout: float = 60) -> tuple[int, str]:
    return finish(start(env), timeout)


def exists(s3, key: str) -> bool:
    return s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("KeyCount", 0) > 0


def test_tasks_in_a_row_then_exit_0_with_the_contract_callbacks(s3, orch, pool_env):
    tasks = [orch.task(f"batch_p_tiff_{i}", put(s3, f"staging/batch_p/{i}.tif", tiff()),
                       f"staging/batch_p/out/scan-{i}.jpg", attempt=i) for i in (1, 2, 3)]  # fmt: skip
    orch.script = list(tasks)
    orch.callback_failures = 1  # the first callback is retried, as contract mode retries
    code, out = run(pool_env())
    assert code == 0, out

    pulls = orch.of("pull")
    assert len(pulls) == 4 and pulls[-1]["answer"]["action"] == "exit"
    assert all(p["headers"]["Authorization"] == f"Bearer {orch.token}" and p["body"] == {}
               for p in pulls)  # fmt: skip
    callbacks = [c for c in orch.of("callback") if c["status"] == 200]
    assert [c["task_id"] for c in callbacks] == ["batch_p_tiff_1", "batch_p_tiff_2", "batch_p_tiff_3"]
    assert len(orch.of("callback", "batch_p_tiff_1")) == 2  # 503, then delivered
    for answer, callback, next_pull in zip(tasks, callbacks, pulls[1:], strict=True):
        task = answer["task"]
        assert callback["time"] < next_pull["time"]  # one slot: callback, then pull again
        assert callback["path"] == task["callback_url"].removeprefix(orch.url)
        assert callback["headers"]["Authorization"] == f"Bearer {task['callback_token']}"
        body = callback["body"]
        assert set(body) == CONTRACT_BODY and body["status"] == "success"
        assert body["task_id"] == task["task_id"] and body["batch_id"] == "batch_p"
        assert body["output_r2_key"] == task["output_r2_key"]  # the assignment's, not the seed's rule
        assert body["output_file_name"] == task["output_r2_key"].rsplit("/", 1)[1]
        head = s3.head_object(Bucket=BUCKET, Key=task["output_r2_key"])
        assert body["output_file_size"] == head["ContentLength"] > 0
        assert head["ContentType"] == "image/jpeg"
        assert set(body["performance"]) == {"total_time_ms", "download_time_ms",
                                            "conversion_time_ms", "upload_time_ms"}  # fmt: skip
    jpeg = s3.get_object(Bucket=BUCKET, Key=tasks[0]["task"]["output_r2_key"])["Body"].read()
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.size == (tm.W, tm.H)

    lines = out.strip().splitlines()
    assert all(line.startswith("[Worker] batch=batch_p task=") for line in lines), out
    assert f"task=batch_p_tiff_2 machine={orch.machine_name} slot=1 " in out
    assert orch.token not in out and "cb-token" not in out and "testing" not in out
    assert "pool done: success 3; exit 0" in out


def presigned(s3, key: str, out_key: str) -> dict:
    return {
        "input_url": s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key},
                                               ExpiresIn=600),
        "output_url": s3.generate_presigned_url(
            "put_object", Params={"Bucket": BUCKET, "Key": out_key, "ContentType": "image/jpeg"},
            ExpiresIn=600),
    }  # fmt: skip


def test_presigned_urls_without_r2_keys(s3, orch, pool_env):
    key, out_key = put(s3, "staging/batch_p/signed.tif", tiff()), "staging/batch_p/signed.jpg"
    orch.script = [
        orch.task("t_signed", key, out_key, **presigned(s3, key, out_key)),
        orch.task("t_unsigned", key, "staging/batch_p/unsigned.jpg"),  # no URLs, no keys
        orch.task("t_absent", "staging/batch_p/absent.tif", "staging/batch_p/absent.jpg",
                  **presigned(s3, "staging/batch_p/absent.tif", "staging/batch_p/absent.jpg")),
    ]  # fmt: skip
    env = pool_env(R2_ACCOUNT_ID=None, R2_ACCESS_KEY_ID=None, R2_SECRET_ACCESS_KEY=None,
                   R2_ENDPOINT_URL=None)  # fmt: skip
    code, out = run(env)
    assert code == 0, out
    signed, unsigned, absent = (orch.of("callback", t)[0]["body"]
                                for t in ("t_signed", "t_unsigned", "t_absent"))  # fmt: skip
    assert signed["status"] == "success" and signed["output_r2_key"] == out_key
    assert signed["output_file_size"] == s3.head_object(Bucket=BUCKET, Key=out_key)["ContentLength"]
    assert unsigned["status"] == "error" and "no presigned URLs and no R2 keys" in unsigned["error"]
    assert absent == {"task_id": "t_absent", "batch_id": "batch_p", "status": "error",
                      "error": "Failed to download TIFF: 404 Not Found", "error_code": "input_missing"}
    assert not exists(s3, "staging/batch_p/unsigned.jpg")
    assert "Signature=" not in out and "X-Amz-Signature" not in out  # signed URLs are never logged


def watch_conversions(orch: PoolOrchestrator, env: dict) -> tuple[int, str, list[int]]:
    """Run the worker; at every heartbeat note how many conversion children (forks of
    the worker) are alive."""
    process, seen = None, []

    def on_event(event: dict) -> None:
        if event["kind"] == "heartbeat" and process is not None:
            seen.append(len(children_of(process.pid)))

    orch.on_event = on_event
    process = start(env)
    code, out = finish(process)
    return code, out, seen


def test_two_slots_convert_at_once_and_memory_caps_the_slots(s3, orch, pool_env):
    orch.heartbeat_interval_ms = 30
    data = tiff(1000)
    orch.script = [orch.task(f"t{i}", put(s3, f"staging/batch_p/c{i}.tif", data),
                             f"staging/batch_p/c{i}.jpg") for i in (1, 2, 3)]  # fmt: skip
    # 3 asked, but 1024 MB holds two conversions of MIN_SLOT_MEMORY.
    code, out, seen = watch_conversions(orch, pool_env(WORKER_CONCURRENCY="3", FLY_VM_MEMORY_MB="1024"))
    assert code == 0, out
    assert "pool start: 2 slot(s) (WORKER_CONCURRENCY=3: memory allows 2), 512 MB and " in out
    assert f"{(512 * 2**20 - 128 * 2**20) * 10 // 34} pixels per conversion" in out
    assert out.count("memory budget 352 MB") == 3  # the encoder's too: 512 MB less the reserve
    assert max(seen) == 2, seen  # two conversions running at once, never three
    first_callback = min(c["time"] for c in orch.of("callback"))
    assert all(orch.of("pull", t)[0]["time"] < first_callback for t in ("t1", "t2"))
    assert orch.of("pull", "t3")[0]["time"] > first_callback  # pulled once a slot was free
    assert [c["body"]["status"] for c in orch.of("callback")] == ["success"] * 3
    assert len(orch.of("pull")) == 5  # 3 tasks, then each slot's exit


def test_heartbeats_while_converting_until_the_callback(s3, orch, pool_env):
    orch.heartbeat_interval_ms = 50
    orch.script = [orch.task("t_slow", put(s3, "staging/batch_p/slow.tif", tiff(1000)),
                             "staging/batch_p/slow.jpg", attempt=3)]  # fmt: skip
    code, out, seen = watch_conversions(orch, pool_env())
    assert code == 0, out
    assert 1 in seen, seen  # beats while the conversion child ran
    pull, exit_pull = orch.of("pull")
    [callback] = orch.of("callback")
    beats = orch.of("heartbeat", "t_slow")
    assert all(b["body"] == {"task_id": "t_slow", "attempt": 3} for b in beats)
    assert all(b["headers"]["Authorization"] == f"Bearer {orch.token}" for b in beats)
    assert all(pull["time"] < b["time"] < exit_pull["time"] for b in beats)  # held, then stopped
    assert callback["body"]["status"] == "success"


def test_drop_kills_the_conversion_and_sends_no_callback(s3, orch, pool_env):
    orch.heartbeat_interval_ms = 100
    orch.script = [
        orch.task("t_dropped", put(s3, "staging/batch_p/big.tif", tiff(3000)), "staging/batch_p/big.jpg"),
        orch.task("t_next", put(s3, "staging/batch_p/next.tif", tiff()), "staging/batch_p/next.jpg"),
    ]  # fmt: skip
    process = None
    converting: list[int] = []

    def drop_while_converting(body: dict) -> dict:
        converting.extend(children_of(process.pid))  # the conversion's forked child
        return {"action": "drop" if converting else "continue"}

    orch.heartbeat_answers["t_dropped"] = drop_while_converting
    process = start(pool_env())
    code, out = finish(process)
    assert code == 0, out
    assert converting and orch.of("callback", "t_dropped") == []
    assert not any(os.path.exists(f"/proc/{pid}") for pid in converting)  # killed and reaped
    assert not exists(s3, "staging/batch_p/big.jpg")
    assert "dropped (conversion process killed" in out  # killed mid-conversion, not after it
    assert orch.of("heartbeat", "t_dropped")[-1]["answer"]["action"] == "drop"  # the last beat
    assert orch.of("callback", "t_next")[0]["body"]["status"] == "success"  # and it pulled again


def test_drop_before_the_conversion_skips_it(s3, orch, pool_env):
    """A drop during the download: nothing is converted, uploaded or called back."""
    orch.heartbeat_interval_ms = 20
    orch.objects["/slow-get"] = (tiff(), 0.5)  # the drop comes while this downloads
    urls = {"input_url": f"{orch.url}/slow-get", "output_url": f"{orch.url}/put"}
    orch.script = [orch.task("t_early", "staging/batch_p/early.tif", "staging/batch_p/early.jpg", **urls)]
    orch.heartbeat_answers["t_early"] = {"action": "drop"}
    code, out = run(pool_env())
    assert code == 0, out
    assert "dropped (the task was called off): no callback" in out
    assert "converted" not in out and orch.of("callback") == [] and orch.of("put") == []


def test_heartbeat_401_drops_the_task_and_ends_the_machine(s3, orch, pool_env):
    orch.heartbeat_interval_ms = 200
    orch.script = [
        orch.task("t_big", put(s3, "staging/batch_p/big401.tif", tiff(3000)), "staging/batch_p/big401.jpg"),
        orch.task("t_never", put(s3, "staging/batch_p/never.tif", tiff()), "staging/batch_p/never.jpg"),
    ]  # fmt: skip
    orch.heartbeat_answers["t_big"] = 401
    code, out = run(pool_env())
    assert code == 2, out
    assert orch.of("callback") == [] and len(orch.of("pull")) == 1
    assert "heartbeat refused (401 Unauthorized)" in out


def test_failing_heartbeats_and_an_undelivered_callback_do_not_stop_the_loop(s3, orch, pool_env):
    orch.heartbeat_interval_ms = 30
    data = tiff(1000)
    orch.script = [orch.task(f"t{i}", put(s3, f"staging/batch_p/h{i}.tif", data),
                             f"staging/batch_p/h{i}.jpg") for i in (1, 2)]  # fmt: skip
    orch.heartbeat_answers["t1"] = 503  # errors: keep going, the next beat may get through
    orch.callback_failures = 2  # both of t1's callback attempts
    code, out = run(pool_env(WORKER_CALLBACK_ATTEMPTS="2"))
    assert code == 0, out
    assert len(orch.of("heartbeat", "t1")) >= 2, out
    assert "heartbeat failed (503 Service Unavailable); keeping on" in out
    assert [c["status"] for c in orch.of("callback", "t1")] == [503, 503]
    assert "no callback: callback not delivered after 2 attempts" in out
    assert orch.of("callback", "t2")[0]["body"]["status"] == "success"
    assert "pool done: success 1, undelivered 1; exit 0" in out


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def test_a_killed_conversion_is_an_error_callback_and_the_loop_goes_on(s3, orch, pool_env):
    orch.heartbeat_interval_ms = 100
    orch.script = [
        orch.task("t_oom", put(s3, "staging/batch_p/oom.tif", tiff(3000)), "staging/batch_p/oom.jpg"),
        orch.task("t_after", put(s3, "staging/batch_p/after.tif", tiff()), "staging/batch_p/after.jpg"),
    ]  # fmt: skip
    process = start(pool_env())
    killed = None
    deadline = time.monotonic() + 30
    while killed is None and time.monotonic() < deadline:  # play the OOM killer
        if orch.of("heartbeat", "t_oom"):  # the task is held: its conversion is running
            for child in children_of(process.pid):
                os.kill(child, signal.SIGKILL)
                killed = child
        time.sleep(0.02)
    code, out = finish(process)
    assert killed is not None and code == 0, out
    body = orch.of("callback", "t_oom")[0]["body"]
    assert body == {"task_id": "t_oom", "batch_id": "batch_p", "status": "error",
                    "error": "Failed to convert TIFF: conversion process was killed by SIGKILL "
                             "(out of memory?)", "error_code": "out_of_memory"}  # fmt: skip
    assert orch.of("callback", "t_after")[0]["body"]["status"] == "success"
    assert "pool done: error 1, success 1; exit 0" in out


def test_wait_then_task(s3, orch, pool_env):
    orch.script = [{"action": "wait", "retry_after_ms": 300},
                   orch.task("t_later", put(s3, "staging/batch_p/later.tif", tiff()),
                             "staging/batch_p/later.jpg")]  # fmt: skip
    code, out = run(pool_env())
    assert code == 0, out
    waited, task, _exit = orch.of("pull")
    assert task["time"] - waited["time"] >= 0.3  # slept as told before pulling again
    assert orch.of("callback", "t_later")[0]["body"]["status"] == "success"


@pytest.mark.parametrize(
    ("change", "status"),
    [({"MACHINE_TOKEN": "0" * 64}, "401 Unauthorized"),  # forged
     ({"MACHINE_NAME": "tiff-pool-somebodyelse"}, "404 Not Found")],  # unknown machine
)  # fmt: skip
def test_refused_pull_exits_2(s3, orch, pool_env, change, status):
    orch.script = [orch.task("t_x", "staging/batch_p/x.tif", "staging/batch_p/x.jpg")]
    code, out = run(pool_env(WORKER_CONCURRENCY="2", **change))
    assert code == 2, out
    assert f"pull refused ({status}): the orchestrator does not know this machine" in out
    assert orch.of("callback") == [] and "0" * 64 not in out


def test_pull_5xx_then_recovery(s3, orch, pool_env):
    orch.script = [503, 500, orch.task("t_ok", put(s3, "staging/batch_p/ok.tif", tiff()),
                                       "staging/batch_p/ok.jpg")]  # fmt: skip
    code, out = run(pool_env())
    assert code == 0, out
    assert [p["status"] for p in orch.of("pull")] == [503, 500, 200, 200]
    assert "pull failed (503 Service Unavailable); retrying in 0.05 s" in out
    assert "pull failed (500 Internal Server Error); retrying in 0.1 s" in out
    assert orch.of("callback", "t_ok")[0]["body"]["status"] == "success"


def test_orchestrator_down_gives_up_after_the_backoff_and_exits_1(orch, pool_env):
    orch.script = [503] * 50
    code, out = run(pool_env(WORKER_PULL_GIVE_UP_S="0.5"))
    assert code == 1, out
    assert len(orch.of("pull")) == 1 + len(list(backoff_delays(0.05, 10, 0.5)))  # 0.05+0.1+0.2
    assert "orchestrator unreachable for 0.5 s (last: 503 Service Unavailable); exiting" in out


def test_no_answer_at_all_exits_1(pool_env):
    code, out = run(pool_env(ORCHESTRATOR_URL="http://127.0.0.1:9", WORKER_PULL_GIVE_UP_S="0.2"))
    assert code == 1, out
    assert "pull failed (ConnectionRefusedError" in out


def test_bad_pool_environment_and_unknown_mode_exit_2(pool_env):
    code, out = run(pool_env(MACHINE_TOKEN=None))
    assert code == 2 and "cannot start the pool loop: Missing environment variables: MACHINE_TOKEN" in out
    code, out = run(pool_env(WORKER_MODE="pooled"))
    assert code == 2 and "unknown WORKER_MODE 'pooled'" in out


def test_a_standing_machine_pulls_its_own_route_first_then_its_batchs(s3, orch, pool_env):
    """No BATCH_ID: the first pull goes to /pool/machines/{name}/pull, whose answer names
    the batch's route; every later pull goes there (docs/pool.md "Standing pool")."""
    orch.standing = True
    orch.script = [orch.task("t_s1", put(s3, "staging/batch_p/s1.tif", tiff()), "staging/batch_p/s1.jpg"),
                   orch.task("t_s2", put(s3, "staging/batch_p/s2.tif", tiff()), "staging/batch_p/s2.jpg")]
    code, out = run(pool_env(BATCH_ID=None))
    assert code == 0, out
    assert len(orch.of("standing_pull")) == 1
    assert len(orch.of("pull")) == 2  # the second task, then exit, on the batch's route
    assert all(orch.of("callback", t)[0]["body"]["status"] == "success" for t in ("t_s1", "t_s2"))
    assert all(orch.of("callback", t)[0]["body"]["batch_id"] == "batch_p" for t in ("t_s1", "t_s2"))


def test_a_pull_url_outside_the_orchestrator_is_not_followed(s3, orch, pool_env):
    """The token goes to ORCHESTRATOR_URL only: an answer naming another host is not
    followed; its task is still worked and the machine pulls where it did."""
    orch.standing = True
    orch.pull_url_override = "http://127.0.0.1:9/pool/batch_p/machines/x/pull"
    orch.script = [orch.task("t_o1", put(s3, "staging/batch_p/o1.tif", tiff()), "staging/batch_p/o1.jpg")]
    code, out = run(pool_env(BATCH_ID=None))
    assert code == 0, out
    assert orch.of("callback", "t_o1")[0]["body"]["status"] == "success"
    assert orch.of("pull") == [] and len(orch.of("standing_pull")) == 2  # the task, then exit


def test_backoff_schedule():
    assert list(backoff_delays(1, 10, 60)) == [1, 2, 4, 8, 10, 10, 10, 10]
    assert list(backoff_delays(1, 10, 0.5)) == []


@pytest.mark.parametrize(("asked", "memory_mb", "slots"),
                         [(1, 256, 1), (4, 256, 1), (4, 1024, 2), (4, 2048, 4), (8, 2048, 4), (2, 4096, 2)])  # fmt: skip
def test_conversion_slots(asked, memory_mb, slots):
    assert MIN_SLOT_MEMORY == 512 * 2**20
    assert conversion_slots(asked, memory_mb * 2**20) == slots
