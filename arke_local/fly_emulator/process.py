"""Local processes standing in for machine VMs: spawn in a new session, measure the tree's
RSS, signal the whole process group. Linux only (reads /proc).

Never decides anything about machine state; the supervisor does.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")


def spawn(argv: Sequence[str], cwd: str | None, env: Mapping[str, str]) -> subprocess.Popen:
    """Start `argv` as the leader of a new session (its pid is its process group id), with
    exactly `env` as its environment; stdout and stderr are the emulator's."""
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                kids.extend(int(k) for k in (task / "children").read_text().split())
    return kids


def _rss(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * _PAGE


def tree_rss(pid: int) -> dict[int, int]:
    """Resident memory in bytes of `pid` and each of its descendants (empty once gone)."""
    sizes: dict[int, int] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        if p in sizes:
            continue
        sizes[p] = _rss(p)
        todo.extend(_children(p))
    return {p: size for p, size in sizes.items() if size > 0}


def kill(pid: int) -> None:
    """SIGKILL one process; one already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to every process of the group; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def exit_code(returncode: int) -> int:
    """A shell-style exit code: a death by signal N is 128 + N (SIGKILL: 137)."""
    return returncode if returncode >= 0 else 128 - returncode


def parse_signal(name: str | None, default: int = signal.SIGTERM) -> int:
    """`SIGINT`, `INT`, `sigterm` or a number; raises ValueError for anything else."""
    if not name:
        return int(default)
    if name.isdigit():
        return int(signal.Signals(int(name)))
    upper = name.upper()
    return int(signal.Signals[upper if upper.startswith("SIG") else f"SIG{upper}"])


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_duration(text: str | None, default: float) -> float:
    """A Go-style duration (`5s`, `500ms`, `1m`) or plain seconds; ValueError otherwise."""
    if not text:
        return default
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"invalid duration {text!r}")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value
