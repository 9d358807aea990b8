"""Pool sizing (chalicelib/pool_sizing.py), exhaustively and without DynamoDB: the makespan
bound, the per-pass decision and its caps, the fair share between batches, the moving
average, and a discrete-event simulation (simulated seconds, not wall clock) of decide()
run every second against Fly's token bucket, held against the bound."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

import pytest

from chalicelib.pool_sizing import (
    PoolDecision,
    PoolInputs,
    decide,
    fair_share,
    makespan_bound_s,
    moving_average_ms,
    pool_size_at_bound,
    remaining_at,
)

# Issue 10's example: 10,000 tasks of 3 s, one creation a second (burst 3), one conversion
# per machine, 5 s from creation to first pull.
N, S, R, C, B, BURST = 10_000, 3.0, 1.0, 1, 5.0, 3
UNBOUNDED = 10**9


def inputs(**changes) -> PoolInputs:
    """An empty pool facing the issue's batch, no cap in the way unless a test sets one."""
    base = PoolInputs(ready=N, running=0, live=0, task_s=S, create_rate=R, boot_s=B, per_machine=C,
                      batch_cap=UNBOUNDED, free_slots=UNBOUNDED, fair_share=UNBOUNDED)
    return replace(base, **changes)


# --- the bound --------------------------------------------------------------------------------

def test_bound_of_the_issues_example():
    assert makespan_bound_s(N, S, R, B, C, burst=BURST) == pytest.approx(247.0, abs=0.5)
    assert makespan_bound_s(N, S, R, B, C) == pytest.approx(249.95, abs=0.05)


GRID = list(itertools.product((1, 7, 300, 10_000, 250_000), (0.5, 3.0, 40.0), (0.25, 1.0, 5.0),
                              (0.0, 5.0, 30.0), (1, 2, 4)))


def test_bound_without_burst_is_the_closed_form():
    for n, s, r, b, c in GRID:
        expected = b + max(s, math.sqrt(2 * n * s / (c * r)))
        assert makespan_bound_s(n, s, r, b, c) == pytest.approx(expected), (n, s, r, b, c)


@pytest.mark.parametrize("burst", (1, 3, 50))
def test_bound_with_burst_solves_the_work_equation(burst):
    """The machines' working time adds up to the work: r*x^2/2 + B*x = N*s/c."""
    for n, s, r, b, c in GRID:
        x = makespan_bound_s(n, s, r, b, c, burst) - b
        if x > s:
            assert r * x * x / 2 + burst * x == pytest.approx(n * s / c), (n, s, r, b, c)
        else:  # so little work that one task's length is the bound
            assert r * s * s / 2 + burst * s >= n * s / c * (1 - 1e-9), (n, s, r, b, c)
            assert x == pytest.approx(s)


def test_bound_moves_the_right_way():
    for n, s, r, b, c in GRID:
        bound = makespan_bound_s(n, s, r, b, c, BURST)
        assert makespan_bound_s(2 * n, s, r, b, c, BURST) >= bound
        assert makespan_bound_s(n, 2 * s, r, b, c, BURST) >= bound
        assert makespan_bound_s(n, s, 2 * r, b, c, BURST) <= bound
        assert makespan_bound_s(n, s, r, b + 1, c, BURST) == pytest.approx(bound + 1)
        assert makespan_bound_s(n, s, r, b, 2 * c, BURST) <= bound
        assert makespan_bound_s(n, s, r, b, c, BURST + 5) <= bound
        assert bound >= b + s, (n, s, r, b, c)


def test_bound_edges():
    assert makespan_bound_s(0, S, R, B) == 0.0
    assert makespan_bound_s(1, S, R, B) == B + S
    assert makespan_bound_s(N, S, 0.0, B, burst=10) == pytest.approx(B + N * S / 10)
    assert makespan_bound_s(N, S, 0.0, B) == math.inf


