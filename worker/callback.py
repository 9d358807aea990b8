"""Delivers the callback to the orchestrator: POST JSON to CALLBACK_URL exactly as given
(query string included), `Authorization: Bearer` when a token is configured, retried
with exponential backoff and jitter a bounded number of times on network errors, 408,
429 and 5xx. Raises `CallbackDeliveryError` when it cannot deliver."""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from worker.exceptions import CallbackDeliveryError
from worker.log import TaskLog

RETRYABLE = {408, 425, 429, 500, 502, 503, 504}
MAX_DELAY_S = 30.0


def deliver(
    url: str,
    body: dict,
    *,
    token: str | None,
    attempts: int,
    backoff_s: float,
    timeout_s: float,
    log: TaskLog,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """POST `body`; returns the HTTP status of the accepted attempt."""
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "arke-tiff-worker"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    last = "no attempt made"
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        retry_after = None
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                response.read()
                log.info(f"callback delivered ({response.status}) on attempt {attempt}")
                return response.status
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.reason}"
            if exc.code not in RETRYABLE:
                raise CallbackDeliveryError(f"callback rejected: {last}") from None
            retry_after = _retry_after(exc.headers.get("Retry-After"))
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            last = f"{type(reason).__name__}: {reason}"
        if attempt == attempts:
            break
        delay = min(MAX_DELAY_S, backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_DELAY_S))
        log.info(
            f"callback attempt {attempt}/{attempts} failed ({last}); retrying in {delay:.2f} s"
        )
        sleep(delay)
    raise CallbackDeliveryError(f"callback not delivered after {attempts} attempts: {last}")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
