"""The steps of one task, shared by contract mode (worker.task) and pool mode
(worker.pool): download -> convert (forked child, worker.isolation) -> upload, turned
into the callback body of contracts §3, then the callback itself.

Every failure on the way becomes the error body's `error` text and `error_code`; the one
outcome that is not a body is `Cancelled` (pool mode: the orchestrator dropped the task),
which must reach the caller so that no callback is sent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import traceback

from worker.callback import deliver
from worker.exceptions import Cancelled, ConversionError, WorkerError
from worker.keys import file_name, jpeg_key
from worker.log import TaskLog
from worker.settings import ContractSettings, Limits


def ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def secrets_of(settings: ContractSettings) -> tuple[str, ...]:
    """What a task's log must never show: R2 keys, the callback token, signed URLs."""
    return (settings.r2_access_key_id, settings.r2_secret_access_key, settings.r2_account_id,
            settings.callback_token or "", settings.input_url or "", settings.output_url or "")  # fmt: skip


def output_key_of(settings: ContractSettings) -> str:
    """The key the orchestrator decided, else the seed's rule."""
    return settings.output_r2_key or jpeg_key(settings.input_r2_key)


def success_body(settings: ContractSettings, output_key: str, size: int, timings: dict) -> dict:
    return {
        "task_id": settings.task_id,
        "batch_id": settings.batch_id,
        "status": "success",
        "output_r2_key": output_key,
        "output_file_name": file_name(output_key),
        "output_file_size": size,
        "performance": {
            "total_time_ms": timings["total"],
            "download_time_ms": timings["download"],
            "conversion_time_ms": timings["conversion"],
            "upload_time_ms": timings["upload"],
        },
    }


def error_body(settings: ContractSettings, message: str, code: str = "internal", **extra) -> dict:
    """contracts §3's error callback plus `error_code`, the machine-readable kind of
    failure (worker.exceptions) the orchestrator's retry decision reads, and the
    failure's own fields (`WorkerError.callback_fields`: `memory_mb` of `needs_memory`)."""
    return {
        "task_id": settings.task_id,
        "batch_id": settings.batch_id,
        "status": "error",
        "error": message,
        "error_code": code,
        **extra,
    }


def storage(settings: ContractSettings):  # noqa: ANN201 - R2 or PresignedTransfer
    """Presigned URLs when the orchestrator gave them (no keys on the machine), else the
    seed's way: boto3 with the R2 account keys."""
    if settings.input_url and settings.output_url:
        from worker.presigned import PresignedTransfer

        return PresignedTransfer(settings.input_url, settings.output_url)
    from worker.r2 import R2

    return R2(settings, settings.part_size)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("the task was called off")


def run_steps(
    settings: ContractSettings,
    limits: Limits,
    log: TaskLog,
    started: float,
    cancel: threading.Event | None = None,
    store=None,  # noqa: ANN001 - R2 or PresignedTransfer
) -> dict:
    """download -> convert -> upload; returns the callback body (success or error).
    Raises `Cancelled` when `cancel` is set before or during a step (a conversion in
    progress is killed); nothing after that step runs. `store`: the transfer to use
    (pool mode keeps one R2 client for the machine), else `storage(settings)`."""
    from worker.convert import convert_file

    output_key = output_key_of(settings)
    workdir = tempfile.mkdtemp(prefix="tiff-worker-", dir=settings.workdir)
    tiff_path = os.path.join(workdir, "input.tif")
    jpeg_path = os.path.join(workdir, "output.jpg")
    timings = {"download": 0, "conversion": 0, "upload": 0}
    try:
        step = time.monotonic()
        r2 = store or storage(settings)
        r2.download(settings.input_r2_key, tiff_path)
        timings["download"] = ms(time.monotonic() - step)
        log.info(f"downloaded {os.path.getsize(tiff_path)} bytes in {timings['download']} ms")
        _check(cancel)

        step = time.monotonic()
        try:
            report = convert_file(tiff_path, jpeg_path, limits, cancel, settings.max_memory_mb)
        except ConversionError as exc:  # same class, so the same error_code
            raise type(exc)(f"Failed to convert TIFF: {exc}") from None
        timings["conversion"] = ms(time.monotonic() - step)
        log.info(f"converted in {timings['conversion']} ms: {report.summary()}")
        if report.pages > 1:
            log.info(f"multi-page TIFF: {report.pages} pages, converted page 1")
        os.remove(tiff_path)
        _check(cancel)

        step = time.monotonic()
        size = os.path.getsize(jpeg_path)
        r2.upload(jpeg_path, output_key)
        timings["upload"] = ms(time.monotonic() - step)
        log.info(f"uploaded {size} bytes to {output_key} in {timings['upload']} ms")
        timings["total"] = ms(time.monotonic() - started)
        return success_body(settings, output_key, size, timings)
    except Cancelled:
        raise
    except WorkerError as exc:
        body = error_body(settings, log.redact(str(exc)), exc.code, **exc.callback_fields())
        log.error(f"failed: {body['error']}")
        return body
    except Exception as exc:  # a bug of ours: report it, keep the traceback in the log
        body = error_body(
            settings, log.redact(f"Internal worker error: {type(exc).__name__}: {exc}")
        )
        log.error(f"failed: {body['error']}")
        for line in traceback.format_exc().splitlines():
            log.error(line)
        return body
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def send_callback(settings: ContractSettings, body: dict, log: TaskLog) -> None:
    """POST the body to the task's callback URL, with the task's Bearer token and
    worker.callback's bounded retries; raises `CallbackDeliveryError` when it cannot."""
    deliver(
        settings.callback_url,
        body,
        token=settings.callback_token,
        attempts=settings.callback_attempts,
        backoff_s=settings.callback_backoff_s,
        timeout_s=settings.callback_timeout_s,
        log=log,
    )