def test_pool_at_the_bound_of_the_issues_example():
    assert 230 <= pool_size_at_bound(N, S, R, B, C, burst=BURST) <= 245
    assert 230 <= pool_size_at_bound(N, S, R, B, C) <= 245


@pytest.mark.parametrize("burst", (0, 3))
def test_pool_at_bound_is_the_rate_times_the_creation_window(burst):
    for n, s, r, b, c in GRID:
        pool = pool_size_at_bound(n, s, r, b, c, burst)
        window = makespan_bound_s(n, s, r, b, c, burst) - b - s
        assert 1 <= pool <= math.ceil(n / c)
        assert pool == min(math.ceil(n / c), max(1, round(r * window) + burst)), (n, s, r, b, c)


def test_pool_at_bound_of_nothing_is_nothing():
    assert pool_size_at_bound(0, S, R, B) == 0


# --- decide(): creating only machines that find work ------------------------------------------

def test_an_empty_pool_facing_10000_tasks_grows_to_about_the_pool_at_the_bound():
    decision = decide(inputs())
    expected = pool_size_at_bound(N, S, R, B, C, burst=BURST)
    assert decision.reason == "queue would empty first"
    assert decision.create == decision.target
    assert abs(decision.create - expected) <= 0.1 * expected


def test_remaining_at_counts_the_live_pool_and_the_new_machines_before():
    """The m-th new machine starts at m/r + b; before it the live pool works that long and
    new machine j works (m - j)/r, each machine-second taking c/s tasks."""
    i = inputs(ready=1000, live=10, per_machine=2, create_rate=0.5)
    m = 4
    worked = 10 * (m / 0.5 + B) + sum((m - j) / 0.5 for j in range(1, m))
    assert remaining_at(i, m) == pytest.approx(1000 - 2 / S * worked)


def test_remaining_at_counts_a_whole_slot_for_each_new_machine_before():
    """Fast creations and long tasks: the seconds say little is done, but each earlier new
    machine took its c tasks when it started."""
    i = inputs(ready=1000, live=0, per_machine=2, create_rate=4.0, task_s=60.0)
    assert remaining_at(i, 5) == 1000 - 2 * 4


@pytest.mark.parametrize("c", (1, 2, 3))
def test_never_more_new_machines_than_slots_of_ready_work(c):
    for ready in range(1, 40):
        for r, s in ((1.0, 3.0), (4.0, 60.0), (0.2, 1.0)):
            made = decide(inputs(ready=ready, per_machine=c, create_rate=r, task_s=s)).create
            assert 1 <= made <= math.ceil(ready / c), (ready, r, s)


@pytest.mark.parametrize("live", (0, 1, 3, 20, 150))
def test_each_new_machine_would_get_a_full_slot_and_one_more_would_not(live):
    for ready, c, r, s, b in itertools.product(
            (1, 2, 5, 17, 60, 400, 3000, 50_000), (1, 2, 3), (0.5, 1.0, 4.0), (1.0, 3.0, 20.0), (0.0, 5.0)):
        i = inputs(ready=ready, live=live, per_machine=c, create_rate=r, task_s=s, boot_s=b)
        made = decide(i).create
        forced = live == 0 and made == 1  # an empty pool always gets its first machine
        assert made >= 0
        assert remaining_at(i, made + 1) < c or forced, (ready, c, r, s, b)
        assert made == 0 or remaining_at(i, made) >= c or forced, (ready, c, r, s, b)


def test_no_machine_when_the_live_pool_drains_the_queue_before_one_boots():
    # 50 machines drain 50/3 tasks a second: 100 tasks are gone 6 s later, when a new one boots.
    decision = decide(inputs(ready=100, live=50))
    assert decision == PoolDecision(target=50, create=0, reason="queue would empty first")


def test_the_slot_boundary_is_inclusive():
    # remaining(1) = ready - (1/3) * 30 * (1 + 5) = ready - 60: one machine exactly at 61 tasks.
    assert decide(inputs(ready=61, live=30)).create == 1
    assert decide(inputs(ready=60, live=30)).create == 0


