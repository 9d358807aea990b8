"""Orchestrator benchmark: DynamoDB requests per task and per pool pull, and how long a tick pass takes.

Run: `make bench-orchestrator` (or `python -m bench.orchestrator [--sizes 100,5000]`).
The smallest size (at most 100 tasks) also runs from message to DONE for the per-task count.
AWS and R2 are moto in-process (each TIFF a 24 MP header, read by ranged GETs to size its
machine), Fly is the local emulator with idle machines and no rate limit,
the ingest service is the local receiver; callbacks go through the real routes (Chalice's
test client). Times are moto's, not DynamoDB's: read them as ratios between sizes (the
baseline is the smallest batch), which is what invariant 4 is about.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

SPAWN_PER_PASS = 100
BASE_ENV = {
    "STAGE": "dev", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench", "ORCHESTRATOR_URL": "https://orchestrator.bench",
    "FLY_API_TOKEN": "bench-token", "CALLBACK_SIGNING_KEY": "bench-signing-key", "R2_ACCOUNT_ID": "bench", "R2_ACCESS_KEY_ID": "bench",
    "R2_SECRET_ACCESS_KEY": "bench", "FLY_CREATE_RATE": "1000000", "FLY_CREATE_BURST": "1000000",
    "MAX_MACHINES_IN_FLIGHT": "100000", "ALARM_DELAY_TIFF_CONVERSION": "50",
}
R2_ENDPOINT = "https://bench.r2.cloudflarestorage.com"  # the account's endpoint, served by moto


def message(batch_id: str, tiffs: int) -> dict[str, Any]:
    prefix = f"staging/{batch_id}/"
    files = [{"r2_key": f"{prefix}scans/page_{i:05d}.tif", "logical_path": f"scans/page_{i:05d}.tif",
              "file_name": f"page_{i:05d}.tif", "file_size": 25_000_000, "content_type": "image/tiff"}
             for i in range(tiffs)]
    return {"batch_id": batch_id, "r2_prefix": prefix, "total_files": tiffs,
            "directories": [{"directory_path": "scans", "processing_config": {"ocr": False,
                             "describe": False, "pinax": False}, "files": files}]}


def put_headers(body: dict[str, Any]) -> None:
    """Each TIFF of the message as a 24 MP RGB header (its IFD at the end, as streaming
    writers place it: two ranged GETs), where the orchestrator's R2 client finds it."""
    import boto3

    from tests.orchestrator.tiff_headers import tiff_header_file

    data = tiff_header_file(6000, 4000, 3, ifd_at_end=True, data_bytes=100_000)
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="arke-staging")
    for file in body["directories"][0]["files"]:
        s3.put_object(Bucket="arke-staging", Key=file["r2_key"], Body=data)


def drain_due(services: Any, owner: str) -> float:
    """Wait for the batch's next pass to come due, run one round, return its seconds."""
    from chalicelib import scheduler

    time.sleep(services.settings.alarm_delay_tiff_conversion_ms / 1000 + 0.01)
    started = time.perf_counter()
    scheduler.run_due_passes(services, owner)
    return time.perf_counter() - started


