"""Fly Machines API client: create (running, or stopped with `skip_launch`), start, stop,
update, list and destroy machines, and ask whether one was OOM-killed.

The same code talks to Fly and to the local emulator; only `FLY_API_HOSTNAME` differs.
Errors come back named (errors.FlyError, FlyRateLimitedError, FlyStartRefusedError) so the
caller can decide: 429 pauses that call without counting an attempt; a start refused for
the machine's state or host (409, 412) falls back to another machine or a create;
everything else counts an attempt.
"""

from __future__ import annotations

from typing import Any

import requests

from .errors import FlyError, FlyRateLimitedError, FlyStartRefusedError
from .settings import Settings

DEFAULT_RETRY_AFTER_S = 1.0
START_REFUSALS: dict[int, type[FlyError]] = {409: FlyStartRefusedError, 412: FlyStartRefusedError}


def _retry_after(response: requests.Response) -> float:
    raw = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(raw))
    except ValueError:
        return DEFAULT_RETRY_AFTER_S


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
        text = body.get("error") if isinstance(body, dict) else None
    except ValueError:
        text = None
    text = text or response.text[:200] or response.reason
    return f"Fly API {response.status_code}: {text}"


def authorization(token: str) -> str:
    """The Authorization header for a Fly token. `fly tokens create deploy` prints a macaroon
    as `FlyV1 fm2_...`, which the Machines API wants in the FlyV1 scheme; the older personal
    tokens go in Bearer. The secret may be stored with or without its scheme."""
    token = token.strip()
    if token.startswith(("FlyV1 ", "Bearer ")):
        return token
    if token.startswith(("fm1", "fm2_", "m2.")):
        return f"FlyV1 {token}"
    return f"Bearer {token}"


