"""An in-test HTTP server playing the orchestrator's side of the pool protocol (docs/pool.md):
pull, heartbeat, callback, plus a presigned-PUT stand-in for R2. It checks machine tokens
(HMAC-SHA256 of "pool-machine\\n{batch}\\n{machine}") as the orchestrator does and records
every request with its arrival time, so the tests can assert what a pool machine sent and when.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SIGNING_KEY = b"pool-test-signing-key"
BATCH = "b1"
BUCKET = "arke-staging"
_PULL = re.compile(r"^/pool/(?P<batch>[^/]+)/machines/(?P<machine>[^/]+)/(?P<what>pull|heartbeat)$")
_CALLBACK = re.compile(r"^/callback/(?P<batch>[^/]+)/(?P<task>[^/]+)$")


def machine_token(batch: str, machine: str) -> str:
    return hmac.new(SIGNING_KEY, f"pool-machine\n{batch}\n{machine}".encode(), hashlib.sha256).hexdigest()


@dataclass
class Seen:
    at: float  # time.monotonic()
    kind: str  # "pull", "heartbeat", "callback", "put"
    path: str
    query: dict
    headers: dict
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a 250-machine pool connects at once (the default backlog is 5)


class PoolOrchestrator:
    """`add_task(...)` queues tasks; a pull gets the next one (or a forced answer from
    `pull_script`), then `exit` once the queue is empty. Heartbeats of a task in `drop`
    are answered `drop`."""

    def __init__(self, heartbeat_interval_ms: int = 10000, presigned: bool = True):
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.presigned = presigned
        self.tasks: deque[dict] = deque()
        self.pull_script: deque[object] = deque()  # dict answers or int statuses
        self.drop: set[str] = set()
        self.seen: list[Seen] = []
        self.assigned: dict[str, float] = {}  # task id -> when a pull got it (monotonic)
        self.changed = threading.Condition()
        orchestrator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                orchestrator._handle(self, "POST")

            def do_PUT(self) -> None:  # noqa: N802
                orchestrator._handle(self, "PUT")

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- set-up and reads --------------------------------------------------------------

    def add_task(self, n: int, attempt: int = 1) -> str:
        task_id = f"{BATCH}_tiff_{n}"
        self.tasks.append({"task_id": task_id, "attempt": attempt,
                           "input_r2_key": f"staging/{BATCH}/dir/scan {n}.tif",
                           "output_r2_key": f"staging/{BATCH}/dir/scan {n}.jpg"})
        return task_id

    def env(self, machine: str, **extra: str) -> dict[str, str]:
        env = {"WORKER_MODE": "pool", "BATCH_ID": BATCH, "MACHINE_NAME": machine,
               "MACHINE_TOKEN": machine_token(BATCH, machine), "ORCHESTRATOR_URL": self.url,
               "WORKER_CONCURRENCY": "1", "R2_BUCKET": BUCKET}
        env.update(extra)
        return env

    def of(self, kind: str) -> list[Seen]:
        with self.changed:
            return [s for s in self.seen if s.kind == kind]

    def wait_for(self, kind: str, count: int, timeout: float = 10) -> list[Seen]:
        with self.changed:
            self.changed.wait_for(lambda: len([s for s in self.seen if s.kind == kind]) >= count,
                                  timeout=timeout)
        return self.of(kind)

    # ---- the protocol --------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        parts = urlsplit(h.path)
        if method == "PUT":
            self._record("put", parts, h, body)
            return self._answer(h, 200, None)
        if match := _PULL.match(parts.path):
            token = h.headers.get("Authorization", "").removeprefix("Bearer ")
            self._record(match["what"], parts, h, body)
            if not hmac.compare_digest(token, machine_token(match["batch"], match["machine"])):
                return self._answer(h, 401, {"error": "bad machine token"})
            if match["what"] == "heartbeat":
                task_id = json.loads(body or b"{}").get("task_id")
                if task_id in self.drop:
                    return self._answer(h, 200, {"action": "drop"})
                return self._answer(h, 200, {"action": "continue",
                                             "deadline_ms": int(time.time() * 1000) + 60000})
            return self._pull(h, match["batch"], match["machine"])
        if _CALLBACK.match(parts.path):
            self._record("callback", parts, h, body)
            return self._answer(h, 200, {"ok": True})
        self._answer(h, 404, {"error": "not found"})

    def _pull(self, h: BaseHTTPRequestHandler, batch: str, machine: str) -> None:
        with self.changed:
            forced = self.pull_script.popleft() if self.pull_script else None
            task = self.tasks.popleft() if forced is None and self.tasks else None
            if task is not None:
                self.assigned[task["task_id"]] = time.monotonic()
        if isinstance(forced, int):
            return self._answer(h, forced, {"error": "forced"})
        if forced is not None:
            return self._answer(h, 200, forced)
        if task is None:
            return self._answer(h, 200, {"action": "exit", "reason": "no work left"})
        task_id, attempt = task["task_id"], task["attempt"]
        assignment = {
            **task, "batch_id": batch, "r2_bucket": BUCKET,
            "callback_url": f"{self.url}/callback/{batch}/{task_id}?attempt={attempt}&machine={machine}",
            "callback_token": f"cb-{task_id}-{attempt}",
            "deadline_ms": int(time.time() * 1000) + 60000,
            "heartbeat_url": f"{self.url}/pool/{batch}/machines/{machine}/heartbeat",
        }
        if self.presigned:
            assignment["input_url"] = f"{self.url}/r2/in/{task_id}"
            assignment["output_url"] = f"{self.url}/r2/out/{task_id}?X-Amz-Signature=sig"
        self._answer(h, 200, {"action": "task", "heartbeat_interval_ms": self.heartbeat_interval_ms,
                              "task": assignment})

    def _record(self, kind: str, parts, h: BaseHTTPRequestHandler, body: bytes) -> None:
        with self.changed:
            self.seen.append(Seen(time.monotonic(), kind, parts.path, parse_qs(parts.query),
                                  dict(h.headers.items()), body))
            self.changed.notify_all()

    @staticmethod
    def _answer(h: BaseHTTPRequestHandler, status: int, data: object) -> None:
        payload = b"" if data is None else json.dumps(data).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)
