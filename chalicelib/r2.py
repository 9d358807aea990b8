"""R2 (S3-compatible) access for the orchestrator: reading a batch's manifest, and a TIFF's
header by ranged GETs (to size its machine) without downloading the image.

The endpoint is the account's (`https://{R2_ACCOUNT_ID}.r2.cloudflarestorage.com`) unless
`R2_ENDPOINT_URL` overrides it (the local stack points it at moto).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from .errors import ManifestError
from .settings import Settings
from .tiff_header import ImageHeader, TiffHeaderError, read_header

MAX_MANIFEST_BYTES = 256 * 1024 * 1024
HEADER_CHUNK_BYTES = 64 * 1024  # one GET holds the header and, mostly, the first IFD
MAX_HEADER_GETS = 4  # header, IFD at the end, out-of-line values: more is not a header
# A header read holds up one spawn thread: short, and retried once (then the default size).
HEADER_READ_TIMEOUT_S = 5
HEADER_CONNECT_TIMEOUT_S = 2
HEADER_READ_ATTEMPTS = 2


def endpoint_url(settings: Settings, secrets: Mapping[str, str]) -> str:
    if settings.r2_endpoint_url:
        return settings.r2_endpoint_url
    return f"https://{secrets.get('R2_ACCOUNT_ID', '')}.r2.cloudflarestorage.com"


def client(settings: Settings, secrets: Mapping[str, str], read_timeout_s: int = 30,
           attempts: int = 3, connect_timeout_s: int = 5):  # noqa: ANN201 - boto3 client
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url(settings, secrets),
        aws_access_key_id=secrets.get("R2_ACCESS_KEY_ID") or None,
        aws_secret_access_key=secrets.get("R2_SECRET_ACCESS_KEY") or None,
        region_name="auto" if not settings.r2_endpoint_url else settings.region,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=connect_timeout_s,
                      read_timeout=read_timeout_s),
    )


def presigner(settings: Settings, secrets: Mapping[str, str]) -> Callable[[str, str, int], str]:
    """Signs URLs locally (no request): GET for an input, PUT (image/jpeg) for an output."""
    s3 = client(settings, secrets)

    def presign(method: str, key: str, expires_s: int) -> str:
        params = {"Bucket": settings.r2_bucket, "Key": key}
        if method == "put":
            params["ContentType"] = "image/jpeg"
        operation = {"get": "get_object", "put": "put_object"}[method]
        return s3.generate_presigned_url(operation, Params=params, ExpiresIn=max(1, expires_s))

    return presign


def read_manifest(settings: Settings, secrets: Mapping[str, str], key: str) -> bytes:
    """The manifest's bytes. A missing object is a ManifestError (the batch fails);
    other errors propagate so the queue retries the message."""
    try:
        obj = client(settings, secrets).get_object(Bucket=settings.r2_bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise ManifestError(f"manifest {key} not found in R2 bucket {settings.r2_bucket}") from None
        raise
    if obj.get("ContentLength", 0) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest {key} is larger than {MAX_MANIFEST_BYTES} bytes")
    return obj["Body"].read()


def read_tiff_header(s3, bucket: str, key: str) -> ImageHeader:  # noqa: ANN001 - boto3 client
    """The first image's header, in a few ranged GETs: the first chunk, then the IFD
    where its offset points when that is past the chunk (streamed writers put it at the
    end), then any values stored beyond both. Raises TiffHeaderError or boto's errors."""
    chunks: list[tuple[int, bytes]] = []

    def read(offset: int, length: int) -> bytes:
        for start, data in chunks:
            if start <= offset and offset + length <= start + len(data):
                return data[offset - start:offset - start + length]
        if len(chunks) >= MAX_HEADER_GETS:
            raise TiffHeaderError(f"TIFF header of {key} needs more than {MAX_HEADER_GETS} reads")
        size = max(length, HEADER_CHUNK_BYTES)
        try:
            body = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + size - 1}")["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":  # offset past the end
                return b""
            raise
        data = body.read(size)  # never more, even from a server that ignored the Range
        body.close()
        chunks.append((offset, data))
        return data[:length]

    return read_header(read)
