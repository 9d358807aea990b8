"""Runs one function in a forked child with a wall-clock limit.

Why: a decoder can hang or crash on a hostile file, and the out-of-memory killer can
take the process; the parent must survive all three to send the error callback. The
child's result (or its `WorkerError`) comes back pickled through a pipe. Never use this
for anything that needs the parent's threads (a forked child has none); when libvips
already runs in the parent (its threads would be missing in a fork), the child is a
fresh interpreter instead.

Pool mode runs several of these at once from threads, and may call one off (`cancel`,
the orchestrator dropped the task): the child is then killed and `Cancelled` raised.
Pipe creation, fork and closing the parent's write end happen under one lock (also the
log's), so no child inherits another conversion's write end (which would keep that
pipe open past its own child's exit) or a stdout lock held by a logging thread.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import sys
import threading
import time
from collections.abc import Callable

from worker.exceptions import (
    Cancelled,
    ConversionCrashedError,
    ConversionError,
    ConversionKilledError,
    ConversionTimeoutError,
    NotEnoughMemoryError,
    WorkerError,
)
from worker.log import OUTPUT_LOCK


def run_isolated(
    fn: Callable, args: tuple, timeout_s: float, cancel: threading.Event | None = None
):
    """fn(*args) in a child; its WorkerError is re-raised here. `cancel` set while it
    runs kills the child and raises `Cancelled`."""
    if not hasattr(os, "fork") or os.environ.get("WORKER_ISOLATE", "1") == "0":
        return fn(*args)
    with OUTPUT_LOCK:
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        pid = _start_child(fn, args, read_end, write_end)
        os.close(write_end)
    try:
        payload = _collect(read_end, pid, timeout_s, cancel)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if not payload:
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            raise ConversionKilledError(_death(status))
        raise ConversionCrashedError(_death(status))
    kind, value = pickle.loads(payload)
    if kind == "error":
        raise value
    return value


def _libvips_running() -> bool:
    """Whether this process has started libvips: its worker threads do not survive a
    fork, so a forked child that uses libvips would hang. Never so in contract mode (the
    parent only downloads, uploads and calls back); so in a process that also converts
    in-process, such as the tests."""
    encode = sys.modules.get("worker.encode")
    return bool(encode is not None and getattr(encode, "_pyvips", None))


def _start_child(fn: Callable, args: tuple, read_end: int, write_end: int) -> int:
    """Fork (cheap, the usual way), or, when libvips runs here, a fresh interpreter that
    gets (fn, args) pickled on stdin and writes its result to the same pipe."""
    if not _libvips_running():
        pid = os.fork()
        if pid == 0:  # child
            os.close(read_end)
            _child(fn, args, write_end)
        return pid
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    process = subprocess.Popen(
        [sys.executable, "-c", "import worker.isolation as i; i.exec_child()", str(write_end)],
        stdin=subprocess.PIPE, pass_fds=(write_end,), env=env,
    )  # fmt: skip
    process.stdin.write(pickle.dumps((fn, args)))
    process.stdin.close()
    process.returncode = 0  # reaped by run_isolated's waitpid, not by Popen
    return process.pid


def exec_child() -> None:
    """The fresh interpreter's side of `_start_child`."""
    fn, args = pickle.load(sys.stdin.buffer)
    _child(fn, args, int(sys.argv[1]))


def _child(fn, args, write_end: int) -> None:
    code = 0
    try:
        captured = _capture_stderr()
        try:
            result = ("ok", fn(*args))
        except ConversionError as exc:
            result = ("error", _with_detail(exc, _read_captured(captured)))
        except WorkerError as exc:
            result = ("error", exc)
        except MemoryError:
            result = ("error", NotEnoughMemoryError("not enough memory to convert the image"))
        except BaseException as exc:  # a bug of ours, not the file's: say what it was
            result = ("error", ConversionError(f"internal error: {type(exc).__name__}: {exc}"))
        try:
            data = pickle.dumps(result)
        except Exception as exc:
            data = pickle.dumps(("error", ConversionError(f"internal error: {exc}")))
        view = memoryview(data)
        while view:
            written = os.write(write_end, view)
            view = view[written:]
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        code = 70
    finally:
        os._exit(code)


def _capture_stderr():
    """Decoders (libtiff, tifffile, Pillow's warnings) talk on stderr; keep their words
    for the error message instead of letting them spill into the output."""
    import tempfile
    import warnings

    warnings.simplefilter("ignore")
    try:
        capture = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the child)
        os.dup2(capture.fileno(), 2)
        return capture
    except OSError:
        return None


def _read_captured(capture) -> list[str]:
    if capture is None:
        return []
    try:
        capture.seek(0)
        text = capture.read(64 * 1024).decode("utf-8", "replace")
    except OSError:
        return []
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith(("warnings.warn", "File "))]


def _with_detail(exc: ConversionError, lines: list[str]) -> ConversionError:
    """Add the decoder's own first complaint to a vague message."""
    if not lines:
        return exc
    detail = lines[0]
    detail = detail.split(">", 1)[1].strip() if detail.startswith("<tifffile.") else detail
    message = str(exc)
    if detail in message:
        return exc
    new = type(exc)(f"{message} ({detail[:200]})")
    return new


def _collect(read_end: int, pid: int, timeout_s: float, cancel: threading.Event | None) -> bytes:
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    poll_s = 1.0 if cancel is None else 0.1  # how soon a cancel takes effect
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _kill(pid)
            raise ConversionTimeoutError(
                f"conversion timed out after {timeout_s:g} s (WORKER_CONVERT_TIMEOUT_S)"
            )
        if cancel is not None and cancel.is_set():
            _kill(pid)
            raise Cancelled("conversion process killed: the work was called off")
        ready, _, _ = select.select([read_end], [], [], min(remaining, poll_s))
        if not ready:
            continue
        chunk = os.read(read_end, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _death(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        hint = " (out of memory?)" if sig == signal.SIGKILL else ""
        return f"conversion process was killed by {name}{hint}"
    return f"conversion process exited with code {os.WEXITSTATUS(status)} without a result"