def run_size(size: int, fly_url: str, ingest_url: str) -> dict[str, Any]:
    """One batch of `size` TIFFs in single mode (a machine per task: the passes' own cost per
    task; pool mode's pulls are `run_idle_pulls`). Every pass may create at most SPAWN_PER_PASS machines and
    at most SPAWN_PER_PASS may be in flight, so a pass does the same work at every size and
    any growth with the batch is the orchestrator's own cost."""
    from chalice.test import Client

    import app
    from chalicelib import intake, secrets, signing, store
    from chalicelib.ddb_metrics import RequestCounter
    from chalicelib.models import ensure_tables
    from chalicelib.services import build_services, use_services
    from chalicelib.settings import Settings

    env = dict(BASE_ENV, FLY_API_HOSTNAME=fly_url, WORKER_URL=ingest_url, MACHINE_MODE="single",
               BATCH_SIZE_TIFF_CONVERSION=str(SPAWN_PER_PASS), MAX_MACHINES_IN_FLIGHT=str(SPAWN_PER_PASS))
    os.environ.update(env)
    secrets.forget_secrets()
    settings = Settings.from_env(env)
    services = build_services(settings)
    ensure_tables(settings)
    use_services(services)
    counter = RequestCounter().attach(settings)
    header_gets: list[str] = []
    services.r2().meta.events.register("before-call.s3.GetObject", lambda **_: header_gets.append("get"))
    batch_id = f"bench_{size}"
    result: dict[str, Any] = {"tasks": size}
    put_headers(message(batch_id, size))

    started = time.perf_counter()
    intake.handle_body(services, json.dumps(message(batch_id, size)), "bench")
    result["intake_s"] = time.perf_counter() - started
    result["intake_requests"] = counter.total()
    counter.take()

    result["spawn_pass_s"] = drain_due(services, "bench")
    result["spawn_pass_requests"] = counter.total()
    result["header_gets_per_machine"] = len(header_gets) / min(size, SPAWN_PER_PASS)
    counter.take()
    batch = store.get_batch(batch_id)
    assert batch.status == "TIFF_CONVERSION", (batch.status, batch.error)
    assert int(batch.tasks_in_flight) == min(size, SPAWN_PER_PASS), batch.tasks_in_flight
    counter.take()

    steady = [drain_due(services, "bench") for _ in range(5)]
    result["steady_pass_s"] = statistics.median(steady)
    result["steady_pass_requests"] = counter.total() / len(steady)
    counter.take()

    happy_requests = result["intake_requests"] + result["spawn_pass_requests"]
    callbacks = 0
    with Client(app.app) as client:
        while True:
            in_flight = [t for t in store.iter_tasks(batch_id) if t.status == "processing"]
            counter.take()  # the benchmark's own reads are not the orchestrator's
            if not in_flight:
                break
            started = time.perf_counter()
            for task in in_flight:
                attempt = int(task.attempts)
                token = signing.callback_token(env["CALLBACK_SIGNING_KEY"], batch_id, task.task_id, attempt)
                body = {"task_id": task.task_id, "batch_id": batch_id, "status": "success",
                        "output_r2_key": task.input_r2_key[:-4] + ".jpg", "output_file_name": "x.jpg",
                        "output_file_size": 1, "performance": {"total_time_ms": 1}}
                answer = client.http.post(f"/callback/{batch_id}/{task.task_id}?attempt={attempt}",
                                          headers={"Content-Type": "application/json",
                                                   "Authorization": f"Bearer {token}"}, body=json.dumps(body))
                assert answer.status_code == 200, answer.body
            if callbacks == 0:
                result["callback_ms"] = (time.perf_counter() - started) * 1000 / len(in_flight)
                result["callback_requests"] = counter.total() / len(in_flight)
            callbacks += len(in_flight)
            happy_requests += counter.total()
            counter.take()
            if size > SPAWN_PER_PASS:
                break  # the large batch is measured per event, not run to the end
            drain_due(services, "bench")
            happy_requests += counter.total()
            counter.take()

    if size <= SPAWN_PER_PASS:
        while store.get_batch(batch_id).status != "DONE":
            counter.take()
            drain_due(services, "bench")
            happy_requests += counter.total()
        counter.take()
        result["requests_per_task"] = happy_requests / size
    counter.detach()
    use_services(None)
    return result


IDLE_TASKS = 20
# This benchmark at 8ccf694 (before issue 17): an idle pull queried every shard, twice.
BEFORE_IDLE = "18.10 (tail) and 17.08 (backoff) requests, 16.00 queries each"


def run_idle_pulls(fly_url: str, ingest_url: str) -> dict[str, float]:
    """DynamoDB requests per pool pull: claiming ones (the baseline), then idle ones at the
    pool's tail (every task running: told `exit`) and while the only pending tasks wait out
    a retry's backoff (told `wait`). Pulls go through machine_api.pull with each machine's
    real token; requests are counted with botocore's event hooks."""
    from chalicelib import intake, scheduler, secrets, signing, store
    from chalicelib.callbacks import handle_callback
    from chalicelib.ddb_metrics import RequestCounter
    from chalicelib.models import ensure_tables
    from chalicelib.pool import machine_api
    from chalicelib.services import build_services, use_services
    from chalicelib.settings import Settings

    env = dict(BASE_ENV, FLY_API_HOSTNAME=fly_url, WORKER_URL=ingest_url, MACHINE_MODE="pool",
               POOL_BOOT_MS="0", MAX_POOL_MACHINES_PER_BATCH=str(IDLE_TASKS), ALARM_DELAY_ERROR_RETRY="60000")
    os.environ.update(env)
    secrets.forget_secrets()
    settings = Settings.from_env(env)
    services = build_services(settings)
    ensure_tables(settings)
    use_services(services)
    batch_id = "bench_idle"
    intake.handle_body(services, json.dumps(message(batch_id, IDLE_TASKS)), "bench-idle")
    scheduler.run_due_passes(services, "bench-idle")
    names = sorted(m.name for m in store.live_machines(batch_id))
    counter = RequestCounter().attach(settings)

    def pull(name: str) -> dict[str, Any]:
        token = signing.machine_token(env["CALLBACK_SIGNING_KEY"], batch_id, name)
        return machine_api.pull(services, batch_id, name, f"Bearer {token}")

    def per_pull(answers: list[dict[str, Any]], action: str) -> tuple[float, float]:
        made = counter.take()
        assert {a["action"] for a in answers} == {action}, answers
        return sum(made.values()) / len(answers), made["Query"] / len(answers)

    counter.take()
    tasks = [pull(name)["task"] for name in names]
    claiming = per_pull([{"action": "task"}] * len(tasks), "task")
    half = len(names) // 2

    def report(name: str, task: dict[str, Any], ok: bool) -> None:
        body: dict[str, Any] = {"task_id": task["task_id"], "batch_id": batch_id}
        body.update({"status": "success", "output_r2_key": task["output_r2_key"], "output_file_name": "x.jpg",
                     "output_file_size": 1} if ok else
                    {"status": "error", "error": "flaky", "error_code": "transfer_failed"})
        handle_callback(services, batch_id, task["task_id"], json.dumps(body).encode(), str(task["attempt"]),
                        f"Bearer {task['callback_token']}", machine_param=name)

    for name, task in zip(names[:half], tasks[:half], strict=True):
        report(name, task, ok=True)  # the pool's tail: the other half still runs
    counter.take()
    tail = per_pull([pull(name) for name in names[:half]], "exit")
    for name, task in zip(names[half:], tasks[half:], strict=True):
        report(name, task, ok=False)  # retried after 30 to 60 s
    counter.take()
    waiting = per_wait(lambda i: pull(names[half + i % (len(names) - half)]), counter)
    counter.detach()
    use_services(None)
    return {"claiming_requests": claiming[0], "claiming_queries": claiming[1],
            "tail_requests": tail[0], "tail_queries": tail[1],
            "waiting_requests": waiting[0], "waiting_queries": waiting[1]}


