"""The supervisor of the local stack (`arke-preprocess local up`, the demo, the e2e tests).

Starts, on loopback: moto in server mode (DynamoDB, SQS, S3 standing in for R2, SSM),
the resources (`infra`), the Fly Machines emulator, the ingest receiver (unless
WORKER_URL replaces it), the API (`chalice local --stage local-stack`, through `api_server`) and the event pump.
Each runs in its own process group; stopping the stack (Ctrl-C, SIGTERM, `stop()`)
signals every group it started, then kills what is left, so nothing outlives it.

It passes the orchestrator the environment of docs/interfaces.md and never touches a
process it did not start.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from arke_local.endpoints import (
    HOST,
    LOCAL_STAGE,
    STACK_CHALICE_STAGE,
    Endpoints,
    Ports,
    orchestrator_env,
    port_is_free,
    runtime_dir,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Machines the stack's Fly emulator lets exist at once: a full pool (~230 machines for a
# 10,000-task batch, issue 10) plus the machines still being destroyed.
STACK_MAX_MACHINES = 300


def log(message: str) -> None:
    print(f"[Stack] {message}", flush=True)


class StackError(RuntimeError):
    """A component did not start, or died; carries the tail of its log when there is one."""


@dataclass
class Component:
    name: str
    argv: list[str]
    ready_url: str | None = None  # any HTTP answer from it means ready
    quiet: bool = False  # in the foreground, send its output to a log file anyway


@dataclass
class Running:
    component: Component
    process: subprocess.Popen
    log_path: Path | None
    log_file: object | None = None

    @property
    def pgid(self) -> int:
        return self.process.pid  # start_new_session: the leader's pid is the group id


@dataclass
class StackOptions:
    ports: Ports = field(default_factory=Ports.from_env)
    host: str = HOST
    worker_url: str | None = None  # replaces the ingest receiver when set
    extra_env: dict[str, str] = field(default_factory=dict)  # orchestrator/emulator knobs
    log_dir: Path | None = None  # None: components write to this terminal
    project_dir: Path = REPO_ROOT
    ready_timeout_s: float = 60.0
    pump: bool = True
    api: bool = True
    emulator: bool = True


class ProcessSupervisor:
    """Starts commands as process-group leaders and stops the whole groups."""

    def __init__(self, log_dir: Path | None = None, quiet_dir: Path | None = None):
        self.log_dir = log_dir
        # Logs of quiet components when there is no log_dir: never inside the project tree.
        self.quiet_dir = quiet_dir or runtime_dir() / "logs"
        self.running: list[Running] = []

    def start(self, component: Component, env: dict[str, str], cwd: Path, append: bool = False) -> Running:
        log_path = None
        out = None
        if self.log_dir is not None or component.quiet:
            base = self.log_dir or self.quiet_dir
            base.mkdir(parents=True, exist_ok=True)
            log_path = base / f"{component.name}.log"
            out = open(log_path, "ab" if append else "wb")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(
            component.argv,
            cwd=str(cwd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
        running = Running(component, process, log_path, out)
        self.running.append(running)
        where = f", log {log_path}" if log_path else ""
        log(f"{component.name} started (pid {process.pid}{where})")
        return running

    def wait_ready(self, running: Running, timeout_s: float) -> None:
        url = running.component.ready_url
        if not url:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = running.process.poll()
            if code is not None:
                raise StackError(
                    f"{running.component.name} exited with {code} before it was ready"
                    + self.tail(running)
                )
            try:
                requests.get(url, timeout=1.0)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise StackError(f"{running.component.name} not ready after {timeout_s:.0f} s" + self.tail(running))

    def tail(self, running: Running, lines: int = 30) -> str:
        if running.log_path is None or not running.log_path.exists():
            return ""
        text = running.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- last lines of " + str(running.log_path) + " ---\n" + "\n".join(text)

    def find(self, name: str) -> Running:
        for running in self.running:
            if running.component.name == name:
                return running
        raise KeyError(f"no running component named {name!r}")

    def kill(self, name: str, sig: int = signal.SIGKILL, wait_s: float = 5.0) -> int | None:
        """Signal the whole group of component `name` (SIGKILL by default: no clean-up runs),
        wait for its leader, forget it. Returns the leader's exit code (None if it outlived
        `wait_s`, then the group is SIGKILLed)."""
        running = self.find(name)
        _signal_group(running.pgid, sig)
        try:
            running.process.wait(wait_s)
        except subprocess.TimeoutExpired:
            _signal_group(running.pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.process.wait(2.0)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and _group_alive(running.pgid):
            time.sleep(0.02)
        _signal_group(running.pgid, signal.SIGKILL)  # stragglers of the group
        if running.log_file:
            running.log_file.close()
        self.running.remove(running)
        log(f"{name} killed with signal {sig} ({running.process.returncode})")
        return running.process.returncode

    def exited(self) -> list[Running]:
        return [r for r in self.running if r.process.poll() is not None]

    def stop_all(self, grace_s: float = 5.0) -> None:
        """Newest first (the pump before the API, moto last): SIGTERM the group, wait up to
        `grace_s` for all of it to go, SIGKILL what is left."""
        for running in reversed(self.running):
            _signal_group(running.pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.process.wait(max(0.05, deadline - time.monotonic()))
            while time.monotonic() < deadline and _group_alive(running.pgid):
                time.sleep(0.05)
            if _group_alive(running.pgid):
                log(f"{running.component.name}: group {running.pgid} still alive, killing")
                _signal_group(running.pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.process.wait(2.0)
            if running.log_file:
                running.log_file.close()
            log(f"{running.component.name} stopped ({running.process.returncode})")
        self.running.clear()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader keeps the group "alive" until reaped; it is harmless.
    return _group_has_live_member(pgid)


def _group_has_live_member(pgid: int) -> bool:
    proc = Path("/proc")
    if not proc.exists():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces, so split after ")".
        rest = stat.rsplit(")", 1)[-1].split()
        if len(rest) >= 3 and int(rest[2]) == pgid and rest[0] != "Z":
            return True
    return False


class LocalStack:
    """The whole local stack. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, options: StackOptions | None = None):
        self.options = options or StackOptions()
        worker_url = self.options.worker_url
        self.endpoints = Endpoints(self.options.ports, self.options.host, worker_url)
        self.supervisor = ProcessSupervisor(self.options.log_dir)
        self.started = False
        self._env: dict[str, str] | None = None

    # --- environment ---------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """What every component gets: this process's environment, the local stack's
        names over it, the caller's knobs over those."""
        env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")}
        env.update(orchestrator_env(self.endpoints, LOCAL_STAGE))
        env.setdefault("FLY_APP_NAME", "arke-tiff-worker")
        env["FLY_EMULATOR_HOST"] = self.options.host
        env["FLY_EMULATOR_PORT"] = str(self.options.ports.fly)
        env["FLY_EMULATOR_TOKEN"] = env["FLY_API_TOKEN"]
        env.setdefault("FLY_EMULATOR_MAX_MACHINES", str(STACK_MAX_MACHINES))
        env["ARKE_INGEST_PORT"] = str(self.options.ports.ingest)
        env["PYTHONUNBUFFERED"] = "1"
        pythonpath = [str(self.options.project_dir)]
        if env.get("PYTHONPATH"):
            pythonpath.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
        env.update(self.options.extra_env)
        return env

    def components(self) -> tuple[list[Component], list[Component]]:
        """(before infra, after infra)."""
        py = sys.executable
        e = self.endpoints
        before = [
            Component(
                "moto",
                [py, "-m", "arke_local.moto_server", "-H", self.options.host, "-p", str(self.options.ports.moto)],
                ready_url=f"{e.aws}/moto-api/",
                quiet=True,
            )
        ]
        after: list[Component] = []
        if not self.options.worker_url:
            after.append(
                Component(
                    "ingest",
                    [py, "-m", "arke_local.ingest_receiver", "--host", self.options.host,
                     "--port", str(self.options.ports.ingest)],
                    ready_url=f"{e.ingest}/health",
                )
            )
        if self.options.emulator:
            after.append(
                Component("fly", [py, "-m", "arke_local.fly_emulator"], ready_url=f"{e.fly}/_emulator/stats")
            )
        if self.options.api:
            after.append(
                Component(
                    "api",  # chalice local with a pool-sized listen backlog (api_server.py)
                    [py, "-m", "arke_local.api_server", "--project-dir", str(self.options.project_dir), "local",
                     "--stage", STACK_CHALICE_STAGE, "--host", self.options.host,
                     "--port", str(self.options.ports.api), "--no-autoreload"],
                    ready_url=f"{e.api}/health",
                )
            )
        if self.options.pump:
            after.append(Component("pump", [py, "-m", "arke_local.pump"]))
        return before, after

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> LocalStack:
        started_at = time.monotonic()
        env = self._env = self.env()
        before, after = self.components()
        self.print_ports()
        self.check_ports_free()
        try:
            for c in before:
                self.supervisor.wait_ready(
                    self.supervisor.start(c, env, self.options.project_dir), self.options.ready_timeout_s
                )
            self.run_infra(env)
            launched = [self.supervisor.start(c, env, self.options.project_dir) for c in after]
            for r in launched:
                self.supervisor.wait_ready(r, self.options.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.started = True
        atexit.register(self.stop)  # an interpreter exit without stop() leaves nothing behind
        log(f"up in {time.monotonic() - started_at:.1f} s")
        return self

    def run_infra(self, env: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "arke_local.cli", "infra", "--stage", LOCAL_STAGE,
               "--endpoint-url", self.endpoints.aws]
        done = subprocess.run(
            cmd, cwd=str(self.options.project_dir), env=env, capture_output=True, text=True, timeout=120
        )
        for line in (done.stdout + done.stderr).splitlines():
            print(line, flush=True)
        if done.returncode != 0:
            raise StackError(f"infra failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def check_ports_free(self) -> None:
        p = self.options.ports
        wanted = {"moto": p.moto, "fly": p.fly if self.options.emulator else None,
                  "api": p.api if self.options.api else None,
                  "ingest": None if self.options.worker_url else p.ingest}
        busy = [f"{name} {port}" for name, port in wanted.items()
                if port is not None and not port_is_free(port, self.options.host)]
        if busy:
            raise StackError(
                f"port(s) in use: {', '.join(busy)} (another stack running? "
                "override with ARKE_MOTO_PORT, ARKE_FLY_PORT, ARKE_API_PORT, ARKE_INGEST_PORT)"
            )

    def print_ports(self) -> None:
        e = self.endpoints
        p = self.options.ports
        log(f"moto (DynamoDB, SQS, S3/R2, SSM) {e.aws}  [ARKE_MOTO_PORT={p.moto}]")
        log(f"Fly Machines emulator          {e.fly}  [ARKE_FLY_PORT={p.fly}]")
        log(f"API (chalice local)            {e.api}  [ARKE_API_PORT={p.api}]")
        if self.options.worker_url:
            log(f"ingest (WORKER_URL)            {self.options.worker_url}  [receiver not started]")
        else:
            log(f"ingest receiver (WORKER_URL)   {e.ingest}  [ARKE_INGEST_PORT={p.ingest}]")

    def kill_component(self, name: str, sig: int = signal.SIGKILL) -> int | None:
        """Kill one component's process group (e.g. the pump, mid-pass, as a Lambda timeout or
        a crash would); the rest of the stack runs on. Its exit code, as `kill` reports it."""
        return self.supervisor.kill(name, sig)

    def start_component(self, name: str) -> Running:
        """Start component `name` again, with the stack's environment; its log is appended."""
        if any(r.component.name == name for r in self.supervisor.running):
            raise StackError(f"{name} is already running")
        component = next((c for c in sum(self.components(), []) if c.name == name), None)
        if component is None:
            raise KeyError(f"the stack has no component named {name!r}")
        env = self._env if self._env is not None else self.env()
        running = self.supervisor.start(component, env, self.options.project_dir, append=True)
        self.supervisor.wait_ready(running, self.options.ready_timeout_s)
        return running

    def restart_component(self, name: str, sig: int = signal.SIGKILL) -> Running:
        """`kill_component` then `start_component`."""
        self.kill_component(name, sig)
        return self.start_component(name)

    def stop(self) -> None:
        if self.supervisor.running:
            log("stopping")
            self.supervisor.stop_all()
        self.started = False

    def check_alive(self) -> None:
        dead = self.supervisor.exited()
        if dead:
            r = dead[0]
            raise StackError(
                f"{r.component.name} exited with {r.process.returncode}" + self.supervisor.tail(r)
            )

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_foreground(options: StackOptions | None = None) -> int:
    """`local up`: start, print where everything is, wait for Ctrl-C or SIGTERM."""
    stack = LocalStack(options)

    def on_term(signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    # Also when started with SIGINT ignored (a background job of a non-interactive shell).
    previous_int = signal.signal(signal.SIGINT, on_term)
    code = 0
    try:
        stack.start()
        log("ready; Ctrl-C stops every process of the stack")
        log(f"try: arke-preprocess samples out/samples && arke-preprocess submit out/samples; "
            f"curl {stack.endpoints.api}/health")
        while True:
            time.sleep(0.5)
            stack.check_alive()
    except KeyboardInterrupt:
        log("interrupted")
    except StackError as exc:
        log(f"error: {exc}")
        code = 1
    finally:
        stack.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    return code
