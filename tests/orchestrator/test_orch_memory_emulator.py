"""Memory escalation through the Fly emulator's memory limit (issue 9 §5): the orchestrator
creates real emulated machines over HTTP; the emulator enforces `guest.memory_mb` with its
OOM killer; a machine whose conversion needs more than that is killed and the next
attempt's machine, twice the size, converts. Both ways a machine fails for memory: its
conversion child is killed and it says out_of_memory, or the machine itself is killed and
says nothing (its task times out, and Fly's exit event says why)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from chalice.test import Client

import app
from arke_local.fly_emulator import FlyEmulator

from .conftest import LambdaContext, drive, list_tasks, make_services, message, sqs_event

IMAGE = "registry.fly.io/arke-tiff-worker:latest"
NEEDS_MB = 360  # what the machine's conversion touches: over 256 MB, within 512


class ChaliceBridge:
    """The orchestrator's routes on a loopback port, for machines (processes) to call back:
    each request is handed to Chalice's test client, one at a time."""

    def __init__(self, client: Client) -> None:
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                with lock:
                    answer = client.http.post(self.path, headers=headers, body=body)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["child"])
def emulator(request: pytest.FixtureRequest) -> Iterator[FlyEmulator]:
    """The hungry machine; it touches its memory in a forked child, or with param "main" in
    its main process."""
    command = [sys.executable, "tests/orchestrator/memory_hungry_machine.py", str(NEEDS_MB), request.param]
    with FlyEmulator(port=0, images={IMAGE: command}, create_rate=0) as fly:
        yield fly


@pytest.fixture
def bridge(client: Client) -> Iterator[ChaliceBridge]:
    server = ChaliceBridge(client)
    yield server
    server.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the emulator's memory limit reads /proc")
def test_a_machine_killed_for_memory_is_retried_on_one_twice_the_size(services, env, client, emulator, bridge):
    services = make_services(env, FLY_API_HOSTNAME=emulator.url, ORCHESTRATOR_URL=bridge.url,
                             MACHINE_MEMORY_MB="256", MAX_MACHINE_MEMORY_MB="1024")
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))  # not in R2: default size

    ended = ("completed", "failed")
    (task,) = drive(services, lambda: [t for t in list_tasks(client) if t["status"] in ended], timeout=30)
    assert task["status"] == "completed", task["history"]
    assert [h["memory_mb"] for h in task["history"]] == [256, 512]
    assert [h["outcome"] for h in task["history"]] == ["retry", "complete"]
    assert "on a 256 MB machine" in task["history"][0]["error"]
    assert emulator.stats["oom_kills"] == 1  # the emulator's OOM killer, not our code, ended attempt 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the emulator's memory limit reads /proc")
@pytest.mark.parametrize("emulator", ["main"], indirect=True)
def test_a_machine_killed_outright_for_memory_times_out_and_is_retried_twice_the_size(
        services, env, client, emulator, bridge):
    services = make_services(env, FLY_API_HOSTNAME=emulator.url, ORCHESTRATOR_URL=bridge.url,
                             MACHINE_MEMORY_MB="256", MAX_MACHINE_MEMORY_MB="1024",
                             TASK_TIMEOUT_TIFF_CONVERSION="1500")
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))

    ended = ("completed", "failed")
    (task,) = drive(services, lambda: [t for t in list_tasks(client) if t["status"] in ended], timeout=30)
    assert task["status"] == "completed", task["history"]
    assert [h["memory_mb"] for h in task["history"]] == [256, 512]
    assert "killed for memory (OOM)" in task["history"][0]["error"]
    assert emulator.stats["oom_kills"] == 1
