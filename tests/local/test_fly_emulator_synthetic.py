"""Synthetic machines (image map value "synthetic"): the emulator plays the worker in a
thread; it stores a valid JPEG (presigned PUT or boto3) and sends the contract's callback
through the proxy, with the callback token; crash and late-callback faults apply to it."""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from arke_local.fly_emulator import SYNTHETIC, EmulatorSettings, FaultSettings, ImageCommand
from arke_local.fly_emulator.settings import parse_images
from arke_local.fly_emulator.synthetic import output_key

IMAGE = "registry.fly.io/arke-tiff-worker:latest"
BUCKET = "arke-staging"


def machine_body(name: str, env: dict) -> dict:
    return {"name": name, "config": {
        "image": IMAGE, "auto_destroy": True, "restart": {"policy": "no"}, "env": env,
        "guest": {"memory_mb": 1024, "cpus": 2, "cpu_kind": "shared"}}}


def task_env(callback_url: str, **extra: str) -> dict:
    env = {"TASK_ID": "b1_tiff_1", "BATCH_ID": "b1", "INPUT_R2_KEY": "staging/b1/dir/Scan 1.TIFF",
           "R2_BUCKET": BUCKET, "CALLBACK_URL": f"{callback_url}/callback/b1/b1_tiff_1?attempt=2"}
    env.update(extra)
    return env


