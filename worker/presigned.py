"""Transfers through presigned URLs (INPUT_URL, OUTPUT_URL): no R2 keys on the machine.

The orchestrator signs one GET for the input and one PUT for the output, valid for the
task's timeout plus a margin. The worker streams the GET to disk and the PUT from disk
(one request; R2 and S3 take a single PUT up to 5 GB) with `Content-Type: image/jpeg`,
which the PUT was signed for. Errors read as the R2 path's do, e.g.
`Failed to download TIFF: 404 Not Found`. The URLs carry signatures: never log them.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request

from worker.exceptions import DownloadError, InputMissingError, UploadError
from worker.r2 import status_text

CHUNK = 1024 * 1024
TIMEOUT_S = 60.0


def _describe(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return status_text(exc.code, str(exc.reason or ""))
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class PresignedTransfer:
    def __init__(self, input_url: str, output_url: str, timeout_s: float = TIMEOUT_S) -> None:
        self.input_url, self.output_url, self.timeout_s = input_url, output_url, timeout_s

    def download(self, key: str, path: str) -> None:
        """`key` is only for the log's sake; the URL names the object."""
        try:
            with urllib.request.urlopen(self.input_url, timeout=self.timeout_s) as response, \
                    open(path, "wb") as out:
                shutil.copyfileobj(response, out, CHUNK)
        except (OSError, ValueError) as exc:
            missing = isinstance(exc, urllib.error.HTTPError) and exc.code == 404
            error = InputMissingError if missing else DownloadError
            raise error(f"Failed to download TIFF: {_describe(exc)}") from None

    def upload(self, path: str, key: str) -> None:
        size = os.path.getsize(path)
        try:
            with open(path, "rb") as body:
                request = urllib.request.Request(
                    self.output_url, data=body, method="PUT",
                    headers={"Content-Type": "image/jpeg", "Content-Length": str(size)},
                )
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
        except (OSError, ValueError) as exc:
            raise UploadError(f"Failed to upload JPEG: {_describe(exc)}") from None
