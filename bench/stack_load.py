"""Load on the local stack's API (`chalice local`): can it take what a 230-machine pool sends?

A pool of ~230 machines at 3 s per task sends ~77 results/s, ~77 pulls/s and heartbeats
(one per machine every 10 s: ~23/s) to the API. This script offers a steady 200 requests/s
from 50 threads, alternating `GET /health` (no DynamoDB) and `GET /status/{batch}` (one
DynamoDB read of a finished batch), each request on a new connection as separate machines
open them, and prints the achieved rate, p50/p99 latency and failures per route.

Run: `make bench-stack-load` (starts its own stack, runs a 3-task batch for /status to read,
keeps a second batch converting meanwhile to time the pump's passes under the load, and
starts stock `chalice local` beside the stack's API server as the baseline; the two take
the load in turns, `--rounds` times each, so both see the same machine), or
`python -m bench.stack_load --api URL --batch ID` against a running `make up`.
Numbers are this machine's (2 cores shared with everything else): compare them before and
after a change, on the same machine, in the same run of this script.
"""

from __future__ import annotations

import argparse
import http.client
import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class Sample:
    path: str
    started: float
    seconds: float
    status: int  # 0: no answer


@dataclass
class LoadReport:
    offered_rps: float
    duration_s: float
    samples: list[Sample] = field(default_factory=list)
    listen_drops: int | None = None  # the kernel's, machine-wide, while the load ran

    def rows(self) -> list[dict]:
        """Per route and overall: requests, achieved rate, p50/p99 ms, failures."""
        groups: dict[str, list[Sample]] = {}
        for s in self.samples:
            groups.setdefault(route_of(s.path), []).append(s)
        groups["all"] = list(self.samples)
        return [summarize(name, group, self.duration_s) for name, group in groups.items()]


def route_of(path: str) -> str:
    return "/" + path.strip("/").split("/", 1)[0]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summarize(name: str, samples: list[Sample], duration_s: float) -> dict:
    ok = [s.seconds * 1000 for s in samples if 200 <= s.status < 500]
    return {
        "route": name,
        "requests": len(samples),
        "achieved_rps": len(ok) / duration_s if duration_s else 0.0,
        "p50_ms": percentile(ok, 50),
        "p99_ms": percentile(ok, 99),
        "max_ms": max(ok, default=0.0),
        "over_1s": sum(1 for ms in ok if ms >= 1000),  # a dropped SYN's retransmit waits 1 s
        "failures": sum(1 for s in samples if not 200 <= s.status < 500),
        "mean_ms": statistics.fmean(ok) if ok else 0.0,
    }


def listen_drops() -> int | None:
    """TcpExt ListenDrops of /proc/net/netstat: connections dropped because a listening
    socket's accept queue was full (None where there is no such file)."""
    try:
        text = Path("/proc/net/netstat").read_text()
        lines = [line.split() for line in text.splitlines() if line.startswith("TcpExt:")]
    except OSError:
        return None
    if len(lines) < 2 or "ListenDrops" not in lines[0]:
        return None
    return int(lines[1][lines[0].index("ListenDrops")])


