"""Owns every machine: creates it (started, or stopped with skip_launch), runs its process
(or keeps it idle), enforces its memory limit, starts it again once stopped, and moves it
through its states. All transitions go through `Supervisor._move`, which also tells the
accounting (machine-seconds started and stopped).

Never speaks HTTP and never rolls fault dice; it is told what to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from . import pool_proxy, process, synthetic, synthetic_pool
from .accounting import Accounting
from .errors import ApiError, not_found, precondition_failed, unprocessable
from .faults import FaultInjector
from .machines import (
    ACTIVE,
    Machine,
    MachineState,
    can_move,
    new_instance_id,
    new_machine_id,
    new_machine_name,
    now_iso,
)
from .settings import EmulatorSettings, ImageCommand
from .stats import Stats
from .validation import CreateRequest

log = logging.getLogger("arke_local.fly_emulator")
P = "[FlyEmulator]"
S = MachineState
MiB = 1024 * 1024
SHUTDOWN_GRACE_S = 2.0


class Supervisor:
    def __init__(
        self,
        settings: EmulatorSettings,
        stats: Stats,
        faults: FaultInjector,
        callback_base: Callable[[], str],
        accounting: Accounting | None = None,
    ):
        self._settings = settings
        self._stats = stats
        self._faults = faults
        self._callback_base = callback_base  # the emulator's own URL, known once bound
        self.accounting = accounting or Accounting()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._machines: dict[str, Machine] = {}  # every machine, destroyed ones included
        self._names: dict[str, set[str]] = {}  # app -> names of its machines not destroyed
        self._alive: set[str] = set()  # ids of machines not destroyed
        self._closing = threading.Event()

    # ---- reads -------------------------------------------------------------------------

    def _get(self, app: str, machine_id: str) -> Machine:
        m = self._machines.get(machine_id)
        if m is None or m.app != app:
            raise not_found("machine not found")
        return m

    def find(self, machine_id: str) -> Machine | None:
        with self._lock:
            return self._machines.get(machine_id)

    def show(self, app: str, machine_id: str) -> dict:
        with self._lock:
            return self._get(app, machine_id).to_api()

    def list_machines(self, app: str, include_deleted: bool = False, region: str | None = None) -> list[dict]:
        with self._lock:
            return [
                m.to_api()
                for m in self._machines.values()
                if m.app == app
                and (include_deleted or m.state is not S.DESTROYED)
                and (not region or m.region == region)
            ]

    def count_active(self) -> int:
        with self._lock:
            return len(self._alive)

    def count_stopped(self) -> int:
        with self._lock:
            return sum(1 for i in self._alive if self._machines[i].state is S.STOPPED)

    @property
    def lock(self) -> threading.RLock:
        """The lock every machine change happens under (for standing.StandingOps)."""
        return self._lock

    def machine(self, app: str, machine_id: str) -> Machine:
        """The machine (404 if unknown in `app`); the caller holds `lock`."""
        return self._get(app, machine_id)

    # ---- create ------------------------------------------------------------------------

    def _command_for(self, image: str) -> ImageCommand:
        command = self._settings.images.get(image)
        if command is not None:
            return command
        if self._settings.idle_unmapped:
            return ImageCommand()
        raise unprocessable(
            f"failed to get image {image!r}: manifest unknown (no command mapped for this "
            "image in the Fly emulator)"
        )

    def _machine_env(self, machine_id: str, app: str, region: str, req: CreateRequest,
                     memory_mb: int, command: ImageCommand) -> tuple[dict[str, str], str | None, str | None]:
        """The process's env, the original CALLBACK_URL and the original ORCHESTRATOR_URL of a
        pool process (both proxied; a synthetic pool machine applies faults itself)."""
        env = {n: os.environ[n] for n in self._settings.pass_env if n in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update({
            "FLY_MACHINE_ID": machine_id,
            "FLY_APP_NAME": app,
            "FLY_REGION": region,
            "FLY_IMAGE_REF": req.image,
            "FLY_VM_MEMORY_MB": str(memory_mb),
        })
        env.update(req.env)
        original = req.env.get("CALLBACK_URL")
        if original and self._settings.proxy_callbacks:
            query = urlsplit(original).query
            proxied = f"{self._callback_base()}/_emulator/callback/{machine_id}"
            env["CALLBACK_URL"] = f"{proxied}?{query}" if query else proxied
        orchestrator = None
        if (synthetic_pool.is_pool(req.env) and req.env.get("ORCHESTRATOR_URL")
                and self._settings.proxy_callbacks and not command.synthetic):
            orchestrator = req.env["ORCHESTRATOR_URL"].rstrip("/")
            env["ORCHESTRATOR_URL"] = pool_proxy.proxied_base(self._callback_base(), machine_id)
        return env, original, orchestrator

    def create(self, app: str, req: CreateRequest) -> dict:
        command = self._command_for(req.image)
        region = req.region or self._settings.default_region
        memory_mb = req.memory_mb or self._settings.default_memory_mb
        with self._lock:
            if self._closing.is_set():
                raise ApiError(503, "the emulator is shutting down")
            if len(self._alive) >= self._settings.max_machines:
                self._stats.incr("cap_rejections")
                log.info("%s create refused: machine limit %d reached", P, self._settings.max_machines)
                raise unprocessable(
                    f"failed to launch VM: machine limit reached ({self._settings.max_machines} "
                    "machines exist; destroy some first)"
                )
            names = self._names.setdefault(app, set())
            name = req.name
            if name in names:
                raise ApiError(
                    409, f"unable to create machine: a machine named {name!r} already exists "
                    f"in app {app!r}"
                )
            while name is None or name in names:
                name = new_machine_name()
            machine_id = new_machine_id()
            while machine_id in self._machines:
                machine_id = new_machine_id()
            env, original_callback, orchestrator = self._machine_env(
                machine_id, app, region, req, memory_mb, command)
            m = Machine(
                id=machine_id, name=name, app=app, region=region, config=req.config,
                command=command, env=env, memory_mb=memory_mb, auto_destroy=req.auto_destroy,
                stop_signal=req.stop_signal, stop_timeout=req.stop_timeout,
                callback_url=original_callback, orchestrator_url=orchestrator,
            )
            m.record(S.CREATED, "user")
            if req.skip_launch:  # no process: stopped until POST start
                m.record(S.STOPPED, "user", {"skip_launch": True}, event_type="launch")
                self._stats.incr("machines_created_stopped")
            self.accounting.moved(m.id, m.state)
            self._machines[machine_id] = m
            self._alive.add(machine_id)
            names.add(name)
            log.info(
                "%s machine %s (%s) created in app %s: image %s, %s, memory %d MB, "
                "auto_destroy %s, env keys %s",
                P, m.id, m.name, app, req.image,
                "idle" if command.idle else "synthetic" if command.synthetic
                else "command " + " ".join(command.argv),
                memory_mb, m.auto_destroy, ",".join(sorted(req.env)) or "-",
            )
            if not req.skip_launch:
                self._spawn_runner(m, self._run)
            return m.to_api()

    def _spawn_runner(self, m: Machine, target: Callable[[Machine], None]) -> None:
        m.runner = threading.Thread(target=target, args=(m,), name=f"machine-{m.id}", daemon=True)
        m.runner.start()

    # ---- the one place states change --------------------------------------------------

    def _move(self, m: Machine, target: MachineState, source: str, request: dict | None = None,
              note: str = "") -> bool:
        """Move `m` to `target` if that is a legal step; caller holds the lock."""
        if not can_move(m.state, target):
            return False
        old = m.state
        m.record(target, source, request)
        self.accounting.moved(m.id, target)
        log.info("%s machine %s (%s) %s -> %s%s", P, m.id, m.name, old.value, target.value,
                 f" ({note})" if note else "")
        if target is S.DESTROYED:
            self._alive.discard(m.id)
            self._names[m.app].discard(m.name)
            self._stats.incr("machines_destroyed")
        self._changed.notify_all()
        return True

    def _leaving(self, m: Machine) -> bool:
        return m.stop_requested or m.destroy_requested or self._closing.is_set()

    # ---- the machine's life (one thread per machine) ----------------------------------

    def _run(self, m: Machine) -> None:
        delay = self._faults.boot_delay_s
        if delay:
            log.info("%s fault: boot delay %.1fs for machine %s (%s)", P, delay, m.id, m.name)
            m.wake.wait(delay)
        with self._lock:
            if self._leaving(m):
                self._exited(m, None)
                return
            self._move(m, S.STARTING, "flyd")
        self._launch(m)

    def _launch(self, m: Machine) -> None:
        """Run the machine, now `starting`, until its process (or job) ends."""
        if m.command.idle:
            with self._lock:
                self._move(m, S.STARTED, "flyd", note="idle, no process")
            self._stats.incr("machines_started")
            m.wake.wait()
            with self._lock:
                self._exited(m, 0)
            return
        if m.command.synthetic:
            self._run_synthetic(m)
            return
        try:
            proc = process.spawn(m.command.argv, m.command.cwd, m.env)
        except OSError as exc:
            log.warning("%s machine %s (%s) failed to start: %s", P, m.id, m.name, exc)
            with self._lock:
                self._exited(m, 127)
            return
        with self._lock:
            m.process = proc
            if self._leaving(m):
                process.signal_group(proc.pid, signal.SIGKILL)
            else:
                self._move(m, S.STARTED, "flyd", note=f"pid {proc.pid}")
                self._stats.incr("machines_started")
        returncode = self._watch(m, proc)
        process.signal_group(proc.pid, signal.SIGKILL)  # whatever the main process left behind
        with self._lock:
            self._exited(m, process.exit_code(returncode))

    def _run_synthetic(self, m: Machine) -> None:
        """The emulator plays the worker (contract mode, or the pool loop with WORKER_MODE=pool)
        in a second thread; this one waits for it to end, or for the machine to be stopped,
        destroyed or crashed (then `m.halt` is set and whatever the job has not sent yet is
        never sent). A hung machine's job ends without waking this thread: it stays started."""
        result: list[int] = []
        wake, halt = m.wake, m.halt  # this run's: a late end of this job must not wake the next

        def job() -> None:
            try:
                if synthetic_pool.is_pool(m.env):
                    result.append(synthetic_pool.PoolRun(m.env, self._pool_hooks(m)).run())
                else:
                    result.append(synthetic.run_job(m.env, halt, self._settings.synthetic_work_s,
                                                    m.id, self._stats.incr))
            except synthetic.JobCancelled:
                pass
            except Exception:  # noqa: BLE001 - a bug in the job is a crashed machine, not ours
                log.exception("%s synthetic machine %s (%s) failed", P, m.id, m.name)
                result.append(1)
            finally:
                if not m.hung:
                    wake.set()

        with self._lock:
            if self._leaving(m):
                self._exited(m, None)
                return
            self._move(m, S.STARTED, "flyd", note="synthetic worker")
        self._stats.incr("machines_started")
        threading.Thread(target=job, name=f"synthetic-{m.id}", daemon=True).start()
        m.wake.wait()
        with self._lock:
            m.halt.set()
            if result and not m.crash_injected:
                code = result[0]
            elif m.crash_injected:
                code = 137  # SIGKILLed, as the crash fault does to a process
            else:
                code = 0  # stopped or destroyed on request
            self._exited(m, code)

    def _pool_hooks(self, m: Machine) -> synthetic_pool.PoolHooks:
        return synthetic_pool.PoolHooks(
            name=m.id, halt=m.halt, duration=self._settings.synthetic_task_s, faults=self._faults,
            incr=self._stats.incr, injected=lambda kind: self._stats.injected(kind, m.id, m.name),
            strike=lambda kind: self.strike(m, kind), pause=self._closing.wait,
        )

    def _watch(self, m: Machine, proc: subprocess.Popen) -> int:
        """Wait for the process. When the tree's RSS exceeds memory_mb, do what the kernel's
        OOM killer does in a VM of that size: SIGKILL the biggest process. If that is the
        main process, the machine dies with it (137, oom_killed); a child only dies alone."""
        limit = m.memory_mb * MiB
        while True:
            try:
                return proc.wait(timeout=self._settings.memory_poll_s)
            except subprocess.TimeoutExpired:
                pass
            sizes = process.tree_rss(proc.pid)
            total = sum(sizes.values())
            if total <= limit:
                continue
            victim = max(sizes, key=sizes.__getitem__)
            self._stats.incr("oom_kills")
            log.info("%s machine %s (%s) out of memory: RSS %d MB > %d MB, killed %s pid %d",
                     P, m.id, m.name, total // MiB, m.memory_mb,
                     "main process" if victim == proc.pid else "child", victim)
            if victim == proc.pid:
                m.oom_killed = True
                process.signal_group(proc.pid, signal.SIGKILL)
                return proc.wait()
            process.kill(victim)

    def _exited(self, m: Machine, code: int | None) -> None:
        """The machine's process is gone (or never ran): stopped, then destroyed if asked."""
        requested = self._leaving(m)
        if code is not None:
            m.exit_code = code
            self._stats.incr("machines_exited")
            if code != 0 and not requested:
                self._stats.incr("machines_exited_nonzero")
        exit_event = {
            "exit_code": code if code is not None else 0,
            "oom_killed": m.oom_killed,
            "requested_stop": requested,
            "restarting": False,  # restart policy "no": never restarted
            "exited_at": now_iso(),
        }
        if m.crash_injected or m.hung:
            exit_event["fault"] = m.fault or "crash_before_callback"
        self._move(m, S.STOPPED, "flyd", {"exit_event": exit_event, "restart_count": 0},
                   note=f"exit code {exit_event['exit_code']}" + (", OOM" if m.oom_killed else ""))
        if m.auto_destroy or m.destroy_requested:
            self._move(m, S.DESTROYING, "flyd" if not m.destroy_requested else "user")
            self._move(m, S.DESTROYED, "flyd" if not m.destroy_requested else "user")

    # ---- requests -----------------------------------------------------------------------

    def stop(self, app: str, machine_id: str, signal_name: str | None, timeout: str | None) -> None:
        with self._lock:
            m = self._get(app, machine_id)
            try:
                sig = process.parse_signal(signal_name or m.stop_signal)
                grace = process.parse_duration(timeout or m.stop_timeout,
                                               self._settings.stop_timeout_s)
            except (ValueError, KeyError) as exc:
                raise ApiError(400, f"invalid stop request: {exc}") from None
            if m.state in (S.DESTROYING, S.DESTROYED):
                raise precondition_failed(f"machine {m.id} is {m.state.value}")
            if m.state in (S.STOPPING, S.STOPPED):
                return
            m.stop_requested = True
            self._move(m, S.STOPPING, "user", {"signal": signal.Signals(sig).name})
            self._stats.incr("machines_stopped_by_request")
            proc = m.process
            m.wake.set()
        if proc is not None and proc.poll() is None:
            process.signal_group(proc.pid, sig)
            timer = threading.Timer(grace, self._kill_if_alive, args=(proc,))
            timer.daemon = True
            timer.start()

    def begin_start(self, m: Machine, delay_s: float, request: dict) -> None:
        """A stopped machine starts: `starting` now, its run (as a fresh boot) after `delay_s`.
        The caller holds `lock` and has checked the machine is stopped."""
        m.new_run()
        self._move(m, S.STARTING, "user", request)
        self._spawn_runner(m, lambda machine: self._start_after(machine, delay_s))

    def _start_after(self, m: Machine, delay_s: float) -> None:
        if delay_s:
            m.wake.wait(delay_s)  # a stop or delete meanwhile cuts it short
        with self._lock:
            if self._leaving(m):
                self._exited(m, None)
                return
        self._launch(m)

    def reconfigure(self, m: Machine, req: CreateRequest) -> None:
        """Give a stopped machine a new config (image, env, guest, ...) for its next start.
        The caller holds `lock`; an unknown image is a 422 and changes nothing."""
        command = self._command_for(req.image)
        memory_mb = req.memory_mb or self._settings.default_memory_mb
        env, original_callback, orchestrator = self._machine_env(
            m.id, m.app, m.region, req, memory_mb, command)
        m.config, m.command, m.env, m.memory_mb = req.config, command, env, memory_mb
        m.auto_destroy, m.stop_signal, m.stop_timeout = req.auto_destroy, req.stop_signal, req.stop_timeout
        m.callback_url, m.orchestrator_url = original_callback, orchestrator
        m.instance_id = new_instance_id()  # Fly's instance_id is the machine's version
        m.record(S.STOPPED, "user", {"image": req.image}, event_type="update")
        self._changed.notify_all()
        log.info("%s machine %s (%s) updated: image %s, memory %d MB", P, m.id, m.name,
                 req.image, memory_mb)

    @staticmethod
    def _kill_if_alive(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            process.signal_group(proc.pid, signal.SIGKILL)

    def delete(self, app: str, machine_id: str, force: bool) -> None:
        with self._lock:
            m = self._get(app, machine_id)
            if m.state in (S.DESTROYING, S.DESTROYED):
                raise not_found("machine not found")
            if m.state in ACTIVE and not force:
                raise precondition_failed("machine still active, refusing to delete")
            m.destroy_requested = True
            m.wake.set()
            if m.state is S.STOPPED:
                self._move(m, S.DESTROYING, "user")
                self._move(m, S.DESTROYED, "user")
                return
            proc = m.process
        if proc is not None and proc.poll() is None:
            process.signal_group(proc.pid, signal.SIGKILL)
        with self._lock:
            self._changed.wait_for(lambda: m.state is S.DESTROYED, timeout=10)

    def wait(self, app: str, machine_id: str, target: MachineState, timeout_s: float) -> bool:
        """True once the machine is in `target` (destroyed counts as stopped); False on timeout.
        A machine that can no longer reach `target` is a 412."""
        with self._lock:
            m = self._get(app, machine_id)

            def reached() -> bool:
                return m.state is target or (
                    target is S.STOPPED and m.state in (S.DESTROYING, S.DESTROYED)
                )

            def hopeless() -> bool:
                return target is S.STARTED and m.state in (S.STOPPED, S.DESTROYING, S.DESTROYED)

            self._changed.wait_for(
                lambda: reached() or hopeless() or self._closing.is_set(), timeout=timeout_s
            )
            if reached():
                return True
            if hopeless():
                raise precondition_failed(
                    f"machine {m.id} is {m.state.value} and will not reach {target.value}"
                )
            return False

    def crash(self, m: Machine, kind: str = "crash_before_callback") -> None:
        """Kill the machine's process as if it crashed (the crash faults)."""
        with self._lock:
            m.crash_injected = True
            m.fault = kind
            m.pending_task_fault = None
            proc = m.process
        log.info("%s fault: %s, killing machine %s (%s)", P, kind.replace("_", " "), m.id, m.name)
        if proc is not None:
            process.signal_group(proc.pid, signal.SIGKILL)
        elif m.command.synthetic:
            m.wake.set()

    def hang(self, m: Machine) -> None:
        """Freeze the machine (the hang fault): its process group is SIGSTOPped, a synthetic
        machine's job stops; it stays started, sends nothing, until stopped or deleted."""
        with self._lock:
            if m.state is not S.STARTED or m.hung:
                return
            m.hung = True
            m.fault = "hang"
            m.pending_task_fault = None
            proc = m.process
            m.halt.set()
        log.info("%s fault: hang, machine %s (%s) frozen", P, m.id, m.name)
        if proc is not None:
            process.signal_group(proc.pid, signal.SIGSTOP)

    def strike(self, m: Machine, kind: str) -> None:
        """Inflict one pool fault now, counted and noted: "crash_mid_task", "hang" or
        "crash_before_callback"."""
        counter = {"crash_mid_task": "crashes_mid_task", "hang": "hangs"}.get(kind)
        if counter:
            self._stats.incr(counter)
        self._stats.injected(kind, m.id, m.name)
        if kind == "hang":
            self.hang(m)
        else:
            self.crash(m, kind)

    def schedule_task_fault(self, m: Machine, kind: str, task_id: str, attempt: int,
                            after_s: float) -> None:
        """A pool process got a task that is to crash ("crash") or hang it: strike after
        `after_s`, or at its callback for that task if that comes first (`take_task_fault`)."""
        key = ("crash_mid_task" if kind == "crash" else kind, task_id, attempt)
        with self._lock:
            m.pending_task_fault = key
        timer = threading.Timer(after_s, self._strike_if_pending, args=(m, key))
        timer.daemon = True
        timer.start()

    def _strike_if_pending(self, m: Machine, key: tuple[str, str, int]) -> None:
        with self._lock:
            if m.pending_task_fault != key or m.state is not S.STARTED:
                return
            m.pending_task_fault = None
        self.strike(m, key[0])

    def take_task_fault(self, m: Machine) -> str | None:
        """The pool fault waiting to strike this machine, now due (its callback came first)."""
        with self._lock:
            key, m.pending_task_fault = m.pending_task_fault, None
        return key[0] if key else None

    # ---- shutdown -----------------------------------------------------------------------

    def shutdown(self) -> None:
        """Kill every machine process (SIGTERM, then SIGKILL after a short grace)."""
        self._closing.set()
        with self._lock:
            machines = list(self._machines.values())
            for m in machines:
                m.wake.set()
            self._changed.notify_all()
        procs = [m.process for m in machines if m.process is not None and m.process.poll() is None]
        for proc in procs:
            process.signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            process.signal_group(proc.pid, signal.SIGKILL)
        for m in machines:
            if m.runner is not None:
                m.runner.join(timeout=5)
        if procs:
            log.info("%s shutdown: %d machine process(es) killed", P, len(procs))