def test_an_empty_pool_gets_one_machine_even_for_one_task():
    assert decide(inputs(ready=1, per_machine=4)) == PoolDecision(target=1, create=1, reason="queue would empty first")


@pytest.mark.parametrize(("running", "reason"), [(0, "no work"), (7, "no ready tasks")])
def test_nothing_ready_creates_nothing(running, reason):
    assert decide(inputs(ready=0, running=running, live=4)) == PoolDecision(target=4, create=0, reason=reason)


CAPS = {"batch cap": "batch_cap", "global cap": "free_slots", "fair share": "fair_share"}


@pytest.mark.parametrize("reason", sorted(CAPS))
@pytest.mark.parametrize("live", (0, 40))
def test_each_cap_wins_when_it_is_the_smallest(reason, live):
    """Demand here is about 245 new machines; the chosen cap is set tightest, the others loose."""
    room = 17
    value = room if CAPS[reason] == "free_slots" else live + room
    others = {name: UNBOUNDED - 1 for name in CAPS.values()}
    decision = decide(inputs(live=live, **{**others, CAPS[reason]: value}))
    assert decision == PoolDecision(target=live + room, create=room, reason=reason)


@pytest.mark.parametrize("cap", ("batch_cap", "fair_share"))
def test_a_cap_below_the_live_pool_creates_none_and_says_how_many_are_surplus(cap):
    decision = decide(inputs(live=80, **{cap: 50}))
    assert (decision.target, decision.create) == (50, 0)


def test_a_full_global_cap_creates_none_even_for_an_empty_pool():
    assert decide(inputs(free_slots=0)) == PoolDecision(target=0, create=0, reason="global cap")


def test_negative_room_never_gives_a_negative_decision():
    decision = decide(inputs(live=5, free_slots=-3, batch_cap=2, fair_share=-1))
    assert decision.target >= 0 and decision.create == 0


MONOTONE_GRID = list(itertools.product((0, 3, 40), (1, 2), (0.5, 1.0), (0, 5.0), (20, 10**6)))


@pytest.mark.parametrize(("live", "c", "r", "b", "cap"), MONOTONE_GRID)
def test_more_ready_never_means_a_smaller_pool(live, c, r, b, cap):
    previous = -1
    for ready in (*range(0, 200), *range(200, 20_000, 97)):
        d = decide(inputs(ready=ready, live=live, per_machine=c, create_rate=r, boot_s=b, batch_cap=cap))
        assert d.create >= 0 and d.target >= 0
        assert d.target >= previous
        previous = d.target


@pytest.mark.parametrize(("live", "c", "r", "b", "cap"), MONOTONE_GRID)
def test_slower_tasks_never_mean_a_smaller_pool(live, c, r, b, cap):
    previous = -1
    for tenth in range(1, 600, 3):
        d = decide(inputs(ready=5000, live=live, per_machine=c, create_rate=r, boot_s=b, batch_cap=cap,
                          task_s=tenth / 10))
        assert d.create >= 0
        assert d.target >= previous
        previous = d.target


def test_concurrency_shrinks_the_pool_by_its_square_root():
    """c conversions per machine cut the work per machine c-fold but the pool only sqrt(c)-fold
    (pool ~ r*sqrt(2Ns/(cr))): c=4 halves it, c=2 takes it to about 71%."""
    one = decide(inputs()).create
    two = decide(inputs(per_machine=2)).create
    four = decide(inputs(per_machine=4)).create
    assert two / one == pytest.approx(1 / math.sqrt(2), rel=0.05)
    assert four / one == pytest.approx(0.5, rel=0.05)


# --- fair share between batches --------------------------------------------------------------

def test_a_batch_alone_gets_the_whole_cap():
    assert fair_share(1000, 1, 0, 0) == 1000
    assert fair_share(1000, 1, 700, 0) == 1000


