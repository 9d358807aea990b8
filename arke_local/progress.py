"""Watches a batch through `GET /status/{batch}` until it is DONE or in ERROR.

On a terminal: a live view drawn with rich, fitted to the terminal's width (it never wraps):
a line for the batch and its phase (converting, delivering, ...), a line for the tasks
(bar, counts, rate, ETA) and, when the status answer has a `machines` block, a line for the
machine pool. Off a terminal (CI, a pipe): one plain line per change, no escape codes.
At the end, the failed tasks with their errors (from `GET /status/{batch}/tasks?status=failed`)
and the command that retries them.

Exit codes (`watch` returns them, the CLI exits with them):
0 DONE with no failed task, 1 ERROR (or the watch gave up: timeout, unknown batch),
2 DONE with failed tasks.

The state (`Progress`) and the rendering (`render_view`, `render_failed`) are pure; `watch` polls.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO

import requests
from rich.cells import cell_len
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from arke_local.client import ApiError, OrchestratorClient

TERMINAL = ("DONE", "ERROR")
EXIT_DONE, EXIT_ERROR, EXIT_DONE_WITH_FAILURES = 0, 1, 2
FAILED_SHOWN = 20  # failed tasks listed at the end; the rest are counted
# A batch's status while it works is its phase's name; these say what that means.
PHASE_WORDS = {"INTAKE": "intake", "TIFF_CONVERSION": "converting", "FINALIZING": "delivering",
               "DONE": "done", "ERROR": "error"}


@dataclass
class Progress:
    """Counts over time; the rate is measured over the last `window_s` seconds."""

    window_s: float = 15.0
    samples: deque = field(default_factory=deque)  # (t, ended)
    status: str = "?"
    total: int = 0
    completed: int = 0
    failed: int = 0
    in_flight: int = 0
    pending: int = 0
    error: str | None = None
    delivery: dict = field(default_factory=dict)
    machines: dict = field(default_factory=dict)

    def update(self, t: float, answer: dict) -> None:
        p = answer.get("progress") or {}
        self.status = answer.get("status") or "?"
        self.error = answer.get("error")
        self.total = int(p.get("tasks_total") or 0)
        self.completed = int(p.get("tasks_completed") or 0)
        self.failed = int(p.get("tasks_failed") or 0)
        self.in_flight = int(p.get("tasks_in_flight") or 0)
        self.pending = int(p.get("tasks_pending") or max(0, self.total - self.ended - self.in_flight))
        self.delivery = answer.get("delivery") or {}
        machines = answer.get("machines")  # optional: only when the API reports a pool
        self.machines = machines if isinstance(machines, dict) else {}
        self.samples.append((t, self.ended))
        while len(self.samples) > 2 and t - self.samples[0][0] > self.window_s:
            self.samples.popleft()

    @property
    def ended(self) -> int:
        return self.completed + self.failed

    @property
    def phase(self) -> str:
        """What the batch is doing, in words: a phase whose tasks have all ended is waiting
        for its next pass to move on, and FINALIZING is the final delivery."""
        word = PHASE_WORDS.get(self.status, self.status.lower().replace("_", " "))
        working = self.status not in ("INTAKE", "FINALIZING", *TERMINAL)
        if working and self.total and self.ended >= self.total:
            return f"{word}, all tasks ended"
        return word

    @property
    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None

    @property
    def eta_s(self) -> float | None:
        """Seconds until every task has ended; None when unknown or nothing is left (then
        the view shows the phase instead of a stuck "ETA 0s")."""
        remaining = max(0, self.total - self.ended)
        rate = self.rate
        if self.total == 0 or remaining == 0 or not rate:
            return None
        return remaining / rate

    @property
    def exit_code(self) -> int | None:
        if self.status == "ERROR":
            return EXIT_ERROR
        if self.status == "DONE":
            return EXIT_DONE_WITH_FAILURES if self.failed else EXIT_DONE
        return None

    def key(self) -> tuple:
        return (self.status, self.total, self.completed, self.failed, self.in_flight,
                int(self.delivery.get("attempts") or 0), tuple(sorted(self.machines.items())))

    # --- pieces of text, most important first --------------------------------------------
    def task_parts(self) -> list[str]:
        parts = [f"{self.completed} done", f"{self.failed} failed", f"of {self.total}"]
        if self.status not in TERMINAL:
            rate = self.rate
            parts.append(f"{rate:.1f}/s" if rate is not None else "-/s")
            eta = self.eta_s
            if eta is not None:
                parts.append(f"ETA {_duration(eta)}")
            parts += [f"{self.in_flight} running", f"{self.pending} pending"]
        return parts

    def delivery_text(self) -> str:
        attempts = int(self.delivery.get("attempts") or 0)
        if self.delivery.get("delivered_at"):
            return f"delivered after {attempts} attempt(s)"
        if self.status == "FINALIZING":
            text = f"delivering the file list (attempt {attempts + 1})"
            err = self.delivery.get("last_error")
            return text + (f", last: {err}" if err else "")
        return ""

    def machine_parts(self) -> list[str]:
        return [f"{value} {str(name).replace('_', ' ')}" for name, value in self.machines.items()
                if isinstance(value, int | float | str) and not isinstance(value, bool)]

    def render_line(self, batch_id: str, elapsed_s: float) -> str:
        """The plain line of one change (no colour, no width limit)."""
        phase = f" ({self.phase})" if self.phase != self.status.lower() else ""
        text = f"[CLI] {batch_id} {self.status}{phase}: " + ", ".join(self.task_parts())
        if self.machine_parts():
            text += "; machines: " + ", ".join(self.machine_parts())
        if self.delivery_text():
            text += "; " + self.delivery_text()
        return text + f" (t+{elapsed_s:.0f}s)"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


# --- the live view --------------------------------------------------------------------------
LABEL_W = 9  # "tasks", "machines" column
BAR_MIN, BAR_MAX = 16, 40


def _fit(parts: list[str], room: int, sep: str = "  ") -> str:
    """As many of `parts` (most important first) as fit in `room` cells."""
    out = ""
    for part in parts:
        candidate = part if not out else out + sep + part
        if cell_len(candidate) > room:
            break
        out = candidate
    return out


def _line(text: Text) -> Text:
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def _bar(p: Progress, width: int) -> Text:
    done_w = round(width * p.completed / p.total) if p.total else 0
    fail_w = min(width - done_w, round(width * p.failed / p.total)) if p.total else 0
    bar = Text()
    bar.append("━" * done_w, style="green")
    bar.append("━" * fail_w, style="red")
    bar.append("━" * (width - done_w - fail_w), style="grey39")
    return bar


def _head_line(p: Progress, batch_id: str, elapsed_s: float) -> Text:
    head = Text()
    head.append(batch_id, style="bold")
    head.append(f"  {p.phase}", style="cyan")
    head.append(f"  {_duration(elapsed_s)}", style="dim")
    extra = p.delivery_text() or (p.error or "" if p.status == "ERROR" else "")
    if extra:
        head.append(f"  {extra}", style="red" if p.status == "ERROR" else "yellow")
    return head


def _tasks_line(p: Progress, width: int) -> Text:
    share = p.ended / p.total if p.total else 0.0
    pct = f"{share * 100:5.1f}%  "
    room = width - LABEL_W - cell_len(pct)  # for the bar (and its space) and the numbers
    numbers = _fit(p.task_parts(), room - BAR_MIN - 1)
    # The counts matter more than the bar: without room for two of them, no bar.
    bar_w = min(BAR_MAX, room - cell_len(numbers) - 1) if numbers.count("  ") >= 1 else 0
    tasks = Text("tasks".ljust(LABEL_W), style="bold")
    if bar_w >= BAR_MIN:
        tasks.append_text(_bar(p, bar_w))
        tasks.append(" ")
    else:  # too narrow for a bar: the numbers alone
        numbers = _fit(p.task_parts(), room)
    tasks.append(pct + numbers)
    return tasks


def _machines_line(p: Progress, width: int) -> Text:
    machines = Text("machines".ljust(LABEL_W), style="bold")
    machines.append(_fit(p.machine_parts(), width - LABEL_W))
    return machines


def render_view(p: Progress, batch_id: str, width: int, elapsed_s: float) -> Group:
    """The live view at `width` columns: no line is longer than `width` (what does not fit
    is left out, least important first, and rich cuts anything left with an ellipsis)."""
    lines = [_head_line(p, batch_id, elapsed_s), _tasks_line(p, width)]
    if p.machines:
        lines.append(_machines_line(p, width))
    for line in lines:
        _line(line).truncate(width, overflow="ellipsis")
    return Group(*lines)


def render_failed(tasks: list[dict], more: bool, failed: int, retry_command: str,
                  batch_id: str = "BATCH") -> Group:
    """The table of failed tasks (input, attempts, error) and how to retry them."""
    table = Table(title=f"{failed} failed task(s)", title_justify="left", expand=False,
                  show_lines=False, pad_edge=False)
    table.add_column("input", overflow="fold", ratio=2)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("error", overflow="fold", ratio=3)
    for t in tasks:
        table.add_row(str(t.get("input_r2_key") or t.get("task_id")), str(t.get("attempts", 0)),
                      str(t.get("last_error") or "-"))
    notes = []
    if more:
        notes.append(Text(f"(the first {len(tasks)}; all of them: arke-preprocess tasks {batch_id} --failed)",
                          style="dim"))
    notes.append(Text.assemble("retry them: ", (retry_command, "bold")))
    return Group(table, *notes)


# --- polling ---------------------------------------------------------------------------------
def _failed_tasks(client: OrchestratorClient, batch_id: str) -> tuple[list[dict], bool, str | None]:
    """(the first failed tasks, whether there are more, why they could not be read)."""
    try:
        page = client.tasks_page(batch_id, "failed", limit=FAILED_SHOWN)
    except (ApiError, requests.RequestException) as exc:
        return [], False, str(exc) if isinstance(exc, ApiError) else type(exc).__name__
    return page.get("tasks", []), bool(page.get("next")), None


class _Output:
    """Where the watch writes: a rich Live view on a terminal, plain lines elsewhere."""

    def __init__(self, out: TextIO, tty: bool, width: int | None):
        self.out = out
        self.tty = tty
        self.console = Console(file=out, width=width, force_terminal=tty or None,
                               no_color=not tty, highlight=False, soft_wrap=False)
        self.live: Live | None = None

    def note(self, message: str) -> None:
        if self.live:
            self.live.console.print(Text(message), overflow="ellipsis", no_wrap=True)
        else:
            print(message, file=self.out, flush=True)

    def show(self, p: Progress, batch_id: str, elapsed: float) -> None:
        if not self.tty:
            return
        view = render_view(p, batch_id, self.console.width, elapsed)
        if self.live is None:
            self.live = Live(view, console=self.console, auto_refresh=False, transient=False,
                             redirect_stdout=False, redirect_stderr=False)
            self.live.start()
        self.live.update(view, refresh=True)

    def stop(self) -> None:
        if self.live:
            self.live.stop()
            self.live = None

    def failed_table(self, tasks: list[dict], more: bool, failed: int, retry: str, batch_id: str) -> None:
        if self.tty:
            self.console.print(render_failed(tasks, more, failed, retry, batch_id))
            return
        for t in tasks:
            self.note(f"[CLI] failed: {t.get('input_r2_key') or t.get('task_id')} "
                      f"attempts={t.get('attempts', 0)} error: {t.get('last_error')}")
        if more:
            self.note(f"[CLI] ... {failed - len(tasks)} more failed task(s)")
        self.note(f"[CLI] retry them: {retry}")


def watch(
    client: OrchestratorClient,
    batch_id: str,
    *,
    interval_s: float = 1.0,
    timeout_s: float | None = None,
    appear_timeout_s: float = 120.0,
    out: TextIO | None = None,
    tty: bool | None = None,
    width: int | None = None,
    retry_command: str | None = None,
) -> tuple[int, dict | None]:
    """Polls until DONE or ERROR. Returns (exit code as in the module's docstring, last answer)."""
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    view = _Output(out, tty, width)
    progress = Progress()
    started = time.monotonic()
    last_key = None
    answer: dict | None = None
    announced_wait = False
    try:
        while True:
            now = time.monotonic()
            elapsed = now - started
            if timeout_s is not None and elapsed > timeout_s:
                view.stop()
                view.note(f"[CLI] {batch_id}: gave up after {timeout_s:.0f} s ({progress.status})")
                return EXIT_ERROR, answer
            try:
                answer = client.status(batch_id)
            except ApiError as exc:
                if exc.status == 404 and elapsed < appear_timeout_s:
                    if not announced_wait:
                        view.note(f"[CLI] {batch_id}: waiting for the batch to appear")
                        announced_wait = True
                    time.sleep(interval_s)
                    continue
                view.stop()
                view.note(f"[CLI] {batch_id}: {exc}")
                return EXIT_ERROR, None
            except requests.RequestException as exc:
                view.note(f"[CLI] {batch_id}: API unreachable ({type(exc).__name__}); retrying")
                time.sleep(interval_s)
                continue
            progress.update(now, answer)
            view.show(progress, batch_id, elapsed)
            if not tty and progress.key() != last_key:
                view.note(progress.render_line(batch_id, elapsed))
            last_key = progress.key()
            code = progress.exit_code
            if code is not None:
                view.stop()
                _finish(view, client, progress, batch_id, elapsed,
                        retry_command or f"arke-preprocess retry {batch_id}")
                return code, answer
            time.sleep(interval_s)
    finally:
        view.stop()


def _finish(view: _Output, client: OrchestratorClient, p: Progress, batch_id: str,
            elapsed: float, retry: str) -> None:
    if p.failed:
        tasks, more, problem = _failed_tasks(client, batch_id)
        if problem:
            view.note(f"[CLI] {batch_id}: could not list the failed tasks: {problem}")
        view.failed_table(tasks, more, p.failed, retry, batch_id)
    if p.status == "DONE":
        tail = f", {p.failed} task(s) failed" if p.failed else ""
        view.note(f"[CLI] {batch_id}: DONE in {elapsed:.1f} s{tail}")
    else:
        view.note(f"[CLI] {batch_id}: ERROR: {p.error}")
