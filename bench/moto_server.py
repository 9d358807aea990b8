"""The stack's moto server under a pool's DynamoDB request mix: CPU per request, against stock moto.

Under a large pool every DynamoDB request of the stack goes through one moto process and,
in the stack's launcher (`arke_local.moto_server`), through one lock: moto's own CPU per
request is the stack's ceiling. This script starts a server, writes a 10,000-task table
(8 shards, a sparse local index as the tasks table has), and from `--threads` client
threads sends the pool's mix for `--seconds`: a query of 8 ready tasks of one shard, a claim
(a transaction of the task and a counter item), a GetItem of the counter item and a
heartbeat UpdateItem. It prints requests per second and the server's CPU milliseconds per
request (from /proc), for each server in turn:

- `stock`: `python -m moto.server` (no lock, none of the launcher's changes: its local index
  queries read the whole table and its transactions copy it);
- `stack-untrimmed`: the launcher without `trim_per_request_costs` (`ARKE_MOTO_NO_TRIMS=1`),
  the baseline: what the stack ran before its per-request costs were cut;
- `stack`: `python -m arke_local.moto_server` as the stack runs it;
- `stack-check`: the same in check mode (`ARKE_MOTO_CHECK_FAST_JSON=1`, the tests' mode).

Run: `make bench-moto` (or `python -m bench.moto_server [--seconds S] [--threads N]`).
The clients share the machine's cores with the server: compare runs of one invocation.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from rich.console import Console
from rich.table import Table

from arke_local.endpoints import free_port
from arke_local.moto_server import CHECK_FAST_JSON_ENV, NO_TRIMS_ENV, wait_until_serving

ROOT = Path(__file__).resolve().parents[1]
TASKS = 10_000
SHARDS = 8
TABLE = "bench-tasks"
SERVERS = {
    "stock": (["-m", "moto.server"], {}),
    "stack-untrimmed": (["-m", "arke_local.moto_server"], {NO_TRIMS_ENV: "1"}),
    "stack": (["-m", "arke_local.moto_server"], {}),
    "stack-check": (["-m", "arke_local.moto_server"], {CHECK_FAST_JSON_ENV: "1"}),
}
BASELINE = "stack-untrimmed"


@dataclass(frozen=True)
class Result:
    server: str
    requests: int
    seconds: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_s / self.requests


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client(url: str) -> object:
    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing",
                        config=Config(max_pool_connections=50, retries={"max_attempts": 0}))


def _task(i: int) -> dict:
    return {"pk": {"S": f"b#{i % SHARDS}"}, "sk": {"S": f"task{i:06d}"}, "open": {"N": str(i)},
            "status": {"S": "pending"}, "attempts": {"N": "0"},
            "input_key": {"S": f"archive/{'x' * 80}/{i}.tif"},
            "log": {"M": {"1": {"M": {"start": {"N": "1"}, "machine": {"S": "m" * 20}}}}}}


def _load(url: str) -> None:
    ddb = _client(url)
    ddb.create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"},
                              {"AttributeName": "open", "AttributeType": "N"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        LocalSecondaryIndexes=[{"IndexName": "open-index", "Projection": {"ProjectionType": "ALL"},
                                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                                              {"AttributeName": "open", "KeyType": "RANGE"}]}])
    for start in range(0, TASKS, 25):
        ddb.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": _task(i)}}
                                                   for i in range(start, min(TASKS, start + 25))]})
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": "batch"}, "sk": {"S": "batch"}, "running": {"N": "0"}})


def _pull_and_report(ddb: object, rng: random.Random) -> int:
    """One task's requests in the pool's mix; returns how many were made."""
    i = rng.randrange(TASKS)
    key = {"pk": {"S": f"b#{i % SHARDS}"}, "sk": {"S": f"task{i:06d}"}}
    ddb.query(TableName=TABLE, IndexName="open-index", ConsistentRead=True, Limit=8,
              KeyConditionExpression="pk = :p AND #o BETWEEN :lo AND :hi", ExpressionAttributeNames={"#o": "open"},
              ExpressionAttributeValues={":p": key["pk"], ":lo": {"N": "0"}, ":hi": {"N": str(TASKS)}})
    ddb.transact_write_items(TransactItems=[
        {"Update": {"TableName": TABLE, "Key": key, "ConditionExpression": "attribute_exists(pk)",
                    "UpdateExpression": "SET attempts = attempts + :one, #s = :p, #l.#a = :start",
                    "ExpressionAttributeNames": {"#s": "status", "#l": "log", "#a": "2"},
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":p": {"S": "processing"},
                                                  ":start": {"M": {"start": {"N": str(i)}}}}}},
        {"Update": {"TableName": TABLE, "Key": {"pk": {"S": "batch"}, "sk": {"S": "batch"}},
                    "UpdateExpression": "ADD running :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}}])
    ddb.get_item(TableName=TABLE, Key={"pk": {"S": "batch"}, "sk": {"S": "batch"}}, ConsistentRead=True)
    ddb.update_item(TableName=TABLE, Key=key, UpdateExpression="SET heartbeat = :n",
                    ExpressionAttributeValues={":n": {"N": str(time.time())}})
    return 4


def measure(server: str, seconds: float, threads: int) -> Result:
    args, extra_env = SERVERS[server]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in (CHECK_FAST_JSON_ENV, NO_TRIMS_ENV)}  # where asked
    env.update(extra_env)
    proc = subprocess.Popen([sys.executable, *args, "-H", "127.0.0.1", "-p", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, proc)
        _load(url)
        counts = [0] * threads
        stop = time.monotonic() + seconds

        def work(n: int) -> None:
            ddb, rng = _client(url), random.Random(n)
            while time.monotonic() < stop:
                counts[n] += _pull_and_report(ddb, rng)

        cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return Result(server, sum(counts), time.monotonic() - t0, _cpu_s(proc.pid) - cpu0)
    finally:
        proc.kill()  # moto's server may sit out a SIGTERM while its threads finish
        proc.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.moto_server", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="load per server")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    args = parser.parse_args(argv)
    results = [measure(server, args.seconds, args.threads) for server in SERVERS]
    baseline = next(r for r in results if r.server == BASELINE)
    table = Table(title=f"moto under the pool's request mix ({args.threads} threads, {args.seconds:.0f} s each)")
    for column in ("server", "requests", "req/s", "server CPU ms/request", f"vs {BASELINE}"):
        table.add_column(column, justify="left" if column == "server" else "right")
    for r in results:
        table.add_row(r.server, str(r.requests), f"{r.per_s:.0f}", f"{r.cpu_ms_per_request:.2f}",
                      f"{baseline.cpu_ms_per_request / r.cpu_ms_per_request:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
