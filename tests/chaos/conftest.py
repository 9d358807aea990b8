"""Fixtures of the chaos suite: the e2e tests' local stack (same fixture code, same handle),
started with knobs that make faults cheap to recover from (short timeouts, short leases,
short tick invocations) and with synthetic machines (the emulator plays the worker), plus
the helpers a chaos test needs: kill the pump, read the tables and the queues."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import pytest
import requests

from arke_local.endpoints import DLQ_NAME, LOCAL_SECRETS, QUEUE_NAME
from arke_local.fly_emulator import SYNTHETIC, WORKER_IMAGE
from chalicelib.models import batch_counts_keys, batch_shard_keys
from chalicelib.store.counts import PHASE_COUNTS
from tests.e2e.conftest import E2E_ENV, E2EStack, run_local_stack

# Orchestrator knobs (chalicelib.settings) and emulator knobs (FLY_EMULATOR_*), over E2E_ENV.
TASK_TIMEOUT_MS = 6000
FLY_REQUEST_TIMEOUT_MS = 1500
CHAOS_ENV = {
    **E2E_ENV,
    "FLY_CREATE_RATE": "30",
    "FLY_CREATE_BURST": "30",
    "FLY_EMULATOR_CREATE_RATE": "30",
    "FLY_EMULATOR_CREATE_BURST": "30",
    "FLY_EMULATOR_MAX_MACHINES": "400",
    "FLY_EMULATOR_IMAGES": json.dumps({WORKER_IMAGE: SYNTHETIC}),
    "FLY_EMULATOR_SYNTHETIC_WORK_S": "0.3",
    "MAX_MACHINES_IN_FLIGHT": "100",
    "ALARM_DELAY_TIFF_CONVERSION": "500",
    "ALARM_DELAY_ERROR_RETRY": "2000",
    "MAX_RETRY_ATTEMPTS": "5",
    "TASK_TIMEOUT_TIFF_CONVERSION": str(TASK_TIMEOUT_MS),
    "FLY_REQUEST_TIMEOUT_MS": str(FLY_REQUEST_TIMEOUT_MS),
    "LEASE_MS": "3000",  # a killed pump's lease is free again 3 s later
    # The pump's tick invocations last 8 s, of which the last 2 s are margin: short
    # invocations, so a kill loses little and a restart resumes quickly.
    "ARKE_PUMP_TICK_TIMEOUT_MS": "8000",
    "TICK_MARGIN_MS": "2000",
    "ARKE_PUMP_WAIT_S": "1",
    "ARKE_PUMP_RETRY_VISIBILITY_S": "1",
    "MACHINE_MODE": "single",  # test_chaos_batch; test_chaos_pool runs CHAOS_POOL_ENV
}

# The same batch in pool mode (docs/pool.md): a small pool, heartbeats every 0.5 s, a held
# task retried 3 s after its machine fell silent.
CHAOS_POOL_ENV = {
    **CHAOS_ENV,
    "MACHINE_MODE": "pool",
    "MAX_POOL_MACHINES_PER_BATCH": "20",
    "HEARTBEAT_TIMEOUT_MS": "3000",
    "HEARTBEAT_INTERVAL_MS": "500",
    "POOL_BOOT_MS": "500",
    "POOL_PRIOR_TASK_MS": "300",
    "FLY_EMULATOR_SYNTHETIC_TASK_S": "uniform:0.1:0.5",
}


@dataclass
class ChaosStack(E2EStack):
    pump_kills: int = 0
    pump_kills_mid_pass: int = 0

    def kill_pump(self, activity_wait_s: float = 5.0) -> bool:
        """SIGKILL the event pump's process group (intake and tick) and start a new one, as
        Lambda would after a crash or a timeout. Aims at a pass in progress: waits (up to
        `activity_wait_s`) for a new line of the tiff phase in the pump's log and kills right
        after it. True when it saw one (the kill hit a pass mid-way)."""
        log_path = self.log_dir / "pump.log"
        seen = log_path.stat().st_size if log_path.exists() else 0
        mid_pass = False
        deadline = time.monotonic() + activity_wait_s
        while time.monotonic() < deadline:
            with open(log_path, "rb") as f:
                f.seek(seen)
                fresh = f.read()
            if b"[TiffConversion]" in fresh:
                mid_pass = True
                break
            time.sleep(0.02)
        self.stack.kill_component("pump")
        self.pump_kills += 1
        self.pump_kills_mid_pass += mid_pass
        self.stack.start_component("pump")
        return mid_pass

    def injections(self) -> list[dict]:
        """The faults that hit a machine: [{"kind", "machine_id", "name", "at"}, ...]."""
        return requests.get(f"{self.fly_url}/_emulator/injections", timeout=10).json()

    def machines(self, app: str = "arke-tiff-worker") -> list[dict]:
        """Every machine of `app` the emulator created, destroyed ones included."""
        resp = requests.get(f"{self.fly_url}/v1/apps/{app}/machines",
                            params={"include_deleted": "true"}, timeout=30,
                            headers={"Authorization": f"Bearer {LOCAL_SECRETS['FLY_API_TOKEN']}"})
        resp.raise_for_status()
        return resp.json()

    def sqs(self):
        return self.target.aws("sqs")

    def queue_url(self, name: str = QUEUE_NAME) -> str:
        return self.sqs().get_queue_url(QueueName=name)["QueueUrl"]

    def send(self, body: str) -> str:
        return self.sqs().send_message(QueueUrl=self.queue_url(), MessageBody=body)["MessageId"]

    def dead_letters(self, wait_s: float = 30) -> list[dict]:
        """Every message in the dead-letter queue, read within `wait_s` (left there: the
        messages become visible again after the default visibility timeout)."""
        sqs = self.sqs()
        url = self.queue_url(DLQ_NAME)
        got: dict[str, dict] = {}
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       VisibilityTimeout=60, AttributeNames=["All"])
            messages = resp.get("Messages", [])
            for m in messages:
                got[m["MessageId"]] = m
            if not messages and got:
                break
        return list(got.values())

    def table_items(self, table: str, batch_id: str, key: str = "batch_id") -> list[dict]:
        """Every item of `table` under the hash key `key` = `batch_id` (a query, paginated)."""
        ddb = self.target.aws("dynamodb")
        items: list[dict] = []
        kw: dict = {"TableName": table, "KeyConditionExpression": f"{key} = :b",
                    "ExpressionAttributeValues": {":b": {"S": batch_id}}, "ConsistentRead": True}
        while True:
            resp = ddb.query(**kw)
            items.extend(resp["Items"])
            if "LastEvaluatedKey" not in resp:
                return items
            kw["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def counted(self, table: str, batch_id: str) -> dict[str, int]:
        """The batch's counters as stored: the sums of its counts items (store/counts.py)."""
        sums: dict[str, int] = {}
        for key in batch_counts_keys(batch_id):
            for item in self.table_items(table, key):
                for name in PHASE_COUNTS:
                    sums[name] = sums.get(name, 0) + int(float(item.get(name, {}).get("N", 0)))
        return sums

    def task_items(self, table: str, batch_id: str) -> list[dict]:
        """Every task item of a batch: one query per shard (models.batch_shard_keys)."""
        return [item for shard in batch_shard_keys(batch_id)
                for item in self.table_items(table, shard, key="shard_key")]


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory):
    """The whole local stack on free ports with CHAOS_ENV (the e2e fixture's recipe)."""
    extra = dict(CHAOS_ENV)
    # By hand: CHAOS_ENV_<NAME>=value overrides one knob, e.g. CHAOS_ENV_MAX_MACHINES_IN_FLIGHT=50.
    extra.update({k[len("CHAOS_ENV_"):]: v for k, v in os.environ.items() if k.startswith("CHAOS_ENV_")})
    yield from run_local_stack(tmp_path_factory, "chaos", extra, ChaosStack)


@pytest.fixture(scope="module")
def chaos_pool_stack(tmp_path_factory):
    """The same stack in pool mode (CHAOS_POOL_ENV)."""
    yield from run_local_stack(tmp_path_factory, "chaos-pool", dict(CHAOS_POOL_ENV), ChaosStack)
