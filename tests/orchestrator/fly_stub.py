"""A real HTTP server on loopback standing in for Fly's Machines API in orchestrator tests.

It answers creations from a script (status codes, "timeout", or 200 by default), starts
from another, stops and config updates with 200, and records every request, so a test can assert what the orchestrator sent and drive callbacks itself.
The full emulator (arke_local.fly_emulator) is used by the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FlyStub:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.script: list[Any] = []
        self.retry_after = "2"
        self.timeout_s = 1.5
        self.listed = 0
        self.lists_machines = True  # False: Machines_list lags and shows none yet
        self.shown: list[str] = []  # ids asked for one by one (Get Machine)
        self.oom_killed: set[str] = set()  # machines whose exit event says oom_killed
        self.show_answer = 200  # Get Machine's status (429: rate limited)
        self.delete_script: list[int] = []  # answers to the next destroys (200 by default)
        self.start_script: list[int] = []  # answers to the next starts (200 by default; 409, 412, 404...)
        self.stop_script: list[int] = []  # answers to the next stops (200 by default)
        self.actions: list[dict[str, Any]] = []  # starts, stops and updates of existing machines
        self.delete_tries: list[str] = []  # every destroy asked for, answered or not
        self._lock = threading.Lock()
        self._counter = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                # the client may have given up (a "timeout" answer): nothing to tell it then
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                parts = self.path.split("?")[0].rstrip("/").split("/")
                if parts[-1] != "machines":  # .../machines/{id}/start|stop, or /machines/{id}: update
                    self._machine_action(parts, body)
                    return
                with stub._lock:
                    answer = stub.script.pop(0) if stub.script else 200
                    stub._counter += 1
                    machine_id = f"m{stub._counter:05d}"
                    stub.requests.append({"path": self.path, "body": body, "answer": answer,
                                          "auth": self.headers.get("Authorization"), "id": machine_id,
                                          "at": time.monotonic()})
                if answer == "timeout":
                    time.sleep(stub.timeout_s)
                    answer = 200
                if answer == 200:
                    self._send(200, {"id": machine_id, "name": body.get("name"), "state": "created"})
                elif answer == 429:
                    self._send(429, {"error": "rate limit exceeded"}, {"Retry-After": stub.retry_after})
                else:
                    self._send(int(answer), {"error": f"injected {answer}"})

            def _machine_action(self, parts: list[str], body: dict[str, Any]) -> None:
                action = parts[-1] if parts[-1] in ("start", "stop") else "update"
                machine_id = parts[-2] if action != "update" else parts[-1]
                with stub._lock:
                    script = {"start": stub.start_script, "stop": stub.stop_script}.get(action)
                    answer = script.pop(0) if script else 200
                    stub.actions.append({"action": action, "id": machine_id, "answer": answer, "body": body,
                                         "at": time.monotonic()})
                if answer == 200:
                    self._send(200, {"id": machine_id, "state": "stopped"} if action == "update"
                               else {"ok": True, "previous_state": "stopped"})
                elif answer == 429:
                    self._send(429, {"error": "rate limit exceeded"}, {"Retry-After": "1"})
                else:
                    self._send(int(answer), {"error": f"injected {answer}"})

            def do_GET(self) -> None:  # noqa: N802 - Machines_list, or Get Machine by id
                machine_id = self.path.split("?")[0].rstrip("/").split("/")[-1]
                if machine_id != "machines":
                    with stub._lock:
                        stub.shown.append(machine_id)
                        killed = machine_id in stub.oom_killed
                    if stub.show_answer != 200:
                        self._send(stub.show_answer, {"error": "rate limit exceeded"}, {"Retry-After": "1"})
                        return
                    exit_event = {"exit_code": 137 if killed else 0, "oom_killed": killed}
                    self._send(200, {"id": machine_id, "state": "destroyed", "events": [
                        {"type": "destroy", "status": "destroyed"},
                        {"type": "exit", "status": "stopped", "request": {"exit_event": exit_event}}]})
                    return
                with stub._lock:
                    stub.listed += 1
                    live = [{"id": r["id"], "name": r["body"].get("name"), "state": "started"}
                            for r in stub.created() if r["id"] not in stub.deleted and stub.lists_machines]
                data = json.dumps(live).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_DELETE(self) -> None:  # noqa: N802
                machine_id = self.path.split("/")[-1].split("?")[0]
                with stub._lock:
                    answer = stub.delete_script.pop(0) if stub.delete_script else 200
                    stub.delete_tries.append(machine_id)
                    if answer == 200:
                        stub.deleted.append(machine_id)
                if answer == 200:
                    self._send(200, {"ok": True})
                else:
                    self._send(answer, {"error": f"injected {answer}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> FlyStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def created(self) -> list[dict[str, Any]]:
        """Requests that were answered with a machine (200, or created behind a timeout)."""
        return [r for r in self.requests if r["answer"] in (200, "timeout")]