def per_wait(pull: Any, counter: Any, most: int = 50) -> tuple[float, float]:
    """Requests and queries per pull told `wait`, over the pulls made before the first retry
    falls due (1 to 2 s after its error: the pulls stop at the first other answer)."""
    made: list[Any] = []
    for i in range(most):
        answer = pull(i)
        if answer["action"] != "wait":
            break
        made.append(counter.take())
    assert len(made) >= 5, f"only {len(made)} pulls waited"
    return sum(sum(m.values()) for m in made) / len(made), sum(m["Query"] for m in made) / len(made)


def print_idle(idle: dict[str, float]) -> None:
    print("\nPool pulls, DynamoDB requests per pull (baseline: a pull that claims a task)\n")
    print("pull | requests | of which queries | x baseline requests")
    base = idle["claiming_requests"]
    for label, key in (("claims a task (baseline)", "claiming"), ("idle at the pool's tail (exit)", "tail"),
                       ("idle, a retry in its backoff (wait)", "waiting")):
        print(f"{label} | {idle[key + '_requests']:.2f} | {idle[key + '_queries']:.2f} | "
              f"{idle[key + '_requests'] / base:.2f}")
    print(f"(at 8ccf694, before issue 17, an idle pull made {BEFORE_IDLE})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,5000", help="batch sizes, comma separated")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    from moto import mock_aws

    from arke_local.fly_emulator import IDLE, WORKER_IMAGE, FlyEmulator
    from arke_local.ingest_receiver import IngestReceiver
    from arke_local.moto_server import serialize_dynamodb

    serialize_dynamodb()  # moto's DynamoDB is not thread-safe; real DynamoDB is linearizable
    os.environ["MOTO_S3_CUSTOM_ENDPOINTS"] = R2_ENDPOINT

    rows = []
    with mock_aws():
        fly = FlyEmulator(port=0, images={WORKER_IMAGE: IDLE}, create_rate=0, max_machines=10**6,
                          proxy_callbacks=False).start()
        ingest = IngestReceiver(port=0).start()
        try:
            for size in sizes:
                rows.append(run_size(size, fly.url, ingest.url))
            idle = run_idle_pulls(fly.url, ingest.url)
        finally:
            fly.stop()
            ingest.stop()
    base = rows[0]
    print("\nOrchestrator benchmark (moto in-process, Fly emulator idle machines; baseline: "
          f"the {base['tasks']}-task batch)\n")
    header = ("open tasks", "req/callback", "req/steady pass", "steady pass ms", "x base",
              f"spawn pass ({SPAWN_PER_PASS} machines) ms", "x base", "callback ms", "x base")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join([
            str(r["tasks"]), f"{r['callback_requests']:.2f}", f"{r['steady_pass_requests']:.1f}",
            f"{r['steady_pass_s'] * 1000:.1f}", f"{r['steady_pass_s'] / base['steady_pass_s']:.2f}",
            f"{r['spawn_pass_s'] * 1000:.0f}", f"{r['spawn_pass_s'] / base['spawn_pass_s']:.2f}",
            f"{r['callback_ms']:.2f}", f"{r['callback_ms'] / base['callback_ms']:.2f}",
        ]))
    for r in rows:
        if "requests_per_task" in r:
            print(f"\nHappy path, {r['tasks']} tasks from message to DONE: "
                  f"{r['requests_per_task']:.2f} DynamoDB requests per task")
    print(f"\nSizing machines from the TIFF header: {base['header_gets_per_machine']:.2f} R2 ranged GETs "
          "per machine (IFD at the end of the file)")
    print_idle(idle)
    print("\nDetail:", json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
