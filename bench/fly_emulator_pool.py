"""Fly emulator benchmark: what a pool of synthetic pool machines costs the emulator process.

Run: `make bench-emulator-pool` (or `python -m bench.fly_emulator_pool [--machines 250]
[--tasks-per-machine 4] [--task-s 1] [--heartbeat-ms 500]`).
The emulator (this process) runs N synthetic machines with WORKER_MODE=pool at once,
created over its HTTP API with no create limit; the orchestrator's pool API is the
in-test stand-in (tests/local/fly_pool_orchestrator.py) in a child process, so the CPU time
and memory printed are the emulator's alone. Printed, never asserted: the makespan against
the ideal (tasks per machine x task time, every machine busy from its creation), peak
threads and RSS per machine over the idle emulator (the baseline), and the emulator's CPU
seconds per task.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import threading
import time
from pathlib import Path

import requests

from arke_local.fly_emulator import SYNTHETIC, FlyEmulator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "local"))  # the pool API stand-in of the tests
from fly_pool_orchestrator import machine_token  # noqa: E402

IMAGE = "registry.fly.io/arke-tiff-worker:latest"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def orchestrator(conn, tasks: int, heartbeat_ms: int) -> None:
    """Child process: the pool API stand-in; sends its URL, then the callback count and the
    last callback's time once every task has called back (or after a timeout)."""
    from fly_pool_orchestrator import PoolOrchestrator

    orch = PoolOrchestrator(heartbeat_interval_ms=heartbeat_ms)
    for n in range(tasks):
        orch.add_task(n)
    conn.send(orch.url)
    callbacks = orch.wait_for("callback", tasks, timeout=600)
    last = max((c.at for c in callbacks), default=0.0)  # CLOCK_MONOTONIC: one clock for both
    conn.send((len(callbacks), last, len(orch.of("heartbeat"))))
    conn.recv()  # serve the machines' last pulls ("exit") until the parent has seen them go
    conn.send(len(orch.of("pull")))
    orch.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fly_emulator_pool")
    parser.add_argument("--machines", type=int, default=250)
    parser.add_argument("--tasks-per-machine", type=int, default=4)
    parser.add_argument("--task-s", type=float, default=1.0)
    parser.add_argument("--heartbeat-ms", type=int, default=500)
    args = parser.parse_args(argv)
    tasks = args.machines * args.tasks_per_machine

    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("fork").Process(
        target=orchestrator, args=(child, tasks, args.heartbeat_ms), daemon=True)
    proc.start()
    url = parent.recv()

    with FlyEmulator(port=0, images={IMAGE: SYNTHETIC}, create_rate=0,
                     max_machines=args.machines + 10, synthetic_task_s=str(args.task_s)) as fly:
        base_threads, base_rss = threading.active_count(), rss_mb()
        peak = {"threads": base_threads, "rss": base_rss}
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.1):
                peak["threads"] = max(peak["threads"], threading.active_count())
                peak["rss"] = max(peak["rss"], rss_mb())

        threading.Thread(target=sample, daemon=True).start()
        session = requests.Session()
        session.trust_env = False
        session.headers["Authorization"] = "Bearer bench"
        cpu0, start = time.process_time(), time.monotonic()
        for i in range(args.machines):
            name = f"tiff-pool-{i:04d}"
            env = {"WORKER_MODE": "pool", "BATCH_ID": "b1", "MACHINE_NAME": name,
                   "MACHINE_TOKEN": machine_token("b1", name), "ORCHESTRATOR_URL": url,
                   "R2_BUCKET": "arke-staging"}
            answer = session.post(f"{fly.url}/v1/apps/arke-tiff-worker/machines", timeout=30, json={
                "name": name, "config": {"image": IMAGE, "auto_destroy": True,
                                         "restart": {"policy": "no"}, "env": env}})
            answer.raise_for_status()
        created = time.monotonic() - start
        count, last_at, beats = parent.recv()
        makespan = last_at - start
        deadline = time.monotonic() + 30
        while fly.supervisor.count_active() and time.monotonic() < deadline:
            time.sleep(0.1)
        cpu = time.process_time() - cpu0
        done.set()
        parent.send("stop")
        pulls = parent.recv()
        stats = fly.stats.snapshot()
    proc.join(timeout=5)

    ideal = args.tasks_per_machine * args.task_s
    n = args.machines
    print(f"{n} synthetic pool machines, {tasks} tasks of {args.task_s:g} s, heartbeat "
          f"{args.heartbeat_ms} ms (orchestrator stand-in in a child process)")
    print(f"  callbacks received        {count} / {tasks}   pulls {pulls}   heartbeats {beats}")
    print(f"  creates took              {created:.2f} s")
    print(f"  makespan                  {makespan:.2f} s   ideal {ideal:.2f} s (+ creates)   "
          f"ratio {makespan / (ideal + created):.2f}")
    print(f"  peak threads              {peak['threads']} (baseline {base_threads}): "
          f"{(peak['threads'] - base_threads) / n:.2f} per machine")
    print(f"  peak RSS                  {peak['rss']:.0f} MB (baseline {base_rss:.0f} MB): "
          f"{(peak['rss'] - base_rss) * 1024 / n:.0f} KB per machine")
    print(f"  emulator CPU              {cpu:.2f} s: {cpu * 1000 / max(1, tasks):.2f} ms per task")
    print(f"  machines destroyed        {stats['machines_destroyed']}   exited non-zero "
          f"{stats['machines_exited_nonzero']}")
    return 0 if count == tasks else 1


if __name__ == "__main__":
    raise SystemExit(main())
