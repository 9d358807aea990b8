"""R2 access for the worker (boto3, S3 API): stream the TIFF to disk, stream the JPEG
up from disk (multipart past 16 MiB). Errors become `DownloadError`/`UploadError` with
the contract's wording, e.g. `Failed to download TIFF: 404 Not Found`."""

from __future__ import annotations

import http

from worker.exceptions import DownloadError, InputMissingError, UploadError
from worker.settings import ContractSettings

PART_SIZE = 16 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's (and R2's) smallest part but the last


class R2:
    def __init__(self, settings: ContractSettings, part_size: int = PART_SIZE):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = settings.r2_bucket
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=settings.r2_access_key_id,
            aws_secret_access_key=settings.r2_secret_access_key,
            region_name="auto",
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                # R2 does not take boto3's default CRC checksums on every request.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=max(part_size, MIN_PART_SIZE),
            multipart_chunksize=max(part_size, MIN_PART_SIZE),
            max_concurrency=4,
            use_threads=True,
        )

    def download(self, key: str, path: str) -> None:
        try:
            self.client.download_file(self.bucket, key, path, Config=self.transfer)
        except Exception as exc:
            error = InputMissingError if is_missing(exc) else DownloadError
            raise error(f"Failed to download TIFF: {describe(exc)}") from None

    def upload(self, path: str, key: str) -> None:
        try:
            self.client.upload_file(
                path, self.bucket, key,
                ExtraArgs={"ContentType": "image/jpeg"},
                Config=self.transfer,
            )  # fmt: skip
        except Exception as exc:
            raise UploadError(f"Failed to upload JPEG: {describe(exc)}") from None


def status_text(status: int, fallback: str = "") -> str:
    """`404 Not Found`: the status and its reason phrase, as the seed wrote errors."""
    try:
        phrase = http.HTTPStatus(int(status)).phrase
    except ValueError:
        phrase = fallback
    return f"{status} {phrase}".strip()


def is_missing(exc: Exception) -> bool:
    """R2 says the object does not exist: HTTP 404 or the NoSuchKey code (HEAD and
    GET answer differently)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def describe(exc: Exception) -> str:
    """`404 Not Found` for an HTTP error from S3, else the exception's own words."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        error = response.get("Error", {})
        if status:  # as the seed said it: status and reason phrase
            return status_text(status, error.get("Message") or error.get("Code", ""))
    cause = getattr(exc, "last_exception", None) or exc
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
