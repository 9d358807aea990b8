"""Time in one place: epoch milliseconds for storage, ISO-8601 for answers."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int | float | None) -> str | None:
    if ms is None:
        return None
    stamp = datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