@pytest.fixture
def put_receiver():
    """An HTTP server recording PUTs (a presigned OUTPUT_URL's stand-in)."""
    got: list[tuple[str, dict, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            got.append((self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", got
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def moto_s3():
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    server.stop()


def test_synthetic_is_an_image_mode():
    assert parse_images({"x": SYNTHETIC})["x"] == ImageCommand(synthetic=True)
    assert not ImageCommand(synthetic=True).idle
    settings = EmulatorSettings.from_env({"FLY_EMULATOR_IMAGES": '{"a/b:1": "synthetic"}',
                                          "FLY_EMULATOR_SYNTHETIC_WORK_S": "0.5"})
    assert settings.images["a/b:1"].synthetic
    assert settings.synthetic_work_s == 0.5
    assert output_key("s/a.tif") == "s/a.jpg"
    assert output_key("s/b.TiFF") == "s/b.jpg"
    assert output_key("s/c.tiff.tif") == "s/c.tiff.jpg"


def test_synthetic_machine_puts_to_the_presigned_url_and_calls_back_with_its_token(
        fly_emulator_factory, fly_emulator_client, fly_emulator_callback_receiver, put_receiver):
    put_url, puts = put_receiver
    emulator = fly_emulator_factory(images={IMAGE: SYNTHETIC}, synthetic_work_s=0.05)
    fly = fly_emulator_client(emulator)
    env = task_env(fly_emulator_callback_receiver.url, CALLBACK_TOKEN="tok-123",
                   OUTPUT_URL=f"{put_url}/out.jpg?X-Amz-Signature=abc", INPUT_URL=f"{put_url}/in")
    created = fly.create(machine_body("tiff-b1_tiff_1-2", env))
    assert created.status_code == 200, created.text
    machine_id = created.json()["id"]

    [callback] = fly_emulator_callback_receiver.wait_for(1)
    assert callback.path == "/callback/b1/b1_tiff_1"
    assert callback.query == "attempt=2"
    assert callback.headers["Authorization"] == "Bearer tok-123"
    body = callback.json()
    assert body["status"] == "success"
    assert (body["task_id"], body["batch_id"]) == ("b1_tiff_1", "b1")
    assert body["output_r2_key"] == "staging/b1/dir/Scan 1.jpg"
    assert body["output_file_name"] == "Scan 1.jpg"
    assert set(body["performance"]) == {"total_time_ms", "download_time_ms", "conversion_time_ms",
                                        "upload_time_ms"}

    [(path, headers, jpeg)] = puts
    assert path == "/out.jpg?X-Amz-Signature=abc"
    assert headers["Content-Type"] == "image/jpeg"
    assert body["output_file_size"] == len(jpeg)
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.format == "JPEG"

    machine = fly.machine_until(machine_id, "destroyed")
    assert machine["state"] == "destroyed"
    exit_event = next(e for e in machine["events"] if e["type"] == "exit")
    assert exit_event["request"]["exit_event"]["exit_code"] == 0
    stats = fly.stats()
    assert stats["synthetic_outputs"] == 1
    assert stats["callbacks_forwarded"] == 1
    assert stats["machines_started"] == 1


def test_synthetic_machine_stores_through_boto3_without_an_output_url(
        fly_emulator_factory, fly_emulator_client, fly_emulator_callback_receiver, moto_s3):
    endpoint, s3 = moto_s3
    fly = fly_emulator_client(fly_emulator_factory(images={IMAGE: SYNTHETIC}, synthetic_work_s=0))
    env = task_env(fly_emulator_callback_receiver.url, R2_ENDPOINT_URL=endpoint, R2_ACCOUNT_ID="local",
                   R2_ACCESS_KEY_ID="testing", R2_SECRET_ACCESS_KEY="testing")
    assert fly.create(machine_body("tiff-b1_tiff_1", env)).status_code == 200
    [callback] = fly_emulator_callback_receiver.wait_for(1)
    assert "Authorization" not in callback.headers  # no CALLBACK_TOKEN, no header
    obj = s3.get_object(Bucket=BUCKET, Key="staging/b1/dir/Scan 1.jpg")
    assert obj["ContentType"] == "image/jpeg"
    data = obj["Body"].read()
    assert callback.json()["output_file_size"] == len(data)
    with Image.open(io.BytesIO(data)) as im:
        im.load()


def test_synthetic_upload_failure_sends_the_error_callback(
        fly_emulator_factory, fly_emulator_client, fly_emulator_callback_receiver):
    fly = fly_emulator_client(fly_emulator_factory(images={IMAGE: SYNTHETIC}, synthetic_work_s=0))
    env = task_env(fly_emulator_callback_receiver.url, OUTPUT_URL="http://127.0.0.1:9/nowhere")
    machine_id = fly.create(machine_body("m", env)).json()["id"]
    [callback] = fly_emulator_callback_receiver.wait_for(1)
    body = callback.json()
    assert body["status"] == "error" and body["error"].startswith("Failed to upload JPEG")
    machine = fly.machine_until(machine_id, "destroyed")
    exit_event = next(e for e in machine["events"] if e["type"] == "exit")
    assert exit_event["request"]["exit_event"]["exit_code"] == 1
    assert fly.stats()["synthetic_upload_errors"] == 1


def test_synthetic_machine_crash_sends_nothing(
        fly_emulator_factory, fly_emulator_client, fly_emulator_callback_receiver, put_receiver):
    put_url, _ = put_receiver
    emulator = fly_emulator_factory(images={IMAGE: SYNTHETIC}, synthetic_work_s=0,
                                    faults=FaultSettings(callback_script=["crash"]))
    fly = fly_emulator_client(emulator)
    env = task_env(fly_emulator_callback_receiver.url, OUTPUT_URL=f"{put_url}/o")
    machine_id = fly.create(machine_body("m", env)).json()["id"]
    machine = fly.machine_until(machine_id, "destroyed")
    exit_event = next(e for e in machine["events"] if e["type"] == "exit")["request"]["exit_event"]
    assert exit_event["exit_code"] == 137
    assert exit_event["fault"] == "crash_before_callback"
    time.sleep(0.3)
    assert fly_emulator_callback_receiver.received == []
    stats = fly.stats()
    assert stats["crashes_before_callback"] == 1
    assert stats["machines_exited_nonzero"] == 1
    [injection] = fly.admin("GET", "injections").json()
    assert (injection["kind"], injection["machine_id"], injection["name"]) == (
        "crash_before_callback", machine_id, "m")


def test_late_callback_is_forwarded_after_the_delay_even_once_the_machine_is_destroyed(
        fly_emulator_factory, fly_emulator_client, fly_emulator_callback_receiver, put_receiver):
    put_url, _ = put_receiver
    faults = FaultSettings(callback_script=["late"], late_callback_delay_s=1.5)
    fly = fly_emulator_client(fly_emulator_factory(images={IMAGE: SYNTHETIC}, synthetic_work_s=0,
                                                   faults=faults))
    env = task_env(fly_emulator_callback_receiver.url, OUTPUT_URL=f"{put_url}/o", CALLBACK_TOKEN="t")
    started = time.monotonic()
    machine_id = fly.create(machine_body("m", env)).json()["id"]
    time.sleep(0.4)
    assert fly.get(machine_id).json()["state"] == "started"  # still waiting for its answer
    assert fly.delete(machine_id, force=True).status_code == 200  # the orchestrator's timeout
    assert fly.get(machine_id).json()["state"] == "destroyed"
    assert fly_emulator_callback_receiver.received == []
    [callback] = fly_emulator_callback_receiver.wait_for(1, timeout=5)
    assert time.monotonic() - started >= 1.5
    assert callback.headers["Authorization"] == "Bearer t"
    assert fly.stats()["late_callbacks"] == 1
    assert [i["kind"] for i in fly.admin("GET", "injections").json()] == ["late_callback"]


def test_late_callback_rate_is_a_knob(fly_emulator_factory, fly_emulator_client):
    fly = fly_emulator_client(fly_emulator_factory(images={IMAGE: SYNTHETIC}))
    answer = fly.admin("POST", "faults", {"late_callback_rate": 0.02, "late_callback_delay_s": 9})
    assert answer.status_code == 200
    assert (answer.json()["late_callback_rate"], answer.json()["late_callback_delay_s"]) == (0.02, 9)
    assert fly.admin("POST", "faults", {"late_callback_rate": 2}).status_code == 400
    assert FaultSettings.from_env({"FLY_EMULATOR_FAULT_LATE_CALLBACK_RATE": "0.1"}).late_callback_rate == 0.1
