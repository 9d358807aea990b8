"""The emulator's HTTP face and its public handle, `FlyEmulator`.

Routes: Fly's Machines API under `/v1/apps/{app}/machines` (create, list, get, update, wait,
start, stop, delete; each behind its rate limit), the admin routes `/_emulator/faults` and
`/_emulator/stats`, the callback proxy `/_emulator/callback/{machine_id}` and the
orchestrator proxy of pool processes
`/_emulator/orchestrator/{machine_id}/...`. Binds loopback by default; never reaches past
the callback and orchestrator URLs its machines were given.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NoReturn
from urllib.parse import parse_qs, urlsplit, urlunsplit

from . import callbacks, pool_proxy
from .accounting import Accounting
from .errors import ApiError, bad_request, not_found, rate_limited
from .faults import CreateFault, FaultInjector
from .machines import Machine, MachineState
from .ratelimit import RateLimiter
from .settings import EmulatorSettings
from .standing import StandingOps
from .stats import Stats
from .supervisor import Supervisor
from .validation import parse_create, parse_flag

log = logging.getLogger("arke_local.fly_emulator")
P = "[FlyEmulator]"
WAIT_STATES = ("started", "stopped", "destroyed")
MAX_WAIT_S = 60
UNAUTHENTICATED = "You must be authenticated to view this."

_APP = r"/v1/apps/(?P<app>[^/]+)/machines"
_ID = r"(?P<machine_id>[^/]+)"
ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (re.compile(rf"^{_APP}$"), {"GET": "list_machines", "POST": "create_machine"}),
    (re.compile(rf"^{_APP}/{_ID}$"), {"GET": "get_machine", "POST": "update_machine",
                                      "DELETE": "delete_machine"}),
    (re.compile(rf"^{_APP}/{_ID}/wait$"), {"GET": "wait_machine"}),
    (re.compile(rf"^{_APP}/{_ID}/start$"), {"POST": "start_machine"}),
    (re.compile(rf"^{_APP}/{_ID}/stop$"), {"POST": "stop_machine"}),
    (re.compile(r"^/_emulator/faults$"), {"GET": "get_faults", "POST": "set_faults"}),
    (re.compile(r"^/_emulator/stats$"), {"GET": "get_stats"}),
    (re.compile(r"^/_emulator/injections$"), {"GET": "get_injections"}),
    (re.compile(rf"^/_emulator/callback/{_ID}$"), {"POST": "proxy_callback"}),
    (re.compile(rf"^/_emulator/orchestrator/{_ID}/(?P<rest>.+)$"), {"POST": "proxy_orchestrator"}),
]


class FlyEmulator:
    """The Fly Machines API on loopback, running each machine as a local process.

    `FlyEmulator(settings=None, **changes)`: `changes` are EmulatorSettings fields, e.g.
    `FlyEmulator(port=0, images={...}, faults=FaultSettings(rate_429=0.2))`.
    `start()` binds and serves in a background thread (returns self); `stop()` kills every
    machine process and closes the socket. Also a context manager. `clock` (default
    time.monotonic) drives the rate limits and the machine-seconds, so a test can advance it.
    """

    def __init__(self, settings: EmulatorSettings | None = None, *,
                 clock: Callable[[], float] | None = None, **changes: object):
        settings = settings or EmulatorSettings()
        self.settings = settings.replace(**changes) if changes else settings
        self.stats = Stats()
        self.faults = FaultInjector(self.settings.faults)
        clock_kw = {"clock": clock} if clock is not None else {}
        self.limiter = RateLimiter(self.settings.rate_table, **clock_kw)
        self.supervisor = Supervisor(self.settings, self.stats, self.faults, lambda: self.url,
                                     Accounting(**clock_kw))
        self.standing = StandingOps(self.supervisor, self.faults, self.stats,
                                    self.settings.start_latency_s)
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the Fly emulator is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    def start(self) -> FlyEmulator:
        if self._server is not None:
            raise RuntimeError("the Fly emulator is already started")
        server = _Server((self.settings.host, self.settings.port), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fly-emulator", daemon=True)
        self._thread.start()
        log.info("%s listening on %s (create rate %.2f/s burst %d, max %d machines, images: %s)",
                 P, self.url, self.settings.create_rate, self.settings.create_burst,
                 self.settings.max_machines, ", ".join(self.settings.images) or "-")
        return self

    def stop(self) -> None:
        """Kill every machine process, stop serving, close the socket. Idempotent."""
        if self._server is None:
            return
        self._closing.set()
        self.supervisor.shutdown()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        log.info("%s stopped", P)

    def pause(self, seconds: float) -> None:
        """Sleep for an injected delay, cut short when the emulator stops."""
        self._closing.wait(seconds)

    def __enter__(self) -> FlyEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a burst of new connections (hundreds of pool
    # processes, a create burst) overflows it and each extra client waits a 1 s SYN retry.
    request_queue_size = 1024
    emulator: FlyEmulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FlyEmulator/1.0"
    disable_nagle_algorithm = True
    wbufsize = -1  # one buffered write per answer (headers and body), flushed in _send
    server: _Server

    @property
    def emulator(self) -> FlyEmulator:
        return self.server.emulator

    # ---- plumbing -----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        log.debug("%s http %s", P, re.sub(r"\?\S*", "?...", format % args))  # no query strings

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s http %s %s -> %s", P, self.command, urlsplit(self.path).path, code)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiError(411, "chunked request bodies are not supported; send Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise bad_request("invalid Content-Length") from None
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, payload: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. the create-timeout fault)

    def _json(self, status: int, data: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers=headers)

    def _dispatch(self, method: str) -> None:
        try:
            self._body = self._read_body()
            parts = urlsplit(self.path)
            self._query = parse_qs(parts.query, keep_blank_values=True)
            self._raw_query = parts.query
            for pattern, methods in ROUTES:
                match = pattern.match(parts.path)
                if match is None:
                    continue
                name = methods.get(method)
                if name is None:
                    raise ApiError(405, f"method {method} not allowed on {parts.path}",
                                   {"Allow": ", ".join(methods)})
                getattr(self, name)(**match.groupdict())
                return
            raise not_found(f"not found: {method} {parts.path}")
        except ApiError as exc:
            self._json(exc.status, exc.body(), exc.headers)
        except Exception:
            log.exception("%s internal error on %s %s", P, method, urlsplit(self.path).path)
            self._json(500, {"error": "internal error in the Fly emulator"})

    def _param(self, name: str) -> str | None:
        values = self._query.get(name)
        return values[-1] if values else None

    def _json_body(self, required: bool) -> object:
        if not self._body.strip():
            if required:
                raise bad_request("invalid request: a JSON body is required")
            return None
        try:
            return json.loads(self._body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise bad_request(f"invalid request: body is not valid JSON ({exc})") from None

    def _authorize(self, app: str) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        expected = self.emulator.settings.token
        if scheme != "Bearer" or not token.strip() or (
            expected is not None and not hmac.compare_digest(token.strip(), expected)
        ):
            self.emulator.stats.incr("auth_failures")
            raise ApiError(401, UNAUTHENTICATED)
        apps = self.emulator.settings.apps
        if apps is not None and app not in apps:
            raise not_found(f"app {app!r} not found")

    # ---- Machines API -------------------------------------------------------------------

    def create_machine(self, app: str) -> None:
        self._authorize(app)
        emulator = self.emulator
        stats = emulator.stats
        stats.incr("creates_received")
        scripted = emulator.faults.scripted_create()
        if scripted is not None and scripted.refused:
            self._refuse(scripted)
        self._limit("create", app)
        fault = scripted or emulator.faults.roll_create()
        if fault.refused:
            self._refuse(fault)
        try:
            request = parse_create(self._json_body(required=True))
            machine = emulator.supervisor.create(app, request)
        except ApiError as exc:
            stats.incr("creates_rejected")
            log.info("%s create refused (%d): %s", P, exc.status, exc.message)
            raise
        stats.incr("creates_accepted")
        if fault.timeout:
            stats.incr("injected_create_timeouts")
            stats.injected("create_timeout", machine["id"], machine["name"])
            log.info("%s fault: create timeout, machine %s (%s) created, answer held %.1fs%s",
                     P, machine["id"], machine["name"], fault.delay_s,
                     " (scripted)" if fault.scripted else "")
            emulator.pause(fault.delay_s)
            machine = emulator.supervisor.show(app, machine["id"])
        self._json(200, machine)

    def _limit(self, action: str, app: str, machine_id: str | None = None) -> None:
        """Take a token of the action's bucket (per app or per machine), or answer 429."""
        allowed, retry_after = self.emulator.limiter.take(action, app, machine_id)
        if allowed:
            return
        self.emulator.stats.incr("rate_limited_429" if action == "create" else f"rate_limited_{action}")
        log.info("%s %s rate limited (Retry-After %ds)", P, action, retry_after)
        raise rate_limited(retry_after)

    def _refuse(self, fault: CreateFault) -> NoReturn:
        how = "scripted" if fault.scripted else "random"
        stats = self.emulator.stats
        if fault.status == 429:
            stats.incr("injected_429")
            log.info("%s fault: create answered 429 (%s)", P, how)
            raise rate_limited(1)
        stats.incr("injected_5xx")
        log.info("%s fault: create answered %d (%s)", P, fault.status, how)
        raise ApiError(fault.status, "internal server error (injected by the Fly emulator)")

    def list_machines(self, app: str) -> None:
        self._authorize(app)
        self._limit("list", app)
        include_deleted = parse_flag(self._param("include_deleted"), "include_deleted")
        machines = self.emulator.supervisor.list_machines(app, include_deleted, self._param("region"))
        self._json(200, machines)

    def get_machine(self, app: str, machine_id: str) -> None:
        self._authorize(app)
        self._limit("get", app, machine_id)
        self._json(200, self.emulator.supervisor.show(app, machine_id))

    def update_machine(self, app: str, machine_id: str) -> None:
        self._authorize(app)
        self._limit("update", app, machine_id)
        body = self._json_body(required=True)
        self._json(200, self.emulator.standing.update(app, machine_id, body))

    def start_machine(self, app: str, machine_id: str) -> None:
        self._authorize(app)
        self._limit("start", app, machine_id)
        self._json(200, self.emulator.standing.start(app, machine_id))

    def wait_machine(self, app: str, machine_id: str) -> None:
        self._authorize(app)
        self._limit("wait", app, machine_id)
        state = self._param("state") or "started"
        if state not in WAIT_STATES:
            raise bad_request(f"invalid state {state!r}: must be one of {', '.join(WAIT_STATES)}")
        raw_timeout = self._param("timeout")
        try:
            timeout = int(raw_timeout) if raw_timeout not in (None, "") else MAX_WAIT_S
        except ValueError:
            raise bad_request(f"invalid timeout {raw_timeout!r}: must be an integer") from None
        if timeout < 1:
            raise bad_request("invalid timeout: must be at least 1 second")
        timeout = min(timeout, MAX_WAIT_S)
        if self.emulator.supervisor.wait(app, machine_id, MachineState(state), timeout):
            self._json(200, {"ok": True})
        else:
            self._json(408, {"error": f"deadline_exceeded: timeout waiting for machine to be {state}"})

    def stop_machine(self, app: str, machine_id: str) -> None:
        self._authorize(app)
        self._limit("stop", app, machine_id)
        body = self._json_body(required=False) or {}
        if not isinstance(body, dict):
            raise bad_request("invalid request: body must be a JSON object")
        for key, value in body.items():
            if key not in ("signal", "timeout"):
                raise bad_request(f"invalid request: unknown field {key!r}")
            if value is not None and not isinstance(value, str):
                raise bad_request(f"invalid request: {key} must be a string")
        self.emulator.supervisor.stop(app, machine_id, body.get("signal"), body.get("timeout"))
        self._json(200, {"ok": True})

    def delete_machine(self, app: str, machine_id: str) -> None:
        self._authorize(app)
        self._limit("delete", app, machine_id)
        force = parse_flag(self._param("force"), "force")
        self.emulator.supervisor.delete(app, machine_id, force)
        self._json(200, {"ok": True})

    # ---- admin ---------------------------------------------------------------------------

    def get_faults(self) -> None:
        self._json(200, self.emulator.faults.snapshot())

    def set_faults(self) -> None:
        changes = self._json_body(required=True)
        if not isinstance(changes, dict):
            raise bad_request("invalid request: body must be a JSON object of fault knobs")
        try:
            self.emulator.faults.update(changes)
        except (ValueError, TypeError) as exc:
            raise bad_request(f"invalid faults: {exc}") from None
        log.info("%s faults updated: %s", P, json.dumps(changes, sort_keys=True))
        self._json(200, self.emulator.faults.snapshot())

    def get_stats(self) -> None:
        data = self.emulator.stats.snapshot()
        supervisor = self.emulator.supervisor
        data["machines_active"] = supervisor.count_active()
        data["machines_stopped"] = supervisor.count_stopped()
        data.update(supervisor.accounting.snapshot())
        self._json(200, data)

    def get_injections(self) -> None:
        self._json(200, self.emulator.stats.injections())

    # ---- callback proxy ------------------------------------------------------------------

    def proxy_callback(self, machine_id: str) -> None:
        machine = self.emulator.supervisor.find(machine_id)
        if machine is None or not machine.callback_url:
            raise not_found(f"no callback registered for machine {machine_id!r}")
        target = machine.callback_url
        if self._raw_query:
            target = urlunsplit(urlsplit(target)._replace(query=self._raw_query))
        self._deliver_callback(machine, target)

    def proxy_orchestrator(self, machine_id: str, rest: str) -> None:
        """A pool process's request to its orchestrator: forwarded; a task assignment's URLs
        are pointed back here and its task fault rolled; a callback gets the callback faults."""
        emulator = self.emulator
        machine = emulator.supervisor.find(machine_id)
        if machine is None or not machine.orchestrator_url:
            raise not_found(f"no orchestrator registered for machine {machine_id!r}")
        target = f"{machine.orchestrator_url}/{rest}" + (f"?{self._raw_query}" if self._raw_query else "")
        kind = pool_proxy.route_kind(rest)
        if kind == pool_proxy.CALLBACK:
            pending = emulator.supervisor.take_task_fault(machine)
            if pending:  # the task ended before its crash/hang was due: it strikes now
                emulator.supervisor.strike(machine, pending)
                self.close_connection = True
                self._json(502, {"error": f"machine {pending.replace('_', ' ')} (injected)"})
                return
            self._deliver_callback(machine, target)
            return
        stats = emulator.stats
        if kind == pool_proxy.PULL:
            stats.incr("pool_pulls")
        elif kind == pool_proxy.HEARTBEAT:
            stats.incr("pool_heartbeats")
        try:
            answer = callbacks.forward(target, self._body, list(self.headers.items()))
        except callbacks.CallbackForwardError as exc:
            stats.incr("pool_forward_errors")
            log.warning("%s %s of machine %s to %s failed: %s", P, kind, machine.id,
                        callbacks.describe(target), exc)
            self._json(502, {"error": f"orchestrator unreachable: {exc}"})
            return
        if answer.status == 200 and kind in (pool_proxy.PULL, pool_proxy.HEARTBEAT):
            self._send(200, self._pool_answer(machine, kind, answer.body), answer.content_type)
            return
        self._send(answer.status, answer.body, answer.content_type)

    def _pool_answer(self, machine: Machine, kind: str, body: bytes) -> bytes:
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return body
        if kind == pool_proxy.HEARTBEAT:
            if isinstance(data, dict) and data.get("action") == "drop":
                self.emulator.stats.incr("pool_drops")
            return body
        emulator = self.emulator
        proxied = pool_proxy.proxied_base(emulator.url, machine.id)
        pool_proxy.rewrite_pull_url(data, machine.orchestrator_url or "", proxied)
        if not pool_proxy.rewrite_task(data, machine.orchestrator_url or "", proxied):
            return json.dumps(data).encode() if isinstance(data, dict) and "pull_url" in data else body
        emulator.stats.incr("pool_tasks")
        fault = emulator.faults.task_fault()
        if fault != "none":
            task = data["task"]
            emulator.supervisor.schedule_task_fault(machine, fault, str(task.get("task_id")),
                                                    task.get("attempt"),
                                                    emulator.faults.task_fault_after_s)
        return json.dumps(data).encode()

    def _deliver_callback(self, machine: Machine, target: str) -> None:
        """Forward one callback to `target` under the callback faults."""
        emulator = self.emulator
        stats = emulator.stats
        stats.incr("callbacks_received")
        where = callbacks.describe(target)
        action = emulator.faults.callback_fault()
        if action == "crash":
            stats.incr("crashes_before_callback")
            emulator.supervisor.strike(machine, "crash_before_callback")
            self.close_connection = True
            self._json(502, {"error": "machine crashed before its callback (injected)"})
            return
        if action == "late":
            # Held past the orchestrator's task timeout: forwarded even if the machine has been
            # destroyed meanwhile (the request was already on the wire).
            late = emulator.faults.late_callback_delay_s
            stats.incr("late_callbacks")
            stats.injected("late_callback", machine.id, machine.name)
            log.info("%s fault: callback of machine %s (%s) held back %.1fs (late callback)",
                     P, machine.id, machine.name, late)
            emulator.pause(late)
        delay = emulator.faults.callback_delay_s
        if delay:
            stats.incr("callbacks_delayed")
            log.info("%s fault: callback of machine %s delayed %.1fs", P, machine.id, delay)
            emulator.pause(delay)
        headers = list(self.headers.items())
        try:
            answer = callbacks.forward(target, self._body, headers)
            stats.incr("callbacks_forwarded")
        except callbacks.CallbackForwardError as exc:
            stats.incr("callback_forward_errors")
            log.warning("%s callback of machine %s to %s failed: %s", P, machine.id, where, exc)
            self._json(502, {"error": f"callback target unreachable: {exc}"})
            return
        log.info("%s callback of machine %s (%s) forwarded to %s: %d",
                 P, machine.id, machine.name, where, answer.status)
        if action == "duplicate":
            stats.incr("duplicate_callbacks")
            stats.injected("duplicate_callback", machine.id, machine.name)
            try:
                again = callbacks.forward(target, self._body, headers)
                stats.incr("callbacks_forwarded")
                log.info("%s fault: duplicate callback of machine %s forwarded again: %d",
                         P, machine.id, again.status)
            except callbacks.CallbackForwardError as exc:
                stats.incr("callback_forward_errors")
                log.warning("%s duplicate callback of machine %s failed: %s", P, machine.id, exc)
        self._send(answer.status, answer.body, answer.content_type)
