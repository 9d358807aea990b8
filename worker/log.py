"""One log line per event on stdout, prefixed `[Worker]` and carrying the batch and task
ids. Secrets never reach it: `redact` scrubs any configured secret from free text."""

from __future__ import annotations

import sys
from collections.abc import Iterable


class TaskLog:
    def __init__(self, batch_id: str = "-", task_id: str = "-", secrets: Iterable[str] = ()):
        self.batch_id = batch_id or "-"
        self.task_id = task_id or "-"
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def info(self, message: str) -> None:
        line = f"[Worker] batch={self.batch_id} task={self.task_id} {self.redact(message)}"
        print(line.replace("\n", " "), file=sys.stdout, flush=True)

    error = info
