"""Watches a batch through `GET /status/{batch}` until it is DONE or in ERROR.

On a terminal: one progress bar redrawn in place (completed, failed, total, rate, ETA).
Otherwise (CI, a pipe): a plain line whenever something changes, and a heartbeat line
every `heartbeat_s`. The rendering is pure (`Progress.render_*`); `watch` polls.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field

import requests

from arke_local.client import ApiError, OrchestratorClient

TERMINAL = ("DONE", "ERROR")


@dataclass
class Progress:
    """Counts over time; the rate is measured over the last `window_s` seconds."""

    window_s: float = 15.0
    samples: deque = field(default_factory=deque)  # (t, ended)
    status: str = "?"
    total: int = 0
    completed: int = 0
    failed: int = 0

    def update(self, t: float, answer: dict) -> None:
        p = answer.get("progress") or {}
        self.status = answer.get("status", "?")
        self.total = int(p.get("tasks_total") or 0)
        self.completed = int(p.get("tasks_completed") or 0)
        self.failed = int(p.get("tasks_failed") or 0)
        self.samples.append((t, self.ended))
        while len(self.samples) > 2 and t - self.samples[0][0] > self.window_s:
            self.samples.popleft()

    @property
    def ended(self) -> int:
        return self.completed + self.failed

    @property
    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None

    @property
    def eta_s(self) -> float | None:
        rate = self.rate
        remaining = max(0, self.total - self.ended)
        if self.total == 0:
            return None
        if remaining == 0:
            return 0.0
        return remaining / rate if rate else None

    def key(self) -> tuple:
        return (self.status, self.total, self.completed, self.failed)

    def _numbers(self) -> str:
        rate = self.rate
        eta = self.eta_s
        rate_text = f"{rate:.1f}/s" if rate is not None else "-/s"
        eta_text = _duration(eta) if eta is not None else "?"
        return (
            f"{self.completed} completed, {self.failed} failed, {self.total} total, "
            f"{rate_text}, ETA {eta_text}"
        )

    def render_bar(self, batch_id: str, width: int = 30) -> str:
        share = self.ended / self.total if self.total else 0.0
        done_w = int(round(width * self.completed / self.total)) if self.total else 0
        fail_w = min(width - done_w, int(round(width * self.failed / self.total))) if self.total else 0
        bar = "#" * done_w + "x" * fail_w + "-" * (width - done_w - fail_w)
        return f"{batch_id} {self.status:<15} [{bar}] {share * 100:5.1f}%  {self._numbers()}"

    def render_line(self, batch_id: str, elapsed_s: float) -> str:
        return f"[CLI] {batch_id} {self.status} {self._numbers()} (t+{elapsed_s:.0f}s)"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def watch(
    client: OrchestratorClient,
    batch_id: str,
    *,
    interval_s: float = 1.0,
    timeout_s: float | None = None,
    appear_timeout_s: float = 120.0,
    heartbeat_s: float = 10.0,
    out=None,
    tty: bool | None = None,
) -> tuple[int, dict | None]:
    """Polls until DONE (0) or ERROR (1); 1 also on timeout. Returns (code, last answer)."""
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    progress = Progress()
    started = time.monotonic()
    last_key = None
    last_print = 0.0
    answer: dict | None = None
    announced_wait = False
    while True:
        now = time.monotonic()
        elapsed = now - started
        if timeout_s is not None and elapsed > timeout_s:
            _finish_bar(out, tty)
            print(f"[CLI] {batch_id}: gave up after {timeout_s:.0f} s ({progress.key()})", file=out, flush=True)
            return 1, answer
        try:
            answer = client.status(batch_id)
        except ApiError as exc:
            if exc.status == 404 and elapsed < appear_timeout_s:
                if not announced_wait:
                    print(f"[CLI] {batch_id}: waiting for the batch to appear", file=out, flush=True)
                    announced_wait = True
                time.sleep(interval_s)
                continue
            _finish_bar(out, tty)
            print(f"[CLI] {batch_id}: {exc}", file=out, flush=True)
            return 1, None
        except requests.RequestException as exc:
            print(f"[CLI] {batch_id}: API unreachable ({type(exc).__name__}); retrying", file=out, flush=True)
            time.sleep(interval_s)
            continue
        progress.update(now, answer)
        if tty:
            out.write("\r\033[K" + progress.render_bar(batch_id))
            out.flush()
        elif progress.key() != last_key or now - last_print >= heartbeat_s:
            print(progress.render_line(batch_id, elapsed), file=out, flush=True)
            last_print = now
        last_key = progress.key()
        if progress.status in TERMINAL:
            _finish_bar(out, tty)
            if progress.status == "DONE":
                print(f"[CLI] {batch_id}: DONE in {elapsed:.1f} s", file=out, flush=True)
                return 0, answer
            print(f"[CLI] {batch_id}: ERROR: {answer.get('error')}", file=out, flush=True)
            return 1, answer
        time.sleep(interval_s)


def _finish_bar(out, tty: bool) -> None:
    if tty:
        out.write("\n")
        out.flush()
