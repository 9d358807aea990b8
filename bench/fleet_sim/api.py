"""The orchestrator's HTTP API as machines reach it: each request runs the Chalice app's
real route (chalice.local.LocalGateway, as `chalice local` and the test client serve it)
inside an actor, on one of the API's processes.

Two ways to run the API, as the profiles choose (bench/fleet_sim/profiles.py):
- `lambda`: API Gateway + Lambda. A request takes an idle container or starts a new one
  (a cold start, then its own Services: its own pool candidates and batch cache), and
  each container serves one request at a time.
- `process`: one long-lived process serving every request concurrently on one Services,
  as the local stack's `chalice local` does (its threads share the pool candidates).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .loop import Actor, Loop, Slot

Reply = Callable[[int, Any], None]
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ApiSpec:
    mode: str = "lambda"  # or "process"
    net_s: float = 0.02  # machine <-> API, one way
    overhead_s: float = 0.004  # a request's own time in the API besides its DynamoDB requests
    cold_start_s: float = 0.8  # a new Lambda container before it serves its first request
    cores: int = 0  # `process` mode on the stack: the cores it shares with moto and the machines (0: none)
    machine_cpu_s: float = 0.0  # a machine's own CPU per request it makes (the emulator's threads)


class Gateway:
    """The Chalice app behind API Gateway: LocalGateway without the test client's
    environment patching (which concurrent requests would tangle)."""

    def __init__(self, app: Any, stage: str = "dev") -> None:
        from chalice.cli.factory import CLIFactory
        from chalice.local import LocalGateway

        config = CLIFactory(str(REPO)).create_config_obj(chalice_stage_name=stage)
        self._gateway = LocalGateway(app, config)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        from chalice.local import LocalGatewayException

        try:
            response = self._gateway.handle_request(method=method, path=path, headers=headers, body=body)
        except LocalGatewayException as exc:
            return exc.CODE, None
        raw = response.get("body") or b""
        try:
            return int(response["statusCode"]), json.loads(raw) if raw else None
        except ValueError:
            return int(response["statusCode"]), None


@dataclass
class Process:
    """One API process: the slot values its actors run with, and how many it serves now."""

    number: int
    values: dict[Slot, Any]
    busy: int = 0
    served: int = 0
    free_at: float = 0.0  # `process` mode: when its one interpreter is free for the next request


class ApiFleet:
    def __init__(self, loop: Loop, gateway: Gateway, spec: ApiSpec,
                 new_process: Callable[[], dict[Slot, Any]]) -> None:
        self.loop, self.gateway, self.spec = loop, gateway, spec
        self._new_process = new_process
        self.processes: list[Process] = []
        self.requests = 0
        self.cold_starts = 0
        self.busy_s = 0.0  # container-seconds spent serving (Lambda's billed duration)
        self.statuses: dict[int, int] = {}
        self.errors: list[BaseException] = []  # what escaped a route (the run fails on them)
        self.cores: Any = None  # cpu.Cores shared with moto (the stack profile)

    def request(self, method: str, url: str, headers: dict[str, str], body: dict | None,
                reply: Reply) -> None:
        """Send one request now; `reply(status, json)` runs in the loop when it is answered
        (status 0: no answer)."""
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"content-type": "application/json", **headers}
        self.requests += 1
        self.loop.after(self.spec.net_s, self._arrive, method, path, headers, data, reply)

    def _arrive(self, method: str, path: str, headers: dict[str, str], data: bytes, reply: Reply) -> None:
        process, cold = self._process()
        process.busy += 1
        started = self.loop.now
        answer: list[tuple[int, Any]] = []

        def serve() -> None:
            if cold:
                self.loop.sleep(self.spec.cold_start_s)
            self.loop.sleep(self._turn(process))
            answer.append(self.gateway.handle(method, path, headers, data))

        def done(actor: Actor) -> None:
            process.busy -= 1
            process.served += 1
            self.busy_s += self.loop.now - started
            if actor.error is not None:
                self.errors.append(actor.error)
            status, body = answer[0] if answer else (500, None)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.loop.after(self.spec.net_s, reply, status, body)

        self.loop.spawn(f"api:{path.split('?')[0]}", serve, process.values, on_done=done)

    def _turn(self, process: Process) -> float:
        """The request's own time: in a Lambda container its overhead; in the one `process`,
        its overhead after every request ahead of it (one interpreter, the GIL)."""
        if self.spec.mode != "process":
            return self.spec.overhead_s
        if self.cores is not None:
            mine = self.cores.run(self.loop.now, self.spec.machine_cpu_s) if self.spec.machine_cpu_s else 0.0
            process.free_at = self.cores.run(max(self.loop.now, mine), self.spec.overhead_s, process.free_at)
        else:
            process.free_at = max(self.loop.now, process.free_at) + self.spec.overhead_s
        return process.free_at - self.loop.now

    def _process(self) -> tuple[Process, bool]:
        """An idle Lambda container (or a new one, cold), or the one API process."""
        if self.spec.mode == "process" and self.processes:
            return self.processes[0], False
        for process in self.processes:
            if process.busy == 0:
                return process, False
        process = Process(len(self.processes) + 1, self._new_process())
        self.processes.append(process)
        self.cold_starts += 1
        return process, self.spec.mode == "lambda"
