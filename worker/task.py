"""Contract mode: one task of contracts §3 from start to callback.

download (R2) -> convert (forked, time-bounded) -> upload (R2) -> callback. Every failure
on the way becomes the error callback's `error` text; only an undeliverable callback or
an unusable environment ends without one. Exit codes: 0 success, 1 the task failed and
that was reported, 2 bad environment (reported by an error callback when CALLBACK_URL is
there), 3 the callback could not be delivered. The steps themselves live in
worker.steps, shared with pool mode (worker.pool).
"""

from __future__ import annotations

import os
import time

from worker.callback import deliver
from worker.exceptions import CallbackDeliveryError, ConfigError
from worker.log import TaskLog
from worker.settings import ContractSettings, Limits
from worker.steps import (
    error_body,
    ms,
    output_key_of,
    run_steps,
    secrets_of,
    send_callback,
    success_body,
)

__all__ = ["error_body", "run_from_env", "run_task", "success_body"]  # the bodies: worker.steps

EXIT_OK, EXIT_TASK_FAILED, EXIT_BAD_ENV, EXIT_NO_CALLBACK = 0, 1, 2, 3


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


def run_task(settings: ContractSettings, limits: Limits) -> int:
    log = TaskLog(settings.batch_id, settings.task_id, secrets_of(settings))
    started = time.monotonic()
    log.info(f"start: {settings.input_r2_key} -> {output_key_of(settings)}")
    body = run_steps(settings, limits, log, started)
    try:
        send_callback(settings, body, log)
    except CallbackDeliveryError as exc:
        log.error(f"exiting without a callback: {exc}")
        return EXIT_NO_CALLBACK
    status = body["status"]
    log.info(f"done: {status} in {ms(time.monotonic() - started)} ms")
    return EXIT_OK if status == "success" else EXIT_TASK_FAILED
