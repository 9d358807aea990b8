"""A machine image for the Fly emulator that needs a fixed amount of memory, whatever its
machine has: the stand-in for a worker converting a scan too large for a small machine.

The "conversion" touches `argv[1]` MiB and holds them a moment: in a forked child (as the
real worker's does) by default, or with `argv[2] == "main"` in the machine's main process.
If the child is SIGKILLed (the emulator's OOM killer, as the kernel's would) the machine
sends the worker's error callback with `error_code` `out_of_memory`; if the main process
is, the machine just dies (no callback, only Fly's exit event says why); otherwise the
success callback (contracts §3). Stdlib only: the emulator gives a machine nothing but its env.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request

MIB = 1024 * 1024


def convert(megabytes: int) -> None:
    held = b"\x01" * (megabytes * MIB)  # filled, so every page is resident
    time.sleep(0.6)  # long enough for the watchdog (50 ms) to see it
    del held


def callback(body: dict) -> None:
    headers = {"Content-Type": "application/json"}
    if os.environ.get("CALLBACK_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['CALLBACK_TOKEN']}"
    request = urllib.request.Request(os.environ["CALLBACK_URL"], json.dumps(body).encode(), headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        response.read()


def main() -> int:
    if sys.argv[2:] == ["main"]:
        convert(int(sys.argv[1]))
        return succeed()
    pid = os.fork()
    if pid == 0:
        convert(int(sys.argv[1]))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    ids = {"task_id": os.environ["TASK_ID"], "batch_id": os.environ["BATCH_ID"]}
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        callback({**ids, "status": "error", "error_code": "out_of_memory",
                  "error": f"conversion process was killed by SIGKILL (out of memory?) on a "
                           f"{os.environ.get('FLY_VM_MEMORY_MB')} MB machine"})
        return 1
    return succeed()


def succeed() -> int:
    key = os.environ["OUTPUT_R2_KEY"]
    callback({"task_id": os.environ["TASK_ID"], "batch_id": os.environ["BATCH_ID"], "status": "success",
              "output_r2_key": key, "output_file_name": key.rsplit("/", 1)[-1], "output_file_size": 1234})
    return 0


if __name__ == "__main__":
    sys.exit(main())
