"""Downloads the JPEGs of a batch from R2 (`staging/{batch}/...`) to a local folder,
keeping their relative paths. Reads only; never deletes anything in R2."""

from __future__ import annotations

from pathlib import Path


def list_jpegs(r2, bucket: str, batch_id: str) -> list[dict]:
    prefix = f"staging/{batch_id}/"
    found = []
    for page in r2.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].lower().endswith((".jpg", ".jpeg")):
                found.append(obj)
    return found


def fetch_jpegs(r2, bucket: str, batch_id: str, folder: Path) -> list[Path]:
    prefix = f"staging/{batch_id}/"
    paths = []
    for obj in list_jpegs(r2, bucket, batch_id):
        rel = obj["Key"][len(prefix):]
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        r2.download_file(bucket, obj["Key"], str(dest))
        paths.append(dest)
    return paths
