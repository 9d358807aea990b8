"""Checks a create-machine body against CreateMachineRequest / api.MachineConfig, and an
update body against UpdateMachineRequest (the same, plus `current_version`).

Pure: takes the decoded JSON, returns a `CreateRequest` or raises `ApiError`. Unknown fields,
wrong types (400) and requests the emulator cannot honour (422) are refused, never ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ApiError, bad_request, unprocessable

STR, INT, BOOL, NUM, OBJ, LIST = "string", "integer", "boolean", "number", "object", "array"

CREATE_FIELDS = {
    "config": OBJ,
    "lease_ttl": INT,
    "lsvd": BOOL,
    "name": STR,
    "region": STR,
    "skip_launch": BOOL,
    "skip_service_registration": BOOL,
}
UPDATE_FIELDS = {**CREATE_FIELDS, "current_version": STR}
CONFIG_FIELDS = {
    "auto_destroy": BOOL,
    "checks": OBJ,
    "disable_machine_autostart": BOOL,
    "dns": OBJ,
    "env": OBJ,
    "files": LIST,
    "guest": OBJ,
    "image": STR,
    "init": OBJ,
    "metadata": OBJ,
    "metrics": OBJ,
    "mounts": LIST,
    "processes": LIST,
    "restart": OBJ,
    "schedule": STR,
    "services": LIST,
    "size": STR,
    "standbys": LIST,
    "statics": LIST,
    "stop_config": OBJ,
}
GUEST_FIELDS = {
    "cpu_kind": STR,
    "cpus": INT,
    "gpu_kind": STR,
    "host_dedication_id": STR,
    "kernel_args": LIST,
    "memory_mb": INT,
}
RESTART_FIELDS = {"max_retries": INT, "policy": STR}
STOP_CONFIG_FIELDS = {"signal": STR, "timeout": STR}
RESTART_POLICIES = ("no", "always", "on-failure")
# Accepted by Fly, but they would change what runs; refused here rather than ignored.
NOT_EMULATED = ("files", "init", "mounts", "processes", "schedule", "standbys")
CPU_KINDS = ("shared", "performance")


@dataclass(frozen=True)
class CreateRequest:
    name: str | None
    region: str | None
    config: dict
    image: str
    env: dict[str, str]
    memory_mb: int | None
    auto_destroy: bool
    stop_signal: str | None
    stop_timeout: str | None
    skip_launch: bool = False  # create it stopped: no process until POST start


def _type_ok(value: object, kind: str) -> bool:
    if kind == STR:
        return isinstance(value, str)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == OBJ:
        return isinstance(value, dict)
    if kind == LIST:
        return isinstance(value, list)
    raise AssertionError(kind)


def _check_object(obj: dict, fields: dict[str, str], where: str) -> None:
    for key, value in obj.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            raise bad_request(f"invalid request: unknown field {path!r}")
        if value is not None and not _type_ok(value, fields[key]):
            raise bad_request(f"invalid request: {path} must be {_article(fields[key])}")


def _article(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _string_map(obj: object, where: str) -> dict[str, str]:
    if obj is None:
        return {}
    assert isinstance(obj, dict)
    for key, value in obj.items():
        if not isinstance(value, str):
            raise bad_request(f"invalid request: {where}.{key} must be a string")
    return dict(obj)


def parse_create(body: object) -> CreateRequest:
    """Validate a decoded create body. Raises ApiError (400 malformed, 422 not acceptable)."""
    if not isinstance(body, dict):
        raise bad_request("invalid request: body must be a JSON object")
    _check_object(body, CREATE_FIELDS, "")
    config = body.get("config")
    if not config:
        raise unprocessable("invalid request: config is required")
    _check_object(config, CONFIG_FIELDS, "config")
    for key in NOT_EMULATED:
        if config.get(key):
            raise unprocessable(f"config.{key} is not emulated")
    image = config.get("image")
    if not image:
        raise unprocessable("invalid config.image: an image is required")
    env = _string_map(config.get("env"), "config.env")
    _string_map(config.get("metadata"), "config.metadata")

    guest = config.get("guest") or {}
    _check_object(guest, GUEST_FIELDS, "config.guest")
    memory_mb = guest.get("memory_mb")
    if memory_mb is not None and memory_mb <= 0:
        raise unprocessable("invalid config.guest.memory_mb: must be greater than 0")
    if guest.get("cpus") is not None and guest["cpus"] <= 0:
        raise unprocessable("invalid config.guest.cpus: must be greater than 0")
    if guest.get("cpu_kind") not in (None, *CPU_KINDS):
        raise unprocessable(f"invalid config.guest.cpu_kind: must be one of {', '.join(CPU_KINDS)}")

    restart = config.get("restart") or {}
    _check_object(restart, RESTART_FIELDS, "config.restart")
    policy = restart.get("policy")
    if policy is not None and policy not in RESTART_POLICIES:
        raise bad_request(
            f"invalid config.restart.policy {policy!r}: must be one of {', '.join(RESTART_POLICIES)}"
        )
    if policy in ("always", "on-failure"):
        raise unprocessable(f"restart policy {policy!r} is not emulated; use 'no'")

    stop_config = config.get("stop_config") or {}
    _check_object(stop_config, STOP_CONFIG_FIELDS, "config.stop_config")

    name = body.get("name") or None
    if name is not None and (len(name) > 63 or any(c.isspace() or c == "/" for c in name)):
        raise bad_request(f"invalid machine name {name!r}")
    return CreateRequest(
        name=name,
        region=body.get("region") or None,
        config=config,
        image=image,
        env=env,
        memory_mb=memory_mb,
        auto_destroy=bool(config.get("auto_destroy")),
        stop_signal=stop_config.get("signal"),
        stop_timeout=stop_config.get("timeout"),
        skip_launch=bool(body.get("skip_launch")),
    )


def parse_update(body: object) -> tuple[CreateRequest, str | None]:
    """Validate a decoded update body: the request and its `current_version` (or None)."""
    if not isinstance(body, dict):
        raise bad_request("invalid request: body must be a JSON object")
    _check_object(body, UPDATE_FIELDS, "")
    rest = {key: value for key, value in body.items() if key != "current_version"}
    return parse_create(rest), body.get("current_version") or None


def parse_flag(value: str | None, name: str) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it."""
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise bad_request(f"invalid {name}: {value!r} is not a boolean")


__all__ = ["ApiError", "CreateRequest", "parse_create", "parse_flag", "parse_update"]