class FlyClient:
    def __init__(self, settings: Settings, token: str, session: requests.Session | None = None) -> None:
        self._base = f"{settings.fly_api_hostname}/v1/apps/{settings.fly_app_name}/machines"
        self._timeout = (5.0, settings.fly_request_timeout_ms / 1000)
        self._session = session or requests.Session()
        self._headers = {"Authorization": authorization(token), "Content-Type": "application/json"}

    def _call(self, method: str, path: str, doing: str,
              errors: dict[int, type[FlyError]] | None = None, **kw: Any) -> requests.Response:
        """One request to `{base}{path}`; the answer when 2xx. No answer or a refusal raises
        FlyError (429: FlyRateLimitedError; a status in `errors`: that class)."""
        try:
            response = self._session.request(method, f"{self._base}{path}", headers=self._headers,
                                             timeout=self._timeout, **kw)
        except requests.Timeout:
            raise FlyError(f"Fly API timed out {doing}") from None
        except requests.RequestException as exc:
            raise FlyError(f"Fly API unreachable: {type(exc).__name__}") from None
        if response.status_code == 429:
            raise FlyRateLimitedError(_retry_after(response))
        if not response.ok:
            error = (errors or {}).get(response.status_code, FlyError)
            raise error(_error_text(response), response.status_code)
        return response

    def create_machine(self, request: dict[str, Any], skip_launch: bool = False) -> dict[str, Any]:
        """Create one machine (with `skip_launch`, stopped: it runs nothing until started);
        `{"id", "name", "state"}` on success, FlyError otherwise."""
        body = {**request, "skip_launch": True} if skip_launch else request
        response = self._call("POST", "", "creating the machine", json=body)
        machine = _machine_json(response)
        return {"id": str(machine["id"]), "name": machine.get("name"), "state": machine.get("state")}

    def start_machine(self, machine_id: str) -> dict[str, Any]:
        """Start a stopped machine: `{"previous_state", "migrated", "new_host"}` (a migrated
        machine moved to another host). FlyStartRefusedError when its state or host refuses
        (409, 412), FlyRateLimitedError on 429, FlyError otherwise (404: no such machine)."""
        response = self._call("POST", f"/{machine_id}/start", "starting the machine",
                              errors=START_REFUSALS)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        answer = answer if isinstance(answer, dict) else {}
        return {"previous_state": answer.get("previous_state"),
                "migrated": answer.get("migrated") is True, "new_host": answer.get("new_host") or ""}

    def stop_machine(self, machine_id: str) -> None:
        """Stop a started machine (its process gets its stop signal); a stopped one is fine.
        FlyRateLimitedError on 429, FlyError otherwise."""
        self._call("POST", f"/{machine_id}/stop", "stopping the machine")

    def update_machine(self, machine_id: str, config: dict[str, Any],
                       current_version: str | None = None) -> dict[str, Any]:
        """Give a stopped machine a new config (image, env, guest) for its next start; it
        stays stopped. With `current_version` (the machine's `instance_id`), Fly refuses
        (409) when the machine changed since. `{"id", "name", "state", "instance_id"}`."""
        body: dict[str, Any] = {"config": config}
        if current_version:
            body["current_version"] = current_version
        response = self._call("POST", f"/{machine_id}", "updating the machine", json=body)
        machine = _machine_json(response)
        return {"id": str(machine["id"]), "name": machine.get("name"), "state": machine.get("state"),
                "instance_id": machine.get("instance_id")}

    def list_machines(self) -> list[dict[str, Any]]:
        """Every machine of the app that is not destroyed: `{"id", "name", "state", "region",
        "instance_id", "config"}` each. FlyRateLimitedError on 429, FlyError otherwise."""
        response = self._call("GET", "", "listing the machines")
        try:
            machines = response.json()
        except ValueError:
            machines = None
        if not isinstance(machines, list):
            raise FlyError("Fly API answered the machine list with something else", response.status_code)
        return [_summary(m) for m in machines if isinstance(m, dict) and m.get("id")]

    def machine_ids_named(self, names: set[str]) -> list[str]:
        """The ids of the app's live machines with these names (Fly names are unique per
        app, and ours are deterministic per task attempt): how a machine whose creation
        was never recorded (its pass died, or its answer timed out) is found again. One
        list request; best effort, [] when Fly does not answer."""
        found = self.find_machine_ids(names)
        return [i for ids in (found or {}).values() for i in ids]

    def find_machine_ids(self, names: set[str]) -> dict[str, list[str]] | None:
        """Each name's live machine ids (none: no such machine), from one list request;
        None when Fly does not answer, so a caller can tell "not there" from "not known"."""
        if not names:
            return {}
        try:
            machines = self.list_machines()
        except FlyError:
            return None
        found: dict[str, list[str]] = {name: [] for name in names}
        for m in machines:
            if m["name"] in names and m["state"] not in ("destroyed", "destroying"):
                found[m["name"]].append(m["id"])
        return found

    def killed_for_memory(self, machine_id: str) -> bool | None:
        """Whether the machine's process was killed by the OOM killer (an exit event with
        `oom_killed`, as Fly reports it; destroyed machines stay readable for a while). One
        Get Machine; None when Fly did not answer it (429 included), so a caller stops asking."""
        try:
            response = self._session.get(f"{self._base}/{machine_id}", headers=self._headers,
                                         timeout=self._timeout)
            machine = response.json() if response.ok else None
        except (requests.RequestException, ValueError):
            return None
        if response.status_code == 404:
            return False
        return exit_was_oom(machine) if machine is not None else None

    def destroy_machine(self, machine_id: str) -> bool:
        """Best effort: force-destroy a machine we gave up on. True if it is gone."""
        try:
            response = self._session.delete(f"{self._base}/{machine_id}", params={"force": "true"},
                                            headers=self._headers, timeout=self._timeout)
        except requests.RequestException:
            return False
        return response.ok or response.status_code == 404


def _machine_json(response: requests.Response) -> dict[str, Any]:
    """A Machine answer with its `id`, or FlyError."""
    try:
        machine = response.json()
    except ValueError:
        machine = None
    if not isinstance(machine, dict) or "id" not in machine:
        raise FlyError("Fly API answered without a machine id", response.status_code)
    return machine


def _summary(machine: dict[str, Any]) -> dict[str, Any]:
    config = machine.get("config")
    return {"id": str(machine["id"]), "name": machine.get("name"), "state": machine.get("state"),
            "region": machine.get("region"), "instance_id": machine.get("instance_id"),
            "config": config if isinstance(config, dict) else {}}


def exit_was_oom(machine: object) -> bool:
    """Whether a Machine object's events hold an exit the OOM killer caused."""
    events = machine.get("events") if isinstance(machine, dict) else None
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict) or event.get("type") != "exit":
            continue
        request = event.get("request")
        exit_event = request.get("exit_event") if isinstance(request, dict) else None
        if isinstance(exit_event, dict) and exit_event.get("oom_killed") is True:
            return True
    return False
