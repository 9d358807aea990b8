"""One log line per event on stdout, prefixed `[Worker]` and carrying the batch and task
ids. Secrets never reach it: `redact` scrubs any configured secret from free text.

Lines are written under `OUTPUT_LOCK`, which worker.isolation also holds while it forks:
in pool mode several threads log, and a child forked while another thread held stdout's
internal lock would inherit it locked and hang on its first flush."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable

OUTPUT_LOCK = threading.Lock()


class TaskLog:
    def __init__(
        self,
        batch_id: str = "-",
        task_id: str = "-",
        secrets: Iterable[str] = (),
        tags: str = "",
    ):
        """`tags` (pool mode: `machine=... slot=...`) follow the task id on every line."""
        self.batch_id = batch_id or "-"
        self.task_id = task_id or "-"
        self.tags = f"{tags} " if tags else ""
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def info(self, message: str) -> None:
        line = f"[Worker] batch={self.batch_id} task={self.task_id} {self.tags}{self.redact(message)}"
        with OUTPUT_LOCK:
            print(line.replace("\n", " "), file=sys.stdout, flush=True)

    error = info
