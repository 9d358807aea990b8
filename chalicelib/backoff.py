"""Backoff delays: exponential, capped, with jitter so retries of many tasks spread out."""

from __future__ import annotations

import random


def exponential_ms(failures: int, cap_ms: int, base_ms: int = 1000) -> int:
    """The seed's batch-error delay: min(cap, base * 2^failures), no jitter."""
    # The exponent is bounded: a count from outside (a callback's ?attempt=) must not make
    # Python build a huge integer; 2**40 s is past any cap already.
    return int(min(cap_ms, base_ms * 2 ** min(max(0, failures), 40)))


def jittered_ms(failures: int, cap_ms: int, rng: random.Random | None = None) -> int:
    """Delay before retry number `failures`: half to all of the exponential delay."""
    full = exponential_ms(failures, cap_ms)
    return int(full * (0.5 + 0.5 * (rng or random).random()))
