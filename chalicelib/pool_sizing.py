"""Placeholder of the pool sizing module (the helper's version replaces it)."""

from __future__ import annotations

import math
from dataclasses import dataclass


def makespan_bound_s(tasks: int, task_s: float, create_rate: float, boot_s: float,
                     per_machine: int = 1, burst: int = 0) -> float:
    work = tasks * task_s / per_machine
    x = (-burst + math.sqrt(burst * burst + 2 * create_rate * work)) / create_rate
    return boot_s + x


@dataclass(frozen=True)
class PoolInputs:
    ready: int
    running: int
    live: int
    task_s: float
    create_rate: float
    boot_s: float
    per_machine: int
    batch_cap: int
    free_slots: int
    fair_share: int


@dataclass(frozen=True)
class PoolDecision:
    target: int
    create: int
    reason: str


def decide(i: PoolInputs) -> PoolDecision:
    if i.ready <= 0:
        return PoolDecision(i.live, 0, "no work")
    rate = i.per_machine / i.task_s
    m = 0
    while True:
        n = m + 1
        t = n / i.create_rate + i.boot_s
        drained = rate * (i.live * t + n * (n - 1) / (2 * i.create_rate))
        if i.ready - drained < i.per_machine and not (i.live == 0 and m == 0):
            break
        m = n
        if m > 100000:
            break
    want = m
    reason = "queue would empty first"
    for limit, why in ((i.batch_cap - i.live, "batch cap"), (i.free_slots, "global cap"),
                       (i.fair_share - i.live, "fair share")):
        if limit < want:
            want, reason = max(0, limit), why
    return PoolDecision(i.live + want, want, reason)


def fair_share(global_cap: int, pooled_batches: int, batch_live: int, others_live: int) -> int:
    share = max(1, global_cap // max(1, pooled_batches))
    return max(share, global_cap - others_live)


def moving_average_ms(previous: float | None, window_total_ms: int, window_count: int, prior_ms: float,
                      alpha: float = 0.3) -> float:
    if window_count <= 0:
        return previous if previous is not None else prior_ms
    sample = window_total_ms / window_count
    return sample if previous is None else alpha * sample + (1 - alpha) * previous
