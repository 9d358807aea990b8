"""Starting a batch from a queue message (contracts §1): idempotent under redelivery,
concurrency and crashes at any step.

SQS delivers at least once, sometimes two copies at the same time, and an invocation can
die anywhere. So an intake first holds the batch's intake claim (an owner and an expiry on
the batch item, like a pass's lease), and every write it makes is fenced on that claim
and on the batch still being in INTAKE (store/intake_writes.py): a second copy that finds
the claim held raises (SQS delivers it again later, when it will find the batch started);
one that finds it expired (the first died) takes over and repeats the steps, each of which
writes the same items again. Nothing is written once the batch is activated, when a pass
may hold its tasks. A batch in ERROR is started again by a new message as its next
generation: its old items are removed first, inside the claim, so a crash there is resumed
too, and its tasks keep their attempt numbers.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from . import r2, store
from .clock import now_ms
from .errors import IntakeBusy, InvalidMessageError, ManifestError
from .logs import log
from .messages import QueueMessage, parse_body, parse_manifest, parse_message
from .models import Batch, File
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
    """Returns "started", "duplicate", "superseded" or "error"; raises IntakeBusy while
    another intake of the same batch is under way (SQS delivers the message again later)."""
    batch_id, settings = message.batch_id, services.settings
    owner = f"intake-{uuid.uuid4().hex[:12]}"
    batch = _claim(batch_id, message, owner, settings.lease_ms)
    if batch is None:
        existing = store.get_batch(batch_id, with_counts=False)
        log("[Queue]", "duplicate_ignored", batch_id=batch_id, status=existing.status if existing else None,
            message_id=message_id)
        return "duplicate"
    try:
        directories = _directories(services, message)
    except ManifestError as exc:
        now = now_ms()
        store.fail_batch(settings, batch_id, str(exc), now, now + settings.sweep_delay_ms, expect_status=BatchStatus.INTAKE.value,
                         intake_owner=owner)
        log("[Queue]", "manifest_failed", batch_id=batch_id, reason=str(exc))
        return "error"
    entries = list(_file_entries(directories))
    phase = services.registry.first
    specs = phase.discover(Discovery(batch_id, entries, []))
    now = now_ms()
    files = (File.of(batch_id, e.position, directory_path=e.directory_path, processing_config=e.processing_config,
                     info=e.info) for e in entries)
    try:
        store.write_intake(settings, batch_id, owner, now + settings.lease_ms, now, bool(batch.intake_clean),
                           files, phase.name, specs)
        if not store.activate_batch(settings, batch_id, owner, phase.name if specs else None, len(specs), now_ms()):
            raise store.IntakeFenceLost(f"batch {batch_id} left INTAKE before it was activated")
    except store.IntakeFenceLost:
        # Another intake took over (this one stalled past its claim) or an admin reset the
        # batch: whoever did owns it now. Nothing was written after that moment.
        current = store.get_batch(batch_id, with_counts=False)
        log("[Queue]", "intake_superseded", batch_id=batch_id, status=current.status if current else None,
            message_id=message_id)
        return "superseded"
    log("[Queue]", "batch_started", batch_id=batch_id, files=len(entries), tasks=len(specs), phase=phase.name,
        generation=int(batch.generation or 1), message_id=message_id)
    return "started"


def _claim(batch_id: str, message: QueueMessage, owner: str, lease_ms: int) -> Batch | None:
    """The batch in INTAKE with its claim ours, or None when it is already past INTAKE
    (a duplicate). Creates it, or replaces one in ERROR by the next generation."""
    for _ in range(3):  # each round is decided by one conditional write; a lost one re-reads
        now = now_ms()
        existing = store.get_batch(batch_id, with_counts=False)
        if existing is None or existing.status == BatchStatus.ERROR.value:
            if store.create_batch(batch_id, message.header, now, owner, lease_ms, replace=existing):
                if existing is not None:
                    log("[Queue]", "batch_restarted", batch_id=batch_id, generation=int(existing.generation or 1) + 1)
                return store.get_batch(batch_id, with_counts=False)
            continue
        if existing.status != BatchStatus.INTAKE.value:
            return None
        claimed = store.claim_intake(batch_id, owner, now, lease_ms)
        if claimed is not None:
            return claimed
        raise IntakeBusy(f"batch {batch_id} is being taken in by {existing.intake_owner}")
    raise IntakeBusy(f"batch {batch_id} kept changing while it was being taken in")


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
