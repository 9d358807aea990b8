"""Runs one conversion as a child process and measures it: wall time, and peak RSS of
the whole process tree, sampled every 10 ms from /proc (the sum over the tree, so pages
a forked child shares with its parent count twice: conservative for our worker).
wait4's max RSS is not used: a child forked from this large Python process starts
with the parent's RSS before it execs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "bench" / ".cache"
SHARP_DIR = CACHE / "sharp"
SHARP_VERSION = "0.33.5"
SHARP_SCRIPT = Path(__file__).with_name("sharp_convert.js")


@dataclass
class Run:
    ok: bool
    seconds: float
    peak_rss_mb: float
    error: str = ""
    stdout: str = ""


def ensure_sharp() -> Path:
    module = SHARP_DIR / "node_modules" / "sharp"
    package = module / "package.json"
    if not package.exists() or f'"version": "{SHARP_VERSION}"' not in package.read_text():
        print(f"installing sharp {SHARP_VERSION} into {SHARP_DIR} ...", flush=True)
        SHARP_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(SHARP_DIR),
             f"sharp@{SHARP_VERSION}"],
            check=True,
        )  # fmt: skip
    return module


def sharp_command(module: Path, src: Path, dst: Path) -> tuple[list[str], dict]:
    return ["node", str(SHARP_SCRIPT), str(src), str(dst)], {"SHARP_MODULE": str(module)}


def worker_command(src: Path, dst: Path, machine_mb: int | None = None) -> tuple[list[str], dict]:
    """Our conversion as a Fly machine of `machine_mb` would run it (FLY_VM_MEMORY_MB is
    what the worker sizes its memory budget from)."""
    env = {"WORKER_MAX_PIXELS": "400000000"}
    if machine_mb:
        env["FLY_VM_MEMORY_MB"] = str(machine_mb)
    return [sys.executable, "-m", "worker", "convert", str(src), str(dst)], env


def measure(command: list[str], extra_env: dict, timeout: float = 900) -> Run:
    env = {**os.environ, **extra_env}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    peak = 0
    while True:
        pid, status, _ = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _tree_rss(process.pid))
        if time.perf_counter() - started > timeout:
            process.kill()
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    process.returncode = code = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode(errors="replace").strip()
    stdout = process.stdout.read().decode(errors="replace").strip()
    process.stderr.close()
    process.stdout.close()
    return Run(code == 0, seconds, peak / 2**20, stderr.splitlines()[-1] if stderr else "", stdout)


def _tree_rss(pid: int) -> int:
    """Sum of VmRSS over `pid` and its descendants, from /proc (Linux)."""
    total, stack, seen = 0, [pid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{current}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                path = f"/proc/{current}/task/{task}/children"
                with contextlib.suppress(OSError, ValueError), open(path) as f:
                    stack.extend(int(c) for c in f.read().split())
    return total
