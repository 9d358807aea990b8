"""Tasks finished per minute, counted as they finish (the console's chart).

A callback must stay O(1) (design.md invariant 4), so the chart is never computed from the
tasks: the transaction that ends an attempt also adds 1 to `c{i}` (completed) or `f{i}`
(failed) of the batch's TimelineSlot item for the current 10-minute slot, i the minute in
it. Retries that will run again are not counted, they have not finished. The counts live
off the batch item: that item is written by every claim and callback, and DynamoDB bills
each write by its size, so a map growing on it every minute would lower the batch's
ceiling from 250 tasks a second to 125 within the hour (docs/scale.md). Reading the chart
is one BatchGetItem of the batch's slots (60 for ten hours). The deciding parts are pure.
"""

from __future__ import annotations

from typing import Any

from .clock import iso
from .models import TIMELINE_SLOT_MINUTES, Batch, TimelineSlot
from .transitions import Move

MINUTE_MS = 60_000
RATE_WINDOW_MIN = 5  # the ETA uses the rate of the last five minutes
KINDS = {Move.COMPLETE: "c", Move.FAIL: "f"}


def minute_of(ms: int) -> int:
    return int(ms) // MINUTE_MS


def slot_key(batch_id: str, minute: int) -> str:
    return f"#timeline#{batch_id}#{minute // TIMELINE_SLOT_MINUTES}"


def count(tx: Any, batch_id: str, move: Move, now: int) -> None:
    """Add, inside the attempt's transaction, one task ending with `move` in the current
    minute; nothing for a retry."""
    kind = KINDS.get(move)
    if kind is None:
        return
    minute = minute_of(now)
    counter = getattr(TimelineSlot, f"{kind}{minute % TIMELINE_SLOT_MINUTES}")
    tx.update(TimelineSlot(slot_key(batch_id, minute)), actions=[counter.add(1)])


def record_pool(batch_id: str, live: int, now: int) -> None:
    """The pool's size this minute (the last pass of the minute wins), in the same slot."""
    minute = minute_of(now)
    attribute = getattr(TimelineSlot, f"p{minute % TIMELINE_SLOT_MINUTES}")
    TimelineSlot(slot_key(batch_id, minute)).update(actions=[attribute.set(live)])


def counts(batch: Batch, now: int) -> dict[str, int]:
    """The batch's counts as `c<minute>`/`f<minute>` -> n, from its start (a restart's
    earlier run counted before it) to its end or now: one BatchGetItem of its slots."""
    first, last = minute_of(batch.started_at), minute_of(batch.completed_at or now)
    keys = sorted({slot_key(batch.batch_id, m) for m in range(first, last + 1, TIMELINE_SLOT_MINUTES)}
                  | {slot_key(batch.batch_id, last)})
    found: dict[str, int] = {}
    for slot in TimelineSlot.batch_get(keys, consistent_read=True):
        base = int(slot.batch_id.rsplit("#", 1)[1]) * TIMELINE_SLOT_MINUTES
        for i in range(TIMELINE_SLOT_MINUTES):
            for kind in ("c", "f", "p"):
                value = getattr(slot, f"{kind}{i}")
                if value and base + i >= first:
                    found[f"{kind}{base + i}"] = int(value)
    return found


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
    raw = counts(batch, now)
    series = points({k: v for k, v in raw.items() if not k.startswith("p")})
    if series and batch.completed_at is None:  # still running: quiet minutes up to now show
        series += [(m, 0, 0) for m in range(series[-1][0] + 1, minute_of(now) + 1)]
    total, done = int(batch.tasks_total or 0), int(batch.tasks_completed or 0)
    rate = rate_per_minute(series, now)
    return {"batch_id": batch.batch_id, "status": batch.status, "bucket_seconds": MINUTE_MS // 1000,
            "points": [{"minute": iso(m * MINUTE_MS), "completed": c, "failed": f} for m, c, f in series],
            "rate_per_minute": round(rate, 2),
            "eta_seconds": eta_seconds(total - done - int(batch.tasks_failed or 0), rate),
            "machines": pool_points(raw)}


def pool_points(raw: dict[str, int]) -> list[dict[str, Any]]:
    """The pool's size per minute (what the minute's last pass saw), for the chart."""
    minutes = sorted((int(k[1:]), int(v)) for k, v in raw.items() if k.startswith("p") and k[1:].isdigit())
    return [{"minute": iso(m * MINUTE_MS), "live": live} for m, live in minutes]
