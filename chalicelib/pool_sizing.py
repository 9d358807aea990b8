"""How many pool machines a batch should have: the makespan bound and the per-pass decision.

Pure arithmetic, no I/O: it never reads DynamoDB, Fly or the clock, and imports nothing from
`store` or `models`. The runner gathers the inputs (ready and running tasks, live machines,
the observed seconds per task, the create rate, the caps) and carries out what `decide`
returns; the benchmark prints `makespan_bound_s` beside what it measured (issue 10).

The model: machines are created at the token bucket's rate r (after B at once, the bucket's
burst), each boots for b seconds and then converts c tasks at a time, s seconds each, back
to back until no task is left. A machine created at t works from t + b until the end T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _work_time_s(tasks: int, task_s: float, create_rate: float, per_machine: int, burst: int) -> float:
    """x, the time after the first boot that the pool needs: the root of
    r*x^2/2 + B*x = N*s/c (B machines work all of x, the rest arrive at rate r)."""
    work = tasks * task_s / per_machine
    if create_rate <= 0:
        return work / burst if burst > 0 else math.inf
    return (-burst + math.sqrt(burst * burst + 2 * create_rate * work)) / create_rate


def makespan_bound_s(tasks: int, task_s: float, create_rate: float, boot_s: float,
                     per_machine: int = 1, burst: int = 0) -> float:
    """b + x where r*x^2/2 + B*x = N*s/c (machines created at rate r after B at once, each working
    from its boot until the end); with B=0 this is b + sqrt(2*N*s/(c*r)).

    Never less than b + s: one task runs whole on a booted machine. No task: 0.
    """
    if tasks <= 0:
        return 0.0
    return boot_s + max(task_s, _work_time_s(tasks, task_s, create_rate, max(1, per_machine), max(0, burst)))


def pool_size_at_bound(tasks: int, task_s: float, create_rate: float, boot_s: float,
                       per_machine: int = 1, burst: int = 0) -> int:
    """about r*(T - b - s) (+ the burst): the pool the bound is reached with.

    A machine created later than T - b - s would not finish one task before the end, so
    creation stops there; never more machines than there are slots' worth of tasks.
    """
    if tasks <= 0:
        return 0
    c = max(1, per_machine)
    spare = makespan_bound_s(tasks, task_s, create_rate, boot_s, c, burst) - boot_s - task_s
    machines = round(create_rate * max(0.0, spare)) + max(0, burst)
    return max(1, min(machines, math.ceil(tasks / c)))


@dataclass(frozen=True)
class PoolInputs:
    """What one pass knows about one batch's pool; the runner reads it, decide() only uses it."""

    ready: int            # pending tasks due now or soon
    running: int          # tasks processing now
    live: int             # this batch's machines not gone (creating or running)
    task_s: float         # observed seconds per task (moving average) or the prior
    create_rate: float    # creations per second available to this batch
    boot_s: float         # seconds from creation to first pull
    per_machine: int      # WORKER_CONCURRENCY
    batch_cap: int        # MAX_POOL_MACHINES_PER_BATCH
    free_slots: int       # global MAX_MACHINES_IN_FLIGHT minus machines in flight (all batches)
    fair_share: int       # this batch's share of the global cap (see fair_share below)
    stopped: int = 0      # the standing pool's stopped machines this pass may start
    start_s: float = 0.0  # seconds from a stopped machine's start to its first pull


@dataclass(frozen=True)
class PoolDecision:
    """What the pass should do, and the words its log line gives for why."""

    target: int           # machines this batch should have
    create: int           # new machines to create now (target - live, >= 0)
    reason: str           # short words for the log: "queue would empty first", "batch cap", ...


QUEUE_EMPTIES = "queue would empty first"
NO_WORK = "no work"
NO_READY = "no ready tasks"
BATCH_CAP = "batch cap"
GLOBAL_CAP = "global cap"
FAIR_SHARE = "fair share"


def arrival_s(inputs: PoolInputs, m: int) -> float:
    """When the m-th new machine (m = 1, 2, ...) starts working: a stopped one of the
    standing pool at its start time (starts are limited per machine: all at once), a
    created one at its turn of the create rate plus its boot."""
    if m <= inputs.stopped:
        return inputs.start_s
    return (m - inputs.stopped) / inputs.create_rate + inputs.boot_s


def remaining_at(inputs: PoolInputs, m: int) -> float:
    """Ready tasks left when the m-th new machine (m = 1, 2, ...) starts working.

    By then the live pool (all of it counted as working, a slight overestimate while some
    still boot) has worked live*t(m) machine-seconds, t(m) = arrival_s(m); the started
    stopped machines before it (t(m) - start_s) each, and the created ones before it
    (m-j)/r each, (m-S)(m-S-1)/(2r) together; a machine-second takes c/s tasks. Tasks are
    whole, though: each earlier new machine took a full slot (c tasks) the moment it
    started, so at least c*(m-1) are gone to them whatever the seconds say (for a short
    queue the seconds alone would send 3 machines to 2 tasks).
    """
    r, c = inputs.create_rate, max(1, inputs.per_machine)
    if r <= 0 and m > inputs.stopped:
        return -math.inf
    t, stopped = arrival_s(inputs, m), min(inputs.stopped, m - 1)
    created_before = max(0, m - 1 - inputs.stopped)
    seconds = stopped * (t - inputs.start_s) + created_before * (created_before + 1) / (2 * r) if r > 0 else 0.0
    live_tasks = c / inputs.task_s * inputs.live * t
    new_tasks = max(c / inputs.task_s * seconds, c * (m - 1))
    return inputs.ready - live_tasks - new_tasks


