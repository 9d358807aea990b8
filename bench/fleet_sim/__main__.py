"""The fleet simulation's command line (`make bench-fleet-sim`): runs scenarios, prints a
rich table against the named baselines and targets, writes bench/results/fleet-sim-<UTC>.json.

    python -m bench.fleet_sim [--n N ...] [--standing S] [--seed K ...] [--profile aws|stack]
                              [--faults] [--wcu U] [--safety-seeds K]
                              [--large-fraction F [--large-mb M ...]] [--oom-fraction F [--oom-mb M]]
                              [--limit-s S] [--env KEY=VALUE ...]

Baselines: `chalicelib.pool_sizing.makespan_bound_s` for the scenario's pool (report.bound_s);
with `--profile stack` the real-time stack of bench.scale / bench.scale_standing, whose JSON
(`--compare PATH`) is read for the ratio. Targets (issue 18): standing 1,000, N=10,000:
submit->DONE <= 45 s; N=100,000 <= 360 s; Fly cost <= $0.04 per 1,000 TIFFs.
`--safety-seeds K` runs K seeds with faults on and prints the safety checks of each.
Memory tiers (docs/pool.md): `--large-fraction F` makes F of each batch's TIFFs need one of
`--large-mb` (default 3500 and 6000, more than POOL_MEMORY_MB) for full quality, read from
their header; `--oom-fraction F` makes F others run out of memory below `--oom-mb` once
converting. Each run then prints its machines of each memory and the needs_memory bounces.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .report import Report, report
from .sim import OFF, ON, Scenario, Simulation

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
TARGETS_S = {(10_000, 1000): 45.0, (100_000, 1000): 360.0}
TARGET_PER_1000_USD = 0.04


def run(scenario: Scenario) -> Report:
    started = time.monotonic()
    sim = Simulation(scenario)
    outcomes = sim.run()
    return report(sim, outcomes, time.monotonic() - started)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def memory_line(r: Report) -> str:
    """The run's machines of each memory (created / started) and its memory answers."""
    machines = ", ".join(f"{mb} MB {c.get('created', 0)}/{c.get('started', 0)}"
                         + (f" (+{c['created single']} single-mode)" if c.get("created single") else "")
                         for mb, c in sorted(r.machines_by_memory.items()))
    s = r.safety
    done_on = ", ".join(f"{mb} MB {n}" for mb, n in s.completed_on_mb.items()) or "-"
    return (f"  machines created/started by memory: {machines or '-'}; large tasks {s.large_tasks}, "
            f"oom tasks {s.oom_tasks}; needs_memory bounces {s.needs_memory_ends} "
            f"(worker answers {r.memory_events.get('needs_memory', 0)}), out_of_memory ends "
            f"{s.out_of_memory_ends} (workers {r.memory_events.get('out_of_memory', 0)}); "
            f"those completed on: {done_on}; tasks failed {s.tasks_failed}" + (
                "; their retry waited {retry_wait_median_s:.1f} s median, {retry_wait_max_s:.1f} s max, the last "
                "ended {tail_s:+.1f} s after the last other task".format(**r.tier_timing)
                if len(r.tier_timing) == 3 else ""))


def table(reports: list[Report]) -> Table:
    t = Table(title="fleet simulation (virtual time)")
    for column in ("run", "status", "submit->DONE s", "makespan s", "bound s", "x bound", "target s",
                   "created", "started", "DDB req/task", "peak WCU (partition)", "throttled",
                   "Fly $/1k", "Lambda $/1k", "safety", "wall s"):
        t.add_column(column, justify="left" if column in ("run", "peak WCU (partition)") else "right")
    for r in reports:
        target = TARGETS_S.get((r.scenario["tasks"], r.scenario["standing"]))
        ratio = r.makespan_s / r.bound_s if r.makespan_s and r.bound_s else None
        t.add_row(r.label, r.status, _s(r.submit_to_done_s), _s(r.makespan_s), _s(r.bound_s),
                  "-" if ratio is None else f"{ratio:.2f}x",
                  "-" if target is None else f"{target:.0f} ({(r.submit_to_done_s or 0) / target:.2f}x)",
                  str(r.machines_created), str(r.machines_started), f"{r.ddb_per_task:.2f}",
                  f"{r.peak_partition_wcu:,.0f} ({r.peak_partition[-28:]})", str(r.throttled_requests),
                  f"{r.costs.per_1000_usd:.4f} ({r.costs.per_1000_usd / TARGET_PER_1000_USD:.2f}x)",
                  f"{r.costs.lambda_convert_per_1000_usd:.4f}", "ok" if r.safety.ok else "FAIL",
                  f"{r.wall_s:.0f}")
    return t