def test_equal_batches_split_the_cap():
    assert fair_share(1000, 2, 0, 0) == 500
    assert fair_share(1000, 4, 100, 300) == 250


def test_the_remainder_of_the_split_is_usable_once():
    assert fair_share(101, 2, 0, 50) == 51
    assert fair_share(101, 2, 0, 51) == 50  # the other batch took the remainder already


def test_a_newcomer_shrinks_the_share_of_the_batch_that_holds_everything():
    """The huge batch holds the whole cap; a small batch arrives with nothing. The huge one's
    share drops to half (it stops creating, its surplus may retire) and the small one is owed
    half, so it is not starved."""
    assert fair_share(1000, 2, batch_live=1000, others_live=0) == 500
    assert fair_share(1000, 2, batch_live=0, others_live=1000) == 500


def test_every_batch_gets_at_least_one_when_there_are_more_batches_than_slots():
    assert fair_share(3, 5, 0, 3) == 1
    assert fair_share(0, 2, 0, 0) == 1


def test_a_share_is_never_below_the_base_nor_above_the_cap():
    for cap, batches in itertools.product((1, 7, 100, 1000), (1, 2, 3, 10)):
        base = max(1, cap // batches)
        for others in range(0, cap + 1, max(1, cap // 13)):
            share = fair_share(cap, batches, 0, others)
            assert base <= share <= max(cap, 1), (cap, batches, others)


def test_negative_counts_are_refused():
    with pytest.raises(ValueError):
        fair_share(10, 2, -1, 0)


# --- moving average ---------------------------------------------------------------------------

def test_the_prior_stands_until_the_first_result():
    assert moving_average_ms(None, 0, 0, prior_ms=3000) == 3000


def test_the_first_window_replaces_the_prior():
    assert moving_average_ms(None, 4 * 2500, 4, prior_ms=3000) == 2500


def test_later_windows_move_alpha_of_the_way():
    assert moving_average_ms(2000, 3 * 4000, 3, prior_ms=3000) == pytest.approx(2600)
    assert moving_average_ms(2000, 4000, 1, prior_ms=3000, alpha=1.0) == 4000


def test_an_empty_window_keeps_the_average():
    assert moving_average_ms(2000, 0, 0, prior_ms=3000) == 2000


@pytest.mark.parametrize(("args", "kwargs"), [((None, 10, -1, 3000), {}), ((None, -5, 1, 3000), {}),
                                              ((None, 10, 1, 3000), {"alpha": 0.0}),
                                              ((None, 10, 1, 3000), {"alpha": 1.5})])
def test_bad_windows_are_refused(args, kwargs):
    with pytest.raises(ValueError):
        moving_average_ms(*args, **kwargs)


# --- simulation: decide() every second against the token bucket ------------------------------

@dataclass
class SimBatch:
    """One batch in the simulation: its queue, its machines (boot end, slot end times)."""
    tasks: int
    arrives: int = 0
    ready: int = 0
    machines: list[list[float]] = field(default_factory=list)  # [tasks done, boot_done, slot_free_at...]
    retire: int = 0
    idle: int = 0  # machines that exited without a task
    created: int = 0
    peak: int = 0
    first_machine: float | None = None
    finished: float = 0.0

    def __post_init__(self) -> None:
        self.ready = self.tasks


def simulate(batches: list[SimBatch], *, task_s: float = S, rate: float = R, burst: int = BURST,
             boot_s: float = B, per_machine: int = C, global_cap: int = 1000, batch_cap: int = 300,
             horizon: int = 20_000) -> list[SimBatch]:
    """Step simulated time by 1 s: machines whose slot is free pull a task (or retire, or exit
    when none is left), then each present batch runs decide() with its fair share and creates
    what the shared token bucket allows. Every time is an integer number of seconds, so a 1 s
    step loses nothing."""
    tokens = float(burst)
    for t in range(horizon):
        tokens = min(float(burst), tokens + rate) if t else tokens
        present = [b for b in batches if b.arrives <= t and (b.ready or b.machines)]
        for batch in present:
            pull(batch, t, task_s)
        present = [b for b in present if b.ready or b.machines]
        if not any(b.ready or b.machines or b.arrives > t for b in batches):
            return batches
        in_flight = sum(len(b.machines) for b in present)
        for batch in present:
            live = len(batch.machines)
            share = fair_share(global_cap, len(present), live, in_flight - live)
            running = sum(1 for m in batch.machines for free in m[2:] if free > t)
            decision = decide(PoolInputs(
                ready=batch.ready, running=running, live=live, task_s=task_s,
                create_rate=rate / len(present), boot_s=boot_s, per_machine=per_machine,
                batch_cap=batch_cap, free_slots=global_cap - in_flight, fair_share=share))
            batch.retire = max(0, live - decision.target)
            made = min(decision.create, int(tokens))
            tokens -= made
            in_flight += made
            for _ in range(made):
                batch.machines.append([0, t + boot_s] + [t + boot_s] * per_machine)
            batch.created += made
            batch.peak = max(batch.peak, len(batch.machines))
            if made and batch.first_machine is None:
                batch.first_machine = t
    raise AssertionError("simulation did not finish")


def pull(batch: SimBatch, t: int, task_s: float) -> None:
    """Each booted machine's free slots take a task each; a machine with no task left for any
    slot exits, and one the pass marked surplus retires at its next pull."""
    keep = []
    for machine in batch.machines:
        if machine[1] > t:
            keep.append(machine)
            continue
        busy = False
        for slot in range(2, len(machine)):
            if machine[slot] > t:
                busy = True
            elif batch.ready and not batch.retire:
                batch.ready -= 1
                machine[slot] = t + task_s
                machine[0] += 1
                batch.finished = max(batch.finished, t + task_s)
                busy = True
        if busy:
            keep.append(machine)
            continue
        batch.idle += machine[0] == 0
        if batch.retire:
            batch.retire -= 1
    batch.machines = keep


def test_simulated_makespan_is_within_125_percent_of_the_bound():
    (batch,) = simulate([SimBatch(N)])
    bound = makespan_bound_s(N, S, R, B, C, burst=BURST)
    assert batch.ready == 0
    assert batch.finished <= 1.25 * bound, (batch.finished, bound)
    # and it did not get there by creating machines that found no work
    assert batch.created <= 1.1 * pool_size_at_bound(N, S, R, B, C, burst=BURST)
    assert batch.idle == 0


@pytest.mark.parametrize("tasks", (1, 2, 5, 10, 50, 300, 1000))
def test_simulated_small_batches_stay_near_the_bound_and_create_no_idle_machine(tasks):
    """Within 1.25x, or for a handful of tasks within one task's time of the bound (the bound
    splits tasks finely; the machines still booting count as working, so a tiny batch gets
    one wave fewer)."""
    (batch,) = simulate([SimBatch(tasks)])
    bound = makespan_bound_s(tasks, S, R, B, C, burst=BURST)
    assert batch.finished <= max(1.25 * bound, bound + S)
    assert batch.idle == 0


def test_simulated_pool_with_two_slots_per_machine_stays_near_its_bound():
    (batch,) = simulate([SimBatch(4000)], per_machine=2)
    assert batch.finished <= 1.25 * makespan_bound_s(4000, S, R, B, 2, burst=BURST)
    assert batch.idle == 0


def test_a_small_batch_behind_a_huge_one_still_gets_machines():
    """The huge batch holds the whole global cap when the small one arrives; the small one's
    first machine comes within a few seconds (the huge one's surplus retires at its next
    pulls) and it finishes long before the huge one."""
    huge, small = simulate([SimBatch(10_000), SimBatch(30, arrives=150)], global_cap=100)
    assert huge.peak == 100
    assert small.first_machine is not None and small.first_machine - 150 <= S + 2
    assert small.finished - 150 <= 30
    assert huge.finished > small.finished + 60
