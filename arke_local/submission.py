"""Submits a folder as a batch, the way the ingest service does (contracts §1).

Uploads every file under the folder to R2 as `staging/{batch}/{relative path}`, builds
the queue message (files grouped by their relative folder, sizes, content types,
processing_config all false), inline or, when large, as a manifest in R2 at
`staging/{batch}/_manifest.json`, and sends it to the job queue (or `POST /test`).
Building the message is pure (`build_message`); the rest does the I/O.
"""

from __future__ import annotations

import json
import mimetypes
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

MANIFEST_NAME = "_manifest.json"
INLINE_LIMIT_BYTES = 200 * 1024  # SQS allows 256 KiB; the ingest service switches earlier
PROCESSING_CONFIG = {"ocr": False, "describe": False, "pinax": False}


def log(message: str) -> None:
    print(f"[CLI] {message}", file=sys.stderr, flush=True)  # stdout is for data


@dataclass(frozen=True)
class LocalFile:
    relpath: str  # "/"-separated, relative to the submitted folder
    size: int
    path: Path | None = None


def new_batch_id() -> str:
    return f"batch_{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}_{uuid.uuid4().hex[:6]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def content_type(name: str) -> str:
    lower = name.lower()
    if lower.endswith((".tif", ".tiff")):
        return "image/tiff"
    guessed, _ = mimetypes.guess_type(lower)
    return guessed or "application/octet-stream"


def scan(folder: str | Path) -> list[LocalFile]:
    """Every regular file under `folder`, sorted by relative path; hidden files skipped."""
    root = Path(folder)
    files = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        files.append(LocalFile(rel, path.stat().st_size, path))
    return files


def build_directories(batch_id: str, files: list[LocalFile], r2_prefix: str) -> list[dict]:
    """DirectoryGroups in folder order (root first), files in name order within each."""
    groups: dict[str, list[LocalFile]] = {}
    for f in files:
        parent = PurePosixPath(f.relpath).parent.as_posix()
        directory = "/" if parent == "." else f"/{parent}"
        groups.setdefault(directory, []).append(f)
    directories = []
    for directory in sorted(groups, key=lambda d: (d != "/", d)):
        entries = []
        for f in sorted(groups[directory], key=lambda f: f.relpath):
            name = PurePosixPath(f.relpath).name
            entries.append(
                {
                    "r2_key": f"{r2_prefix}{f.relpath}",
                    "logical_path": f"/{f.relpath}",
                    "file_name": name,
                    "file_size": f.size,
                    "content_type": content_type(name),
                }
            )
        directories.append(
            {
                "directory_path": directory,
                "processing_config": dict(PROCESSING_CONFIG),
                "file_count": len(entries),
                "total_bytes": sum(e["file_size"] for e in entries),
                "files": entries,
            }
        )
    return directories


def build_message(
    batch_id: str,
    files: list[LocalFile],
    *,
    uploader: str = "arke-preprocess-cli",
    root_path: str = "/",
    parent_pi: str | None = None,
    metadata: dict | None = None,
    manifest: str = "auto",
    inline_limit: int = INLINE_LIMIT_BYTES,
) -> tuple[dict, dict | None]:
    """(queue message, manifest or None). `manifest`: auto, always or never."""
    r2_prefix = f"staging/{batch_id}/"
    directories = build_directories(batch_id, files, r2_prefix)
    total_bytes = sum(f.size for f in files)
    stamp = now_iso()
    message: dict = {
        "batch_id": batch_id,
        "r2_prefix": r2_prefix,
        "uploader": uploader,
        "root_path": root_path,
        "total_files": len(files),
        "total_bytes": total_bytes,
        "uploaded_at": stamp,
        "finalized_at": stamp,
        "metadata": metadata or {"source": "arke-preprocess submit"},
    }
    if parent_pi:
        message["parent_pi"] = parent_pi
    inline = dict(message, directories=directories)
    use_manifest = manifest == "always" or (
        manifest == "auto" and len(json.dumps(inline).encode()) > inline_limit
    )
    if not use_manifest:
        return inline, None
    manifest_doc = {
        "batch_id": batch_id,
        "directories": directories,
        "total_files": len(files),
        "total_bytes": total_bytes,
    }
    message["manifest_r2_key"] = f"{r2_prefix}{MANIFEST_NAME}"
    return message, manifest_doc


def upload(r2, bucket: str, batch_id: str, files: list[LocalFile], workers: int = 8) -> float:
    """Uploads the files; returns the seconds it took."""
    started = time.monotonic()
    prefix = f"staging/{batch_id}/"

    def put(f: LocalFile) -> None:
        r2.upload_file(
            str(f.path), bucket, f"{prefix}{f.relpath}",
            ExtraArgs={"ContentType": content_type(f.relpath)},
        )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(put, files))
    return time.monotonic() - started


def submit_folder(
    target,
    folder: str | Path,
    *,
    batch_id: str | None = None,
    manifest: str = "auto",
    via_api: bool = False,
    uploader: str = "arke-preprocess-cli",
    parent_pi: str | None = None,
) -> dict:
    """Uploads, builds and sends; returns the message sent."""
    files = scan(folder)
    if not files:
        raise ValueError(f"no files under {folder}")
    batch_id = batch_id or new_batch_id()
    r2 = target.r2()
    took = upload(r2, target.bucket, batch_id, files)
    total = sum(f.size for f in files)
    log(f"batch {batch_id}: uploaded {len(files)} files ({total / 1e6:.1f} MB) in {took:.1f} s")
    message, manifest_doc = build_message(
        batch_id, files, manifest=manifest, uploader=uploader, parent_pi=parent_pi
    )
    if manifest_doc is not None:
        r2.put_object(
            Bucket=target.bucket,
            Key=message["manifest_r2_key"],
            Body=json.dumps(manifest_doc).encode(),
            ContentType="application/json",
        )
        log(f"batch {batch_id}: file list written as manifest {message['manifest_r2_key']}")
    if via_api:
        from arke_local.client import OrchestratorClient

        OrchestratorClient(target.require_api()).test(message)
        log(f"batch {batch_id}: message posted to {target.require_api()}/test")
    else:
        sqs = target.aws("sqs")
        url = sqs.get_queue_url(QueueName=target.queue_name)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(message))
        log(f"batch {batch_id}: message sent to queue {target.queue_name}")
    return message
