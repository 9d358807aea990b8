"""The heartbeat of one held task in pool mode: a thread that POSTs the heartbeat every
`heartbeat_interval_ms` from the moment the task is pulled until its callback is
delivered, so the orchestrator keeps the attempt in flight.

"drop" (the attempt was reassigned or the batch reset) and 401 (the machine token is
no longer good) set `dropped`: the slot then kills the conversion and sends no callback.
Any other failure is logged and the beats go on: the next one may get through.
"""

from __future__ import annotations

import threading

from worker.exceptions import PoolRejectedError, WorkerError
from worker.log import TaskLog
from worker.pull import PoolClient


class Heartbeat:
    """`with Heartbeat(...) as beat:` beats while the block runs; `beat.dropped` is the
    event the task's steps watch (worker.steps' `cancel`)."""

    def __init__(self, client: PoolClient, task: dict, interval_ms: int, log: TaskLog):
        self.client = client
        self.url = str(task.get("heartbeat_url") or "")
        self.task_id = str(task["task_id"])
        self.attempt = int(task.get("attempt") or 0)
        self.interval_s = interval_ms / 1000
        # A beat that hangs must not hold up the next one past its interval.
        self.timeout_s = min(client.settings.request_timeout_s, max(1.0, self.interval_s))
        self.log = log
        self.dropped = threading.Event()
        self.rejected = False  # a 401: the machine should stop pulling
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.task_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop beating; a beat already on the wire is not waited for long."""
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                action = self.client.heartbeat(self.url, self.task_id, self.attempt, self.timeout_s)
            except PoolRejectedError as exc:
                if exc.status != 401:
                    self.log.info(f"heartbeat refused ({exc}); keeping on")
                    continue
                self.log.error(f"heartbeat refused ({exc}): dropping the task, no callback")
                self.rejected = True
                self.dropped.set()
                return
            except WorkerError as exc:
                self.log.info(f"heartbeat failed ({exc}); keeping on")
                continue
            self.beats += 1
            if action == "drop":
                self.log.info(f"heartbeat {self.beats}: drop: the attempt is no longer ours")
                self.dropped.set()
                return
