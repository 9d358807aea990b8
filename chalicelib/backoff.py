"""Backoff delays: exponential, capped, with jitter so retries of many tasks spread out."""

from __future__ import annotations

import random


def exponential_ms(failures: int, cap_ms: int, base_ms: int = 1000) -> int:
    """The seed's batch-error delay: min(cap, base * 2^failures), no jitter."""
    return int(min(cap_ms, base_ms * 2 ** max(0, failures)))


def jittered_ms(failures: int, cap_ms: int, rng: random.Random | None = None) -> int:
    """Delay before retry number `failures`: half to all of the exponential delay."""
    full = exponential_ms(failures, cap_ms)
    return int(full * (0.5 + 0.5 * (rng or random).random()))
