"""A minimal pool worker process for the emulator's orchestrator-proxy tests: the pool loop of
docs/pool.md against $ORCHESTRATOR_URL (pull -> heartbeat for $SCRIPT_WORK_S -> PUT a few
bytes to output_url -> callback -> pull), in plain urllib, so the proxy path is tested
without depending on the real worker's pool mode. Run as a machine's command."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
ENV = os.environ
AUTH = {"Authorization": f"Bearer {ENV['MACHINE_TOKEN']}", "Content-Type": "application/json"}


def post(url: str, body: dict, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with OPENER.open(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def work(answer: dict) -> None:
    task = answer["task"]
    interval = answer["heartbeat_interval_ms"] / 1000
    end = time.monotonic() + float(ENV.get("SCRIPT_WORK_S", "0.1"))
    while time.monotonic() < end:
        time.sleep(min(interval, max(0.0, end - time.monotonic())))
        if time.monotonic() < end:
            _, beat = post(task["heartbeat_url"], {"task_id": task["task_id"], "attempt": task["attempt"]}, AUTH)
            if beat.get("action") == "drop":
                return
    put = urllib.request.Request(task["output_url"], data=b"jpeg", method="PUT",
                                 headers={"Content-Type": "image/jpeg"})
    with OPENER.open(put, timeout=30) as response:
        response.read()
    body = {"task_id": task["task_id"], "batch_id": task["batch_id"], "status": "success",
            "output_r2_key": task["output_r2_key"], "output_file_name": task["output_r2_key"].rsplit("/", 1)[-1],
            "output_file_size": 4, "performance": {"total_time_ms": 100, "download_time_ms": 0,
                                                   "conversion_time_ms": 100, "upload_time_ms": 0}}
    post(task["callback_url"], body, {"Authorization": f"Bearer {task['callback_token']}",
                                      "Content-Type": "application/json"})


def main() -> int:
    url = f"{ENV['ORCHESTRATOR_URL']}/pool/{ENV['BATCH_ID']}/machines/{ENV['MACHINE_NAME']}/pull"
    while True:
        status, answer = post(url, {}, AUTH)
        if status != 200:
            return 1
        if answer["action"] == "task":
            work(answer)
        elif answer["action"] == "wait":
            time.sleep(answer["retry_after_ms"] / 1000)
        else:
            return 0


if __name__ == "__main__":
    sys.exit(main())
