"""The Fly Machines API over the model (fly_model.py), reached through a `requests`
transport adapter: the orchestrator's own FlyClient sends real HTTP requests into a
Session on which `FlyAdapter` is mounted, and gets real Responses back, in virtual time.

Routes: create (with `skip_launch`), list, get, update, start, stop, destroy and wait
under `/v1/apps/{app}/machines`. Each action has its rate limit (429 with Retry-After in
whole seconds, as Fly answers); a create may also be refused by fault (429, 503) or
answered late (created, but the answer held past the client's timeout).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from .fly_model import DESTROYED, RUNNING, STARTED, STOPPED, FlyModel, SimMachine
from .loop import Loop

_ROUTE = re.compile(r"^/v1/apps/(?P<app>[^/]+)/machines(?:/(?P<id>[^/]+))?(?:/(?P<verb>start|stop|wait))?$")
WAIT_POLL_S = 0.1


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    hold_s: float = 0.0  # the answer leaves this much later (a create-timeout fault)
    wait_for: tuple[SimMachine, str, float] | None = None  # (machine, state, timeout s)


def _error(status: int, text: str, **headers: str) -> Answer:
    return Answer(status, {"error": text}, dict(headers))


def _limited(wait: float) -> Answer:
    return _error(429, "rate limit exceeded", **{"Retry-After": str(max(1, math.ceil(wait)))})


class FlyApi:
    def __init__(self, model: FlyModel) -> None:
        self.model = model

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Answer:
        match = _ROUTE.match(path)
        if match is None:
            return _error(404, f"not found: {method} {path}")
        app, machine_id, verb = match["app"], match["id"], match["verb"]
        self.model.count(f"api_{method}_{verb or ('machine' if machine_id else 'machines')}")
        if machine_id is None:
            return self._create(app, body or {}) if method == "POST" else self._list(app, query)
        machine = self.model.machines.get(machine_id)
        if machine is None or machine.app != app:
            return _error(404, "machine not found")
        if method == "GET":
            return self._wait(machine, query) if verb == "wait" else self._get(machine)
        if method == "DELETE":
            return self._destroy(machine, query)
        return self._act(machine, verb or "update", body or {})

    def _create(self, app: str, body: dict[str, Any]) -> Answer:
        model = self.model
        wait = model.limited(app, "create")
        if wait > 0:
            model.count("rate_limited_429")
            return _limited(wait)
        if model.roll(model.faults.rate_429):
            model.count("injected_429")
            return _limited(1.0)
        if model.roll(model.faults.rate_5xx):
            model.count("injected_5xx")
            return _error(503, "internal server error (injected)")
        name = str(body.get("name") or f"machine-{len(model.machines) + 1}")
        if (app, name) in model.names:
            return _error(409, f"a machine named {name} already exists")
        machine = model.create(app, name, dict(body.get("config") or {}), bool(body.get("skip_launch")))
        hold = model.faults.create_timeout_s if model.roll(model.faults.create_timeout_rate) else 0.0
        if hold:
            model.count("injected_create_timeouts")
        return Answer(200, machine.api(), hold_s=hold)

    def _list(self, app: str, query: dict[str, list[str]]) -> Answer:
        wait = self.model.limited(app, "list")
        if wait > 0:
            return _limited(wait)
        deleted = query.get("include_deleted", ["false"])[-1] == "true"
        return Answer(200, [m.api() for m in self.model.machines.values()
                            if m.app == app and (deleted or m.state != DESTROYED)])

    def _get(self, machine: SimMachine) -> Answer:
        wait = self.model.limited(machine.id, "get")
        return _limited(wait) if wait > 0 else Answer(200, machine.api())

    def _wait(self, machine: SimMachine, query: dict[str, list[str]]) -> Answer:
        wait = self.model.limited(machine.id, "get")
        if wait > 0:
            return _limited(wait)
        state = query.get("state", [STARTED])[-1]
        timeout = float(query.get("timeout", ["60"])[-1])
        return Answer(200, {"ok": True}, wait_for=(machine, state, min(60.0, timeout)))

    def _destroy(self, machine: SimMachine, query: dict[str, list[str]]) -> Answer:
        wait = self.model.limited(machine.id, "delete")
        if wait > 0:
            return _limited(wait)
        if machine.state in RUNNING and query.get("force", ["false"])[-1] != "true":
            return _error(412, "machine is running; stop it or destroy with force=true")
        self.model.destroy(machine)
        return Answer(200, {"ok": True})

    def _act(self, machine: SimMachine, verb: str, body: dict[str, Any]) -> Answer:
        model = self.model
        wait = model.limited(machine.id, verb)
        if wait > 0:
            return _limited(wait)
        if machine.state == DESTROYED:
            return _error(404, "machine destroyed")
        if verb == "start":
            if machine.state in RUNNING:
                return _error(412, f"machine is {machine.state}")
            if model.roll(model.faults.rate_429):
                model.count("injected_429")
                return _limited(1.0)
            model.start(machine)
        elif verb == "stop":
            model.stop(machine)
        else:
            machine.config = dict(body.get("config") or machine.config)
            if machine.state == STOPPED and not body.get("skip_launch"):
                model.start(machine)
        return Answer(200, machine.api() if verb == "update" else {"ok": True})


class FlyAdapter(BaseAdapter):
    """Answers every request of the Session it is mounted on from the Fly model, in virtual
    time: half the API latency there, the model's answer, half back."""

    def __init__(self, loop: Loop, api: FlyApi, latency_s: float) -> None:
        super().__init__()
        self.loop, self.api, self.latency_s = loop, api, latency_s

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        url = urlsplit(request.url or "")
        raw = request.body.decode() if isinstance(request.body, bytes) else request.body
        self.loop.sleep(self.latency_s / 2)
        answer = self.api.handle(request.method or "GET", url.path, parse_qs(url.query),
                                 json.loads(raw) if raw else None)
        read_timeout = timeout[1] if isinstance(timeout, tuple) else timeout
        if answer.hold_s and read_timeout is not None and answer.hold_s > read_timeout:
            self.loop.sleep(read_timeout)
            raise requests.ReadTimeout(f"read timed out after {read_timeout} s (simulated)")
        self.loop.sleep(answer.hold_s)
        if answer.wait_for is not None:
            answer = self._waited(*answer.wait_for)
        self.loop.sleep(self.latency_s / 2)
        return response_for(request, answer.status, answer.body, answer.headers)

    def _waited(self, machine: SimMachine, state: str, timeout_s: float) -> Answer:
        deadline = self.loop.now + timeout_s
        while machine.state != state and self.loop.now < deadline:
            self.loop.sleep(WAIT_POLL_S)
        if machine.state == state:
            return Answer(200, {"ok": True})
        return _error(408, f"deadline_exceeded: timeout waiting for machine to be {state}")

    def close(self) -> None:
        pass


def response_for(request: requests.PreparedRequest, status: int, body: Any,
                 headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers = CaseInsensitiveDict({"Content-Type": "application/json", **(headers or {})})
    response.url, response.request, response.encoding = request.url or "", request, "utf-8"
    response.reason = "OK" if status < 400 else "Error"
    return response
