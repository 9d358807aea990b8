"""The orchestrator's pool API as a pool machine sees it (docs/pool.md), on loopback:
the HTTP boundary the worker's pool mode is tested against.

Pulls are answered from a script (an answer dict, or an HTTP status to fail with);
once it is used up every pull gets "exit". The machine token is checked as the real
orchestrator checks it (HMAC-SHA256 of "pool-machine\\n{batch}\\n{machine}"): a forged one
gets 401, another machine's name 404. Heartbeats answer "continue", or "drop" (or a
status, or a function of the heartbeat's body giving one) for the tasks named in
`heartbeat_answers`. Callbacks are recorded with their
headers and answered 200 (or `callback_failures` times 503 first). GET of a path in
`objects` serves its bytes after a delay (a slow presigned download); PUT is recorded.
Every request is an event with its arrival time, in order.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import re
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

SIGNING_KEY = b"test-signing-key"


def machine_token(batch_id: str, machine_name: str) -> str:
    return hmac.new(SIGNING_KEY, f"pool-machine\n{batch_id}\n{machine_name}".encode(),
                    hashlib.sha256).hexdigest()  # fmt: skip


def standing_token(machine_name: str) -> str:
    """A standing machine's token, over its name alone (chalicelib.signing)."""
    return hmac.new(SIGNING_KEY, f"pool-standing\n{machine_name}".encode(), hashlib.sha256).hexdigest()


class PoolOrchestrator:
    def __init__(self, batch_id: str = "batch_p", machine_name: str = "tiff-pool-0123456789ab"):
        self.batch_id, self.machine_name = batch_id, machine_name
        self.script: list[dict | int] = []
        self.heartbeat_answers: dict[str, dict | int | Callable[[dict], dict]] = {}
        self.callback_failures = 0
        self.heartbeat_interval_ms = 10_000
        self.objects: dict[str, tuple[bytes, float]] = {}
        self.events: list[dict] = []
        self.on_event: Callable[[dict], None] | None = None
        self.lock = threading.Lock()
        self.standing = False  # a standing machine's token; its first pull is machine-scoped
        self.pull_url_override: str | None = None  # what the machine-scoped pull names
        orchestrator = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer = orchestrator.handle(self.path, dict(self.headers), raw)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):  # noqa: N802
                data, delay = orchestrator.objects.get(self.path, (b"", 0.0))
                time.sleep(delay)
                self.send_response(200 if data else 404)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with orchestrator.lock:
                    orchestrator.events.append({"kind": "put", "path": self.path, "time": time.monotonic()})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def token(self) -> str:
        if self.standing:
            return standing_token(self.machine_name)
        return machine_token(self.batch_id, self.machine_name)

    def task(self, task_id: str, input_key: str, output_key: str, attempt: int = 1, **extra) -> dict:
        """A `task` pull answer for one attempt, with its own callback token."""
        base = f"{self.url}/pool/{self.batch_id}/machines/{self.machine_name}"
        task = {
            "task_id": task_id, "batch_id": self.batch_id, "attempt": attempt,
            "input_r2_key": input_key, "output_r2_key": output_key, "r2_bucket": extra.pop("r2_bucket", ""),
            "callback_url": f"{self.url}/callback/{self.batch_id}/{task_id}?attempt={attempt}&machine={self.machine_name}",
            "callback_token": f"cb-token-{task_id}-{attempt}",
            "deadline_ms": int(time.time() * 1000) + 60_000,
            "heartbeat_url": f"{base}/heartbeat",
            **extra,
        }  # fmt: skip
        return {"action": "task", "heartbeat_interval_ms": self.heartbeat_interval_ms, "task": task}

    def of(self, kind: str, task_id: str | None = None) -> list[dict]:
        with self.lock:
            return [e for e in self.events if e["kind"] == kind
                    and (task_id is None or e.get("task_id") == task_id)]  # fmt: skip

    def handle(self, path: str, headers: dict, raw: bytes) -> tuple[int, dict]:
        body = json.loads(raw) if raw else None
        route = urlsplit(path).path
        event = {"time": time.monotonic(), "path": path, "headers": headers, "body": body}
        match = re.fullmatch(r"/pool/([^/]+)/machines/([^/]+)/(pull|heartbeat)", route)
        standing = re.fullmatch(r"/pool/machines/([^/]+)/pull", route)
        if match:
            event["kind"] = match[3]
            status, answer = self._pool(match[1], match[2], match[3], headers, body, event)
        elif standing and self.standing:
            event["kind"] = "standing_pull"
            status, answer = self._pool(self.batch_id, standing[1], "pull", headers, body, event)
            if status == 200:
                base = f"{self.url}/pool/{self.batch_id}/machines/{self.machine_name}/pull"
                answer = {**answer, "pull_url": self.pull_url_override or base}
        elif route.startswith("/callback/"):
            event["kind"], event["task_id"] = "callback", route.rsplit("/", 1)[1]
            with self.lock:
                failing = len([e for e in self.events if e["kind"] == "callback"]) < self.callback_failures
            status, answer = (503, {"error": "busy"}) if failing else (200, {"ok": True})
        else:
            event["kind"] = "unknown"
            status, answer = 404, {"error": "no such route"}
        event["status"], event["answer"] = status, answer
        with self.lock:
            self.events.append(event)
        if self.on_event:
            self.on_event(event)
        return status, answer

    def _pool(self, batch, machine, kind, headers, body, event) -> tuple[int, dict]:
        given = headers.get("Authorization", "").removeprefix("Bearer ")
        if batch != self.batch_id or machine != self.machine_name:
            return 404, {"error": "unknown machine"}
        if not hmac.compare_digest(given, self.token):
            return 401, {"error": "bad machine token"}
        if kind == "heartbeat":
            event["task_id"] = body["task_id"]
            answer = self.heartbeat_answers.get(body["task_id"], {"action": "continue"})
            answer = answer(body) if callable(answer) else answer
            if isinstance(answer, int):
                return answer, {"error": "scripted"}
            return 200, {"deadline_ms": int(time.time() * 1000) + 60_000, **answer}
        with self.lock:
            answer = self.script.pop(0) if self.script else {"action": "exit", "reason": "no work left"}
        if isinstance(answer, int):
            return answer, {"error": "scripted failure"}
        if answer.get("action") == "task":
            event["task_id"] = answer["task"]["task_id"]
        return 200, answer

    def close(self):
        self.server.shutdown()
        self.server.server_close()
