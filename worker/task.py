"""Contract mode: one task of contracts §3 from start to callback.

download (R2) -> convert (forked, time-bounded) -> upload (R2) -> callback. Every failure
on the way becomes the error callback's `error` text; only an undeliverable callback or
an unusable environment ends without one. Exit codes: 0 success, 1 the task failed and
that was reported, 2 bad environment (reported by an error callback when CALLBACK_URL is
there), 3 the callback could not be delivered.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback

from worker.callback import deliver
from worker.exceptions import CallbackDeliveryError, ConfigError, ConversionError, WorkerError
from worker.keys import file_name, jpeg_key
from worker.log import TaskLog
from worker.settings import ContractSettings, Limits

EXIT_OK, EXIT_TASK_FAILED, EXIT_BAD_ENV, EXIT_NO_CALLBACK = 0, 1, 2, 3


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


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


def error_body(settings: ContractSettings, message: str, code: str = "internal") -> dict:
    """contracts §3's error callback plus `error_code`, the machine-readable kind of
    failure (worker.exceptions) the orchestrator's retry decision reads."""
    return {
        "task_id": settings.task_id,
        "batch_id": settings.batch_id,
        "status": "error",
        "error": message,
        "error_code": code,
    }


def run_from_env(env=None) -> int:
    env = os.environ if env is None else env
    try:
        settings = ContractSettings.from_env(env)
        limits = Limits.from_env(env)
    except ConfigError as exc:
        log = TaskLog(env.get("BATCH_ID", "-"), env.get("TASK_ID", "-"))
        log.error(f"cannot start: {exc}")
        return _report_bad_environment(env, str(exc), log)
    return run_task(settings, limits)


def _report_bad_environment(env, message: str, log: TaskLog) -> int:
    """Tell the orchestrator now rather than leave it to time the task out, when the
    environment at least says where to call back."""
    url = env.get("CALLBACK_URL", "").strip()
    if not url:
        return EXIT_BAD_ENV
    body = {
        "task_id": env.get("TASK_ID", "").strip(),
        "batch_id": env.get("BATCH_ID", "").strip(),
        "status": "error",
        "error": f"Invalid worker environment: {message}",
        "error_code": ConfigError.code,
    }
    try:
        deliver(url, body, token=env.get("CALLBACK_TOKEN", "").strip() or None, attempts=3,
                backoff_s=1.0, timeout_s=15.0, log=log)  # fmt: skip
    except CallbackDeliveryError as exc:
        log.error(f"exiting without a callback: {exc}")
    return EXIT_BAD_ENV


def _storage(settings: ContractSettings):  # noqa: ANN202 - R2 or PresignedTransfer
    """Presigned URLs when the orchestrator gave them (no keys on the machine), else the
    seed's way: boto3 with the R2 account keys."""
    if settings.input_url and settings.output_url:
        from worker.presigned import PresignedTransfer

        return PresignedTransfer(settings.input_url, settings.output_url)
    from worker.r2 import R2

    return R2(settings, settings.part_size)


def run_task(settings: ContractSettings, limits: Limits) -> int:
    from worker.convert import convert_file

    secrets = (settings.r2_access_key_id, settings.r2_secret_access_key, settings.r2_account_id,
               settings.callback_token or "", settings.input_url or "", settings.output_url or "")  # fmt: skip
    log = TaskLog(settings.batch_id, settings.task_id, secrets)
    started = time.monotonic()
    output_key = settings.output_r2_key or jpeg_key(settings.input_r2_key)
    log.info(f"start: {settings.input_r2_key} -> {output_key}")
    workdir = tempfile.mkdtemp(prefix="tiff-worker-", dir=settings.workdir)
    tiff_path = os.path.join(workdir, "input.tif")
    jpeg_path = os.path.join(workdir, "output.jpg")
    timings = {"download": 0, "conversion": 0, "upload": 0}
    try:
        step = time.monotonic()
        r2 = _storage(settings)
        r2.download(settings.input_r2_key, tiff_path)
        timings["download"] = _ms(time.monotonic() - step)
        log.info(f"downloaded {os.path.getsize(tiff_path)} bytes in {timings['download']} ms")

        step = time.monotonic()
        try:
            report = convert_file(tiff_path, jpeg_path, limits)
        except ConversionError as exc:  # same class, so the same error_code
            raise type(exc)(f"Failed to convert TIFF: {exc}") from None
        timings["conversion"] = _ms(time.monotonic() - step)
        log.info(f"converted in {timings['conversion']} ms: {report.summary()}")
        if report.pages > 1:
            log.info(f"multi-page TIFF: {report.pages} pages, converted page 1")
        os.remove(tiff_path)

        step = time.monotonic()
        size = os.path.getsize(jpeg_path)
        r2.upload(jpeg_path, output_key)
        timings["upload"] = _ms(time.monotonic() - step)
        log.info(f"uploaded {size} bytes to {output_key} in {timings['upload']} ms")
        timings["total"] = _ms(time.monotonic() - started)
        body = success_body(settings, output_key, size, timings)
    except WorkerError as exc:
        body = error_body(settings, log.redact(str(exc)), exc.code)
        log.error(f"failed: {body['error']}")
    except Exception as exc:  # a bug of ours: report it, keep the traceback in the log
        body = error_body(
            settings, log.redact(f"Internal worker error: {type(exc).__name__}: {exc}")
        )
        log.error(f"failed: {body['error']}")
        for line in traceback.format_exc().splitlines():
            log.error(line)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    try:
        deliver(
            settings.callback_url,
            body,
            token=settings.callback_token,
            attempts=settings.callback_attempts,
            backoff_s=settings.callback_backoff_s,
            timeout_s=settings.callback_timeout_s,
            log=log,
        )
    except CallbackDeliveryError as exc:
        log.error(f"exiting without a callback: {exc}")
        return EXIT_NO_CALLBACK
    status = body["status"]
    log.info(f"done: {status} in {_ms(time.monotonic() - started)} ms")
    return EXIT_OK if status == "success" else EXIT_TASK_FAILED
