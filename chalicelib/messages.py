"""The queue message of contracts §1: parsed and validated before anything is stored.

Validation is strict where a mistake would corrupt a batch (ids, keys, types) and lenient
where the contract is (optional fields, extra fields are carried, not interpreted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import InvalidMessageError
from .ids import id_problem

HEADER_FIELDS = ("batch_id", "r2_prefix", "uploader", "root_path", "parent_pi", "total_files",
                 "total_bytes", "uploaded_at", "finalized_at", "manifest_r2_key", "metadata")
FILE_STRING_FIELDS = ("r2_key", "logical_path", "file_name", "content_type")


@dataclass(frozen=True)
class QueueMessage:
    batch_id: str
    header: dict[str, Any]
    directories: list[dict[str, Any]] | None
    manifest_r2_key: str | None


def parse_body(body: str | bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, TypeError) as exc:
        raise InvalidMessageError(f"message body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMessageError("message body must be a JSON object")
    return data


def parse_message(data: dict[str, Any]) -> QueueMessage:
    problem = id_problem(data.get("batch_id"), "batch_id")
    if problem:
        raise InvalidMessageError(problem)
    batch_id = data["batch_id"]
    prefix = data.get("r2_prefix")
    if prefix is not None and not isinstance(prefix, str):
        raise InvalidMessageError("r2_prefix must be a string")
    for name in ("total_files", "total_bytes"):
        value = data.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise InvalidMessageError(f"{name} must be an integer")
    directories, manifest = data.get("directories"), data.get("manifest_r2_key")
    if directories is None and manifest is None:
        raise InvalidMessageError("message needs either directories or manifest_r2_key")
    if manifest is not None:
        check_key(manifest, prefix, "manifest_r2_key")
    if directories is not None:
        validate_directories(directories, prefix)
    header = {k: data[k] for k in HEADER_FIELDS if k in data}
    return QueueMessage(batch_id, header, directories, manifest)


def check_key(key: object, prefix: str | None, what: str) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidMessageError(f"{what} must be a non-empty string")
    if key.startswith("/") or ".." in key.split("/") or any(ord(c) < 32 for c in key):
        raise InvalidMessageError(f"{what} {key!r} must be a relative key without '..'")
    if prefix and not key.startswith(prefix):
        raise InvalidMessageError(f"{what} {key!r} lies outside r2_prefix {prefix!r}")


def validate_directories(directories: object, prefix: str | None) -> None:
    if not isinstance(directories, list):
        raise InvalidMessageError("directories must be a list")
    for d, group in enumerate(directories):
        if not isinstance(group, dict):
            raise InvalidMessageError(f"directories[{d}] must be an object")
        if not isinstance(group.get("directory_path", ""), str):
            raise InvalidMessageError(f"directories[{d}].directory_path must be a string")
        config = group.get("processing_config")
        if config is not None and not isinstance(config, dict):
            raise InvalidMessageError(f"directories[{d}].processing_config must be an object")
        files = group.get("files")
        if not isinstance(files, list):
            raise InvalidMessageError(f"directories[{d}].files must be a list")
        for f, info in enumerate(files):
            _validate_file(info, prefix, f"directories[{d}].files[{f}]")


def _validate_file(info: object, prefix: str | None, where: str) -> None:
    if not isinstance(info, dict):
        raise InvalidMessageError(f"{where} must be an object")
    for name in FILE_STRING_FIELDS:
        if name in info and not isinstance(info[name], str):
            raise InvalidMessageError(f"{where}.{name} must be a string")
    if not info.get("file_name"):
        raise InvalidMessageError(f"{where}.file_name is required")
    check_key(info.get("r2_key"), prefix, f"{where}.r2_key")
    size = info.get("file_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise InvalidMessageError(f"{where}.file_size must be a non-negative integer")


def parse_manifest(raw: bytes, batch_id: str, prefix: str | None) -> list[dict[str, Any]]:
    """The manifest's directories; ManifestError-worthy problems raise InvalidMessageError."""
    try:
        manifest = json.loads(raw)
    except (ValueError, TypeError):
        raise InvalidMessageError("manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise InvalidMessageError("manifest must be a JSON object")
    if manifest.get("batch_id") not in (None, batch_id):
        raise InvalidMessageError("manifest batch_id does not match the message")
    directories = manifest.get("directories")
    validate_directories(directories, prefix)
    return directories