def worth_creating(inputs: PoolInputs) -> int:
    """How many new machines would each still find at least a full slot of work (c tasks)
    when they boot: the largest m with remaining_at(m) >= c. Remaining falls as m grows, so
    a doubling search and a bisection find it in O(log m) steps, exactly."""
    c = max(1, inputs.per_machine)
    if inputs.ready <= 0 or (inputs.create_rate <= 0 and inputs.stopped <= 0) or inputs.task_s <= 0:
        return 0
    low, high = 0, 1  # remaining_at(low) >= c holds (or low is 0); find a high where it fails
    while remaining_at(inputs, high) >= c:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if remaining_at(inputs, middle) >= c:
            low = middle
        else:
            high = middle
    return low


def decide(inputs: PoolInputs) -> PoolDecision:
    """The batch's pool this pass: as many new machines as would still find work before the
    queue empties (at least one when the batch has none and tasks are ready), then clipped
    by the batch cap, the free global slots and the batch's fair share.

    `target` may come out below `live` when a cap or the fair share has shrunk under the
    pool (another batch arrived): nothing is created and the caller may retire the surplus
    (`live - target` machines, told "exit" at their next pull) so no batch starves.
    """
    if inputs.ready <= 0:
        want, why = 0, NO_WORK if inputs.running <= 0 else NO_READY
    else:
        want, why = worth_creating(inputs), QUEUE_EMPTIES
        if inputs.live == 0:
            want = max(1, want)
    limits = [
        (inputs.live + want, why),
        (inputs.batch_cap, BATCH_CAP),
        (inputs.live + max(0, inputs.free_slots), GLOBAL_CAP),
        (inputs.fair_share, FAIR_SHARE),
    ]
    target, reason = min(limits, key=lambda limit: limit[0])  # first of equals: the demand
    target = max(0, target)
    return PoolDecision(target, max(0, target - inputs.live), reason)


def fair_share(global_cap: int, pooled_batches: int, batch_live: int, others_live: int) -> int:
    """This batch's share of the global machine cap, when `pooled_batches` batches (this one
    included) run pools at once.

    The rule: each pooled batch is owed `global_cap // pooled_batches`, at least 1 (its base).
    A batch may have more, out of what the others leave unused: the cap minus what the others
    hold or are owed, whichever is more. So

        share = max(base, global_cap - max(others_live, (pooled_batches - 1) * base))

    A batch alone gets the whole cap. When a second batch arrives with no machines, the first
    one's share drops to its base at once (the newcomer is owed its base before it holds it),
    so the first stops creating and may retire its surplus: the small batch is never starved
    by a huge one that got there first. `batch_live` does not change the share (it cancels
    out of "base plus what the others leave unused"); it is taken so every caller passes the
    whole picture and a negative count is caught.
    """
    if min(global_cap, batch_live, others_live) < 0:
        raise ValueError("fair_share: negative count")
    batches = max(1, pooled_batches)
    base = max(1, global_cap // batches)
    owed_to_others = max(others_live, (batches - 1) * base)
    return max(base, global_cap - owed_to_others)


# The least seconds per task the pool is sized with: a pull, a download, an upload and a
# callback take a few round trips whatever the image. A smaller estimate (workers that
# report 0 ms) would have the live pool "drain" any queue at once and freeze its growth.
MIN_TASK_MS = 250.0
# The most one window may move the average towards its mean: a factor of it. One absurd
# result (a worker's clock, a bug) then shifts the pool for a pass or two, not a hundred.
MAX_WINDOW_STEP = 4.0


def moving_average_ms(previous: float | None, window_total_ms: int, window_count: int, prior_ms: float,
                      alpha: float = 0.3) -> float:
    """Seconds-per-task estimate (in ms) after one more window of results.

    Before the first result: the prior. The first window replaces the prior (it is a guess);
    each later window moves the average `alpha` of the way to the window's mean, the mean
    first bounded to within MAX_WINDOW_STEP times the average, so one slow window does not
    double the pool and a lasting change is followed within a few passes. An empty window
    changes nothing. Never below MIN_TASK_MS.
    """
    if window_count < 0 or window_total_ms < 0:
        raise ValueError("moving_average_ms: negative window")
    if not 0 < alpha <= 1:
        raise ValueError("moving_average_ms: alpha must be in (0, 1]")
    if window_count == 0:
        return max(MIN_TASK_MS, prior_ms if previous is None else previous)
    mean = window_total_ms / window_count
    if previous is None:
        return max(MIN_TASK_MS, mean)
    previous = max(MIN_TASK_MS, previous)
    mean = min(max(mean, previous / MAX_WINDOW_STEP), previous * MAX_WINDOW_STEP)
    return max(MIN_TASK_MS, previous + alpha * (mean - previous))
