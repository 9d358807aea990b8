"""Starting a batch from a queue message (contracts §1), idempotently.

A batch is created in INTAKE, its files and first-phase tasks are written (deterministic
ids, so writing them twice is harmless), then it is activated in one conditional update.
A redelivered message finds the batch past INTAKE and changes nothing; one that finds it
still in INTAKE (an earlier delivery died half-way) finishes the job. A batch in ERROR is
started again from scratch by a new message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import r2, store
from .clock import now_ms
from .errors import InvalidMessageError, ManifestError
from .logs import log
from .messages import QueueMessage, parse_body, parse_manifest, parse_message
from .models import File
from .phases import Discovery, FileEntry
from .services import Services
from .states import BatchStatus


def handle_body(services: Services, body: str | bytes, message_id: str | None = None) -> str:
    """Process one queue message body. Returns what happened ("started", "duplicate",
    "error"); raises InvalidMessageError for a message the queue should dead-letter."""
    try:
        message = parse_message(parse_body(body))
    except InvalidMessageError as exc:
        log("[Queue]", "invalid_message", message_id=message_id, reason=str(exc))
        raise
    return start_batch(services, message, message_id)


def start_batch(services: Services, message: QueueMessage, message_id: str | None = None) -> str:
    batch_id, now = message.batch_id, now_ms()
    existing = store.get_batch(batch_id)
    if existing is None:
        if not store.create_batch(batch_id, message.header, now, replace_error=False):
            existing = store.get_batch(batch_id)
    elif existing.status == BatchStatus.ERROR.value:
        if store.create_batch(batch_id, message.header, now, replace_error=True):
            store.delete_batch_items(batch_id)
            log("[Queue]", "batch_restarted", batch_id=batch_id, message_id=message_id)
            existing = None
        else:
            existing = store.get_batch(batch_id)
    if existing is not None and existing.status != BatchStatus.INTAKE.value:
        log("[Queue]", "duplicate_ignored", batch_id=batch_id, status=existing.status, message_id=message_id)
        return "duplicate"
    try:
        directories = _directories(services, message)
    except ManifestError as exc:
        store.fail_batch(batch_id, str(exc), now_ms(), expect_status=BatchStatus.INTAKE.value)
        log("[Queue]", "manifest_failed", batch_id=batch_id, reason=str(exc))
        return "error"
    entries = list(_file_entries(directories))
    store.write_files(File(batch_id, e.position, directory_path=e.directory_path,
                                      processing_config=e.processing_config, info=e.info) for e in entries)
    phase = services.registry.first
    specs = phase.discover(Discovery(batch_id, entries, []))
    store.write_tasks(store.new_task(batch_id, s.task_id, phase.name, s.input_r2_key, s.file_position,
                                     s.data, now) for s in specs)
    activated = store.activate_batch(batch_id, phase.name if specs else None, len(specs), now_ms())
    log("[Queue]", "batch_started" if activated else "duplicate_ignored", batch_id=batch_id,
        files=len(entries), tasks=len(specs), phase=phase.name, message_id=message_id)
    return "started" if activated else "duplicate"


def _directories(services: Services, message: QueueMessage) -> list[dict[str, Any]]:
    if message.directories is not None:
        return message.directories
    assert message.manifest_r2_key is not None
    raw = r2.read_manifest(services.settings, services.secrets(), message.manifest_r2_key)
    try:
        return parse_manifest(raw, message.batch_id, message.header.get("r2_prefix"))
    except InvalidMessageError as exc:
        raise ManifestError(f"manifest {message.manifest_r2_key}: {exc}") from None


def _file_entries(directories: list[dict[str, Any]]) -> Iterator[FileEntry]:
    position = 0
    for group in directories:
        for info in group.get("files", []):
            yield FileEntry(position, group.get("directory_path", ""), group.get("processing_config"), dict(info))
            position += 1
