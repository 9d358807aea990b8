"""Stands in for the ingest service (WORKER_URL) in the local stack.

Records each `POST /api/batches/{batch_id}/enqueue-processed` and shows what it got:
`GET /received` (one line per delivery), `GET /received/{batch_id}` (the bodies).
A fault knob, `POST /_receiver/fail-next {"count": N, "status": 503}`, makes the next N
deliveries fail, to exercise the orchestrator's delivery retries. Refused deliveries
are listed apart (`rejected`) and never counted as received.

It keeps everything in memory and decides nothing about the batch.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from arke_local.endpoints import HOST

ENQUEUE_RE = re.compile(r"^/api/batches/([^/]+)/enqueue-processed/?$")
RECEIVED_RE = re.compile(r"^/received/([^/]+)/?$")


def log(message: str) -> None:
    print(f"[Ingest] {message}", flush=True)


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Recorder:
    """The deliveries received, in arrival order; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deliveries: list[dict] = []
        self.rejected: list[dict] = []
        self.fail_next = 0
        self.fail_status = 503

    def record(self, batch_id: str, body: object, raw_size: int) -> tuple[int, dict]:
        with self.lock:
            entry = {"batch_id": batch_id, "received_at": now_iso(), "bytes": raw_size}
            if self.fail_next > 0:
                self.fail_next -= 1
                entry["status"] = self.fail_status
                self.rejected.append(entry)
                return self.fail_status, {"error": "injected failure (fail-next)"}
            entry["body"] = body
            self.deliveries.append(entry)
            files = body.get("files") if isinstance(body, dict) else None
            return 200, {
                "success": True,
                "batch_id": batch_id,
                "files": len(files) if isinstance(files, list) else None,
            }

    def summary(self) -> dict:
        with self.lock:
            rows = []
            for d in self.deliveries:
                files = d["body"].get("files") if isinstance(d["body"], dict) else None
                rows.append(
                    {
                        "batch_id": d["batch_id"],
                        "received_at": d["received_at"],
                        "files": len(files) if isinstance(files, list) else None,
                    }
                )
            return {
                "count": len(rows),
                "deliveries": rows,
                "rejected": list(self.rejected),
                "fail_next": self.fail_next,
            }

    def for_batch(self, batch_id: str) -> dict:
        with self.lock:
            found = [d for d in self.deliveries if d["batch_id"] == batch_id]
            rejected = [d for d in self.rejected if d["batch_id"] == batch_id]
        return {"batch_id": batch_id, "count": len(found), "deliveries": found, "rejected": rejected}

    def clear(self) -> None:
        with self.lock:
            self.deliveries.clear()
            self.rejected.clear()
            self.fail_next = 0


class Handler(BaseHTTPRequestHandler):
    server_version = "arke-ingest-receiver/1"
    recorder: Recorder  # set on the subclass made per server

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # one line per event is printed by the handlers themselves

    def _send(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> tuple[bytes, object]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return raw, json.loads(raw or b"null")
        except ValueError:
            return raw, None

    def do_GET(self):  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/"):
            return self._send(200, {"status": "ok", "service": "arke-ingest-receiver"})
        if path in ("/received", "/received/"):
            return self._send(200, self.recorder.summary())
        m = RECEIVED_RE.match(path)
        if m:
            return self._send(200, self.recorder.for_batch(m.group(1)))
        return self._send(404, {"error": f"no route {path}"})

    def do_POST(self):  # noqa: N802
        path = self.path.split("?", 1)[0]
        raw, body = self._body()
        m = ENQUEUE_RE.match(path)
        if m:
            batch_id = m.group(1)
            if not isinstance(body, dict) or not isinstance(body.get("files"), list):
                log(f"batch {batch_id}: rejected a body without a files list ({len(raw)} bytes)")
                return self._send(400, {"error": "body must be {\"files\": [...]}"})
            status, answer = self.recorder.record(batch_id, body, len(raw))
            if status == 200:
                log(f"batch {batch_id}: enqueue-processed received, {len(body['files'])} files")
            else:
                log(f"batch {batch_id}: enqueue-processed refused with {status} (fail-next knob)")
            return self._send(status, answer)
        if path == "/_receiver/fail-next":
            body = body if isinstance(body, dict) else {}
            with self.recorder.lock:
                self.recorder.fail_next = int(body.get("count", 1))
                self.recorder.fail_status = int(body.get("status", 503))
            log(f"fail-next set: {self.recorder.fail_next} x {self.recorder.fail_status}")
            return self._send(200, {"ok": True, "fail_next": self.recorder.fail_next})
        if path == "/_receiver/clear":
            self.recorder.clear()
            log("cleared")
            return self._send(200, {"ok": True})
        return self._send(404, {"error": f"no route {path}"})

    def do_DELETE(self):  # noqa: N802
        if self.path.split("?", 1)[0] in ("/received", "/received/"):
            self.recorder.clear()
            log("cleared")
            return self._send(200, {"ok": True})
        return self._send(404, {"error": "no route"})


class IngestReceiver:
    """The receiver as an object: `start()` serves on a thread, `stop()` closes it."""

    def __init__(self, host: str = HOST, port: int = 0):
        self.recorder = Recorder()
        handler = type("BoundHandler", (Handler,), {"recorder": self.recorder})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> IngestReceiver:
        self.thread = threading.Thread(target=self.server.serve_forever, name="ingest", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(prog="python -m arke_local.ingest_receiver")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=int(os.environ.get("ARKE_INGEST_PORT", "4290")))
    args = parser.parse_args(argv)
    receiver = IngestReceiver(args.host, args.port)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    log(f"listening on {receiver.url}")
    try:
        receiver.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.server.server_close()
        log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
