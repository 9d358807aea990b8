"""Fixtures for the Fly emulator tests (tests/local/test_fly_emulator*.py): an emulator
factory, an API client, and an HTTP receiver standing in for the orchestrator's callback
route. Everything is on loopback and torn down after each test."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests

from arke_local.fly_emulator import FlyEmulator

FLY_EMULATOR_TEST_TOKEN = "test-token"
FLY_EMULATOR_TEST_APP = "arke-tiff-worker"


class FlyEmulatorClient:
    """Just enough of a Machines API client for the tests; answers are raw responses."""

    def __init__(self, emulator: FlyEmulator, app: str = FLY_EMULATOR_TEST_APP,
                 token: str | None = FLY_EMULATOR_TEST_TOKEN):
        self.emulator = emulator
        self.base = f"{emulator.url}/v1/apps/{app}/machines"
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only, never an HTTP proxy
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def create(self, body: object, **kw: object) -> requests.Response:
        return self.session.post(self.base, json=body, timeout=kw.pop("timeout", 10), **kw)

    def get(self, machine_id: str) -> requests.Response:
        return self.session.get(f"{self.base}/{machine_id}", timeout=10)

    def list(self, **params: str) -> requests.Response:
        return self.session.get(self.base, params=params, timeout=10)

    def wait(self, machine_id: str, state: str, timeout: int = 10) -> requests.Response:
        return self.session.get(f"{self.base}/{machine_id}/wait",
                                params={"state": state, "timeout": timeout}, timeout=timeout + 5)

    def stop(self, machine_id: str, body: dict | None = None) -> requests.Response:
        return self.session.post(f"{self.base}/{machine_id}/stop", json=body, timeout=10)

    def start(self, machine_id: str) -> requests.Response:
        return self.session.post(f"{self.base}/{machine_id}/start", timeout=10)

    def update(self, machine_id: str, body: object) -> requests.Response:
        return self.session.post(f"{self.base}/{machine_id}", json=body, timeout=10)

    def delete(self, machine_id: str, force: bool = False) -> requests.Response:
        params = {"force": "true"} if force else {}
        return self.session.delete(f"{self.base}/{machine_id}", params=params, timeout=15)

    def admin(self, method: str, what: str, body: object = None) -> requests.Response:
        return self.session.request(method, f"{self.emulator.url}/_emulator/{what}", json=body,
                                    timeout=10)

    def stats(self) -> dict:
        return self.admin("GET", "stats").json()

    def machine_until(self, machine_id: str, state: str, timeout: float = 10) -> dict:
        """Poll GET until the machine is in `state` (wait cannot ask for 'stopped' only)."""
        deadline = time.monotonic() + timeout
        while True:
            machine = self.get(machine_id).json()
            if machine["state"] == state or time.monotonic() > deadline:
                return machine
            time.sleep(0.05)


@pytest.fixture
def fly_emulator_factory():
    """Start emulators with `factory(**EmulatorSettings changes)`; all stopped afterwards."""
    started: list[FlyEmulator] = []

    def factory(**changes: object) -> FlyEmulator:
        changes.setdefault("port", 0)
        changes.setdefault("token", FLY_EMULATOR_TEST_TOKEN)
        changes.setdefault("create_rate", 0)  # unlimited unless a test wants the limit
        emulator = FlyEmulator(**changes).start()
        started.append(emulator)
        return emulator

    yield factory
    for emulator in started:
        emulator.stop()


@pytest.fixture
def fly_emulator_client():
    def client(emulator: FlyEmulator, **kw: object) -> FlyEmulatorClient:
        return FlyEmulatorClient(emulator, **kw)

    return client


@dataclass
class ReceivedCallback:
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class FlyEmulatorCallbackReceiver:
    url: str
    received: list[ReceivedCallback] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, timeout: float = 10) -> list[ReceivedCallback]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout=timeout)
            return list(self.received)


@pytest.fixture
def fly_emulator_callback_receiver():
    """An HTTP server recording every POST (the orchestrator's callback route's stand-in)."""
    receiver: FlyEmulatorCallbackReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = urlsplit(self.path)
            with receiver.arrived:
                receiver.received.append(
                    ReceivedCallback(parts.path, parts.query, dict(self.headers.items()), body)
                )
                receiver.arrived.notify_all()
            payload = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = FlyEmulatorCallbackReceiver(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def moto_endpoint():
    """moto in server mode on a free loopback port, for one test module."""
    from moto.server import ThreadedMotoServer

    from arke_local.endpoints import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
