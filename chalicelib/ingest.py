"""The final callback to the ingest service (contracts §5): build the file list, POST it.

The list is rebuilt from the Files table (message order) and the batch's tasks, page by
page, so it never has to live in one DynamoDB item. Each phase in the chain gets to
rewrite a file's entry from its task's result (the TIFF phase turns a TIFF into its JPEG).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import requests

from . import store
from .errors import DeliveryError, DeliveryNotConfiguredError
from .models import Batch
from .phases import FileEntry, PhaseRegistry
from .settings import Settings
from .views import task_view_for_phase

ENTRY_FIELDS = ("r2_key", "logical_path", "file_name", "file_size", "content_type")
# The dev stage's WORKER_URL until someone sets it: a dev batch must never deliver into the
# production ingest service by default. Any host under `.invalid` (RFC 2606) counts as unset.
WORKER_URL_UNSET = "https://worker-url-not-set.invalid"


def build_files(batch_id: str, registry: PhaseRegistry) -> list[dict[str, Any]]:
    tasks = {t.task_id: task_view_for_phase(t) for t in store.iter_tasks(batch_id)}
    chain = registry.chain()
    files: list[dict[str, Any]] = []
    for record in store.iter_files(batch_id):
        file = FileEntry(int(record.position), record.directory_path, record.processing_config, record.info)
        entry = {name: file.info.get(name) for name in ENTRY_FIELDS}
        entry["processing_config"] = file.processing_config
        if file.info.get("cid") is not None:
            entry["cid"] = file.info["cid"]
        for phase in chain:
            task = tasks.get(phase.task_id(batch_id, str(file.info.get("r2_key"))))
            entry = phase.final_entry(entry, file, task)
        files.append(entry)
    return files


def idempotency_key(batch: Batch) -> str:
    """Stable per batch, run (a restart over ERROR) and delivery (a retry or redeliver
    starts a new one): every re-send of one delivery carries the same key, so the ingest
    service can drop the copies that at-least-once delivery makes."""
    return f"{batch.batch_id}:{int(batch.generation or 1)}:{int(batch.delivery_generation or 1)}"


def deliver(settings: Settings, session: requests.Session, batch_id: str,
            files: list[dict[str, Any]], key: str) -> None:
    """POST the final callback, at least once: a pass that dies after the POST but before
    recording it sends it again, with the same Idempotency-Key."""
    if (urlparse(settings.worker_url).hostname or "").endswith(".invalid"):
        raise DeliveryNotConfiguredError(
            f"WORKER_URL is not set for stage {settings.stage} (it is the placeholder "
            f"{settings.worker_url}): set it to the ingest service or a test receiver, "
            "then redeliver the batch")
    url = f"{settings.worker_url}/api/batches/{batch_id}/enqueue-processed"
    try:
        response = session.post(url, json={"files": files}, headers={"Idempotency-Key": key},
                                timeout=settings.delivery_timeout_ms / 1000)
    except requests.RequestException as exc:
        raise DeliveryError(f"enqueue-processed unreachable: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"enqueue-processed answered {response.status_code}: {response.text[:200]}")