def one_request(host: str, port: int, path: str, timeout_s: float) -> int:
    """GET on a new connection; the status, 0 when nothing (or garbage) answered."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def run_load(api_url: str, paths: list[str], rps: float = 200.0, threads: int = 50,
             duration_s: float = 20.0, timeout_s: float = 10.0) -> LoadReport:
    """Open loop: thread i sends at start + i/rps + k*threads/rps (k = 0, 1, ...), or at
    once when it is behind, so a slow server shows as a lower achieved rate and higher
    latency, not as fewer requests offered."""
    parts = urlsplit(api_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    period = threads / rps
    report = LoadReport(rps, duration_s)
    lock = threading.Lock()
    start = time.monotonic() + 0.2

    def worker(i: int) -> None:
        k = 0
        while True:
            due = start + i / rps + k * period
            if due >= start + duration_s:
                return
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            path = paths[(i + k) % len(paths)]
            began = time.monotonic()
            status = one_request(host, port, path, timeout_s)
            sample = Sample(path, began - start, time.monotonic() - began, status)
            with lock:
                report.samples.append(sample)
            k += 1

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    drops_before = listen_drops()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    drops_after = listen_drops()
    if drops_before is not None and drops_after is not None:
        report.listen_drops = drops_after - drops_before
    report.duration_s = max(duration_s, max((s.started + s.seconds for s in report.samples), default=0.0))
    return report


def print_report(report: LoadReport, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{title}: {report.offered_rps:.0f} req/s offered for {report.duration_s:.1f} s")
    for name in ("route", "requests", "achieved req/s", "p50 ms", "p99 ms", "max ms", ">= 1 s", "failures"):
        table.add_column(name, justify="left" if name == "route" else "right")
    for row in report.rows():
        table.add_row(row["route"], str(row["requests"]), f"{row['achieved_rps']:.1f}", f"{row['p50_ms']:.1f}",
                      f"{row['p99_ms']:.1f}", f"{row['max_ms']:.0f}", str(row["over_1s"]), str(row["failures"]))
    Console().print(table)
    if report.listen_drops is not None:
        print(f"kernel ListenDrops during the load (machine-wide): {report.listen_drops}")


def submit_batch(stack, tasks: int) -> str:
    """Send a batch of `tasks` TIFF entries to the stack's queue (synthetic machines never
    read them, so none is uploaded); its id."""
    import json

    from arke_local.endpoints import QUEUE_NAME
    from arke_local.submission import LocalFile, build_message, new_batch_id

    batch_id = new_batch_id()
    files = [LocalFile(f"scan-{i:04d}.tif", 100) for i in range(tasks)]
    message, _ = build_message(batch_id, files, manifest="never")
    sqs = _observer(stack, "sqs")
    sqs.send_message(QueueUrl=sqs.get_queue_url(QueueName=QUEUE_NAME)["QueueUrl"], MessageBody=json.dumps(message))
    return batch_id


def _observer(stack, service: str):
    import boto3

    return boto3.client(service, endpoint_url=stack.endpoints.aws, region_name="us-east-1",
                        aws_access_key_id="bench-observer", aws_secret_access_key="testing")


def finished_batch(stack) -> str:
    """A 3-task batch run to DONE on `stack`, for /status to read."""
    from bench.scale import wait_done

    batch_id = submit_batch(stack, 3)
    status = wait_done(_observer(stack, "dynamodb"), batch_id, 120)
    if status != "DONE":
        raise RuntimeError(f"batch {batch_id} ended {status}")
    return batch_id


def busy_batch(stack, tasks: int = 30) -> str:
    """A batch that stays converting while the load runs (its machines take 10 minutes to
    boot), so the pump has a pass to run every ALARM_DELAY_TIFF_CONVERSION."""
    import requests

    requests.post(f"{stack.endpoints.fly}/_emulator/faults", json={"boot_delay_s": 600}, timeout=10).raise_for_status()
    return submit_batch(stack, tasks)


def print_pass_gaps(stack, batch_id: str, alarm_ms: int) -> None:
    from bench.scale import pass_gaps_s

    log_path = stack.options.log_dir / "pump.log"
    gaps = pass_gaps_s(log_path.read_text(errors="replace"), batch_id) if log_path.exists() else None
    if gaps is None:
        print(f"pump: no two passes of the converting batch {batch_id} in {log_path}")
    else:
        print(f"pump under this load: the converting batch's passes every {gaps[0]:.2f} s on average, "
              f"at most {gaps[1]:.2f} s apart (ALARM_DELAY_TIFF_CONVERSION {alarm_ms} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stack_load", description=__doc__.splitlines()[0])
    parser.add_argument("--api", help="a running stack's API (default: start a stack)")
    parser.add_argument("--batch", help="batch id for /status (with --api)")
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--duration-s", type=float, default=10.0, help="per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per server (own stack only)")
    parser.add_argument("--warmup-s", type=float, default=3.0,
                        help="load first sent and not counted: the app's cold start (its first "
                             "DynamoDB clients, made while 50 requests wait) is not the steady state")
    args = parser.parse_args(argv)
    if args.api:
        paths = ["/health"] + ([f"/status/{args.batch}"] if args.batch else [])
        if args.warmup_s:
            run_load(args.api, paths, args.rps, args.threads, args.warmup_s)
        print_report(run_load(args.api, paths, args.rps, args.threads, args.duration_s), args.api)
        return 0

    import json

    from arke_local.endpoints import Ports, runtime_dir
    from arke_local.fly_emulator import SYNTHETIC, WORKER_IMAGE
    from arke_local.stack import LocalStack, StackOptions

    alarm_ms = 1000  # a pass a second: what a pool's sizing wants
    env = {"FLY_EMULATOR_IMAGES": json.dumps({WORKER_IMAGE: SYNTHETIC}),
           "ALARM_DELAY_TIFF_CONVERSION": str(alarm_ms)}
    options = StackOptions(ports=Ports.free(), log_dir=runtime_dir() / "bench-stack-load", extra_env=env)
    with LocalStack(options) as stack:
        batch_id = finished_batch(stack)
        paths = ["/health", f"/status/{batch_id}"]
        servers = {"stock chalice local": start_stock_chalice(stack), "stack API (api_server)": stack.endpoints.api}
        reports = {name: LoadReport(args.rps, 0.0) for name in servers}
        converting = busy_batch(stack)
        for url in servers.values():
            if args.warmup_s:
                run_load(url, paths, args.rps, args.threads, args.warmup_s)
        for _ in range(args.rounds):
            for name, url in servers.items():
                got = run_load(url, paths, args.rps, args.threads, args.duration_s)
                reports[name].samples += got.samples
                reports[name].duration_s += got.duration_s
                reports[name].listen_drops = (reports[name].listen_drops or 0) + (got.listen_drops or 0)
        for name, report in reports.items():
            print_report(report, name)
        print_pass_gaps(stack, converting, alarm_ms)
    return 0


def start_stock_chalice(stack) -> str:
    """`chalice local` as the stack ran it before api_server, on a free port, same env."""
    import sys

    from arke_local.endpoints import STACK_CHALICE_STAGE, free_port
    from arke_local.stack import Component

    port = free_port()
    host = stack.options.host
    chalice = str(Path(sys.executable).parent / "chalice")
    component = Component("api-stock", [chalice, "--project-dir", str(stack.options.project_dir), "local",
                                        "--stage", STACK_CHALICE_STAGE, "--host", host, "--port", str(port),
                                        "--no-autoreload"], ready_url=f"http://{host}:{port}/health")
    running = stack.supervisor.start(component, stack.env(), stack.options.project_dir)
    stack.supervisor.wait_ready(running, 60)
    return f"http://{host}:{port}"


if __name__ == "__main__":
    raise SystemExit(main())