def compare(reports: list[Report], path: Path) -> list[str]:
    """Lines holding each simulated run against the real-time run of the same N (makespan)."""
    data = json.loads(path.read_text())
    real = {(r["spec"]["tasks"], r["spec"].get("standing", 0)): r for r in data["runs"]}
    lines = []
    for r in reports:
        other = real.get((r.scenario["tasks"], r.scenario["standing"]))
        if other and other.get("makespan_s") and r.makespan_s:
            lines.append(f"{r.label}: makespan {r.makespan_s:.1f} s, real-time {other['makespan_s']:.1f} s "
                         f"({r.makespan_s / other['makespan_s']:.3f}x; {path.name})")
    return lines


def write_json(reports: list[Report], directory: Path = RESULTS_DIR) -> Path:
    now = datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"fleet-sim-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps({"at": now.isoformat(timespec="seconds"),
                                "runs": [r.as_json() for r in reports]}, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_sim", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="tasks (repeatable; default 10000)")
    parser.add_argument("--standing", type=int, default=1000, help="stopped machines a warm-up leaves (0: cold)")
    parser.add_argument("--seed", type=int, action="append", help="seeds (repeatable; default 1)")
    parser.add_argument("--profile", choices=("aws", "stack", "stack-cores"), default="aws")
    parser.add_argument("--faults", action="store_true", help="the emulator's faults on (sim.ON)")
    parser.add_argument("--wcu", type=float, default=1000.0, help="write units a second per partition")
    parser.add_argument("--task-s", type=float, default=3.0)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--safety-seeds", type=int, default=0, help="K seeds, faults on, safety checks")
    parser.add_argument("--compare", type=Path, help="a bench.scale(_standing) JSON to hold the makespans against")
    parser.add_argument("--large-fraction", type=float, default=0.0,
                        help="share of TIFFs whose header needs more than POOL_MEMORY_MB (memory tiers)")
    parser.add_argument("--large-mb", type=int, action="append",
                        help="what a large TIFF needs, MB (repeatable, one drawn per TIFF; default 3500 and 6000)")
    parser.add_argument("--oom-fraction", type=float, default=0.0,
                        help="share of TIFFs that fit by their header but run out of memory below --oom-mb")
    parser.add_argument("--oom-mb", type=int, default=3000)
    parser.add_argument("--limit-s", type=float, default=Scenario.limit_s,
                        help="virtual seconds a batch may take before the run gives up")
    args = parser.parse_args(argv)
    console = Console() if Console().is_terminal else Console(width=240)  # a log keeps the whole table
    env = dict(pair.split("=", 1) for pair in args.env)
    seeds = args.seed or ([*range(1, args.safety_seeds + 1)] if args.safety_seeds else [1])
    faults = ON if args.faults or args.safety_seeds else OFF
    reports: list[Report] = []
    for n in args.n or [10_000]:
        for seed in seeds:
            scenario = Scenario(n, seed=seed, standing=args.standing, task_s=args.task_s, profile=args.profile,
                                faults=faults, wcu=args.wcu, env=tuple(sorted(env.items())),
                                large_fraction=args.large_fraction,
                                large_mb=tuple(args.large_mb or Scenario.large_mb),
                                oom_fraction=args.oom_fraction, oom_mb=args.oom_mb, limit_s=args.limit_s)
            console.print(f"running {scenario.label}{' faults on' if faults is ON else ''} ...")
            result = run(scenario)
            reports.append(result)
            console.print(f"  {result.status}: submit->DONE {_s(result.submit_to_done_s)} s, "
                          f"{result.events:,} events in {result.wall_s:.0f} s wall, trace {result.trace_digest}, "
                          f"safety {'ok' if result.safety.ok else result.safety.problems[:3]}")
            console.print(memory_line(result))
    console.print(table(reports))
    if args.compare:
        for line in compare(reports, args.compare):
            console.print(line)
    path = write_json(reports)
    console.print(f"JSON: {path}")
    return 0 if all(r.safety.ok for r in reports) else 1



if __name__ == "__main__":
    raise SystemExit(main())
