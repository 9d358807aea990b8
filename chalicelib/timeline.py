"""Tasks finished per minute, kept on the batch item as they finish (the console's chart).

A callback must stay O(1) (design.md invariant 4), so the chart is never computed from the
tasks: the transaction that ends an attempt also adds 1 to the batch's `timeline` map under
`c<minute>` (completed) or `f<minute>` (failed), minutes since the epoch. Reading the chart
is reading the batch item. The map grows by one or two entries (~15 bytes each) per minute
in which tasks end, which a batch item of a few KB carries; retries that will run again are
not counted, they have not finished. The deciding parts here are pure.
"""

from __future__ import annotations

from typing import Any

from .clock import iso
from .models import Batch
from .transitions import Move

MINUTE_MS = 60_000
RATE_WINDOW_MIN = 5  # the ETA uses the rate of the last five minutes
KINDS = {Move.COMPLETE: "c", Move.FAIL: "f"}


def minute_of(ms: int) -> int:
    return int(ms) // MINUTE_MS


def count_action(move: Move, now: int) -> list[Any]:
    """The update action (for the batch item, inside the attempt's transaction) that counts
    one task ending with `move` in the current minute; none for a retry."""
    kind = KINDS.get(move)
    if kind is None:
        return []
    slot = Batch.timeline[f"{kind}{minute_of(now)}"]
    return [slot.set((slot | 0) + 1)]


def points(timeline: dict[str, Any] | None) -> list[tuple[int, int, int]]:
    """The map as (minute, completed, failed), oldest first, empty minutes filled in."""
    counts: dict[int, list[int]] = {}
    for key, value in (timeline or {}).items():
        if key[:1] in ("c", "f") and key[1:].isdigit():
            counts.setdefault(int(key[1:]), [0, 0])["cf".index(key[0])] += int(value)
    if not counts:
        return []
    return [(m, *counts.get(m, [0, 0])) for m in range(min(counts), max(counts) + 1)]


def rate_per_minute(series: list[tuple[int, int, int]], now: int) -> float:
    """Tasks ended per minute over the last RATE_WINDOW_MIN minutes, the current minute
    counting for the part of it that has passed (a batch younger than the window counts
    from its first minute)."""
    if not series:
        return 0.0
    current = minute_of(now)
    first = max(current - RATE_WINDOW_MIN + 1, series[0][0])
    ended = sum(c + f for m, c, f in series if first <= m <= current)
    span = (current - first) + (now % MINUTE_MS) / MINUTE_MS
    return ended / max(span, 1 / 6)  # never divide by less than 10 s


def eta_seconds(remaining: int, rate: float) -> int | None:
    """Seconds until `remaining` tasks end at `rate` a minute; None when nothing moves."""
    if remaining <= 0:
        return 0
    if rate <= 0:
        return None
    return int(round(remaining / rate * 60))


def timeline_json(batch: Batch, now: int) -> dict[str, Any]:
    """GET /status/{batchId}/timeline: the chart, the recent rate and the ETA it gives."""
    raw = batch.timeline.as_dict() if batch.timeline is not None else {}
    series = points(raw)
    if series and batch.completed_at is None:  # still running: quiet minutes up to now show
        series += [(m, 0, 0) for m in range(series[-1][0] + 1, minute_of(now) + 1)]
    total, done = int(batch.tasks_total or 0), int(batch.tasks_completed or 0)
    rate = rate_per_minute(series, now)
    return {"batch_id": batch.batch_id, "status": batch.status, "bucket_seconds": MINUTE_MS // 1000,
            "points": [{"minute": iso(m * MINUTE_MS), "completed": c, "failed": f} for m, c, f in series],
            "rate_per_minute": round(rate, 2),
            "eta_seconds": eta_seconds(total - done - int(batch.tasks_failed or 0), rate),
            "machines": pool_points(batch)}


def pool_points(batch: Batch) -> list[dict[str, Any]]:
    """The pool's size per minute (what the pass saw last in that minute), for the chart."""
    raw = batch.pool_timeline.as_dict() if batch.pool_timeline is not None else {}
    minutes = sorted((int(k[1:]), int(v)) for k, v in raw.items() if k.startswith("m") and k[1:].isdigit())
    return [{"minute": iso(m * MINUTE_MS), "live": live} for m, live in minutes]
