"""The stack's moto launcher serializes DynamoDB: concurrent conditional transactions on
one item let exactly one through, and the counter it bumps moves exactly once (stock
moto fails this under contention; the orchestrator's exactly-once design relies on it)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import boto3
import pytest
import requests

from arke_local.endpoints import free_port

THREADS = 8
TRIALS = 15


@pytest.fixture(scope="module")
def serialized_moto():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "arke_local.moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{url}/moto-api/", timeout=1)
            break
        except requests.RequestException:
            assert time.monotonic() < deadline and proc.poll() is None, "moto did not start"
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def test_conditional_transactions_are_exactly_once(serialized_moto):
    kw = dict(endpoint_url=serialized_moto, region_name="us-east-1",
              aws_access_key_id="testing", aws_secret_access_key="testing")
    ddb = boto3.client("dynamodb", **kw)
    ddb.create_table(
        TableName="race", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    clients = [boto3.client("dynamodb", **kw) for _ in range(THREADS)]
    for trial in range(TRIALS):
        task, counter = f"task-{trial}", f"batch-{trial}"
        ddb.put_item(TableName="race", Item={"k": {"S": task}, "status": {"S": "processing"}})
        ddb.put_item(TableName="race", Item={"k": {"S": counter}, "n": {"N": "0"}})
        wins: list[int] = []
        barrier = threading.Barrier(THREADS)

        def complete(client, task=task, counter=counter, wins=wins, barrier=barrier):
            barrier.wait()
            try:
                client.transact_write_items(TransactItems=[
                    {"Update": {"TableName": "race", "Key": {"k": {"S": task}},
                                "UpdateExpression": "SET #s = :done", "ConditionExpression": "#s = :p",
                                "ExpressionAttributeNames": {"#s": "status"},
                                "ExpressionAttributeValues": {":done": {"S": "completed"},
                                                              ":p": {"S": "processing"}}}},
                    {"Update": {"TableName": "race", "Key": {"k": {"S": counter}},
                                "UpdateExpression": "ADD n :one",
                                "ExpressionAttributeValues": {":one": {"N": "1"}}}},
                ])
                wins.append(1)
            except client.exceptions.TransactionCanceledException:
                pass

        threads = [threading.Thread(target=complete, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        n = ddb.get_item(TableName="race", Key={"k": {"S": counter}})["Item"]["n"]["N"]
        assert (len(wins), n) == (1, "1"), f"trial {trial}: {len(wins)} wins, counter {n}"


def test_dynamodb_requests_are_counted_by_access_key_and_operation(serialized_moto):
    """The benchmarks' per-task request counts come from here: each signer's DynamoDB
    requests, by operation; other services are not counted."""
    url = f"{serialized_moto}/_arke/dynamodb-requests"

    def client(service: str, key: str):
        return boto3.client(service, endpoint_url=serialized_moto, region_name="us-east-1",
                            aws_access_key_id=key, aws_secret_access_key="testing")

    before = requests.get(url, timeout=5).json()
    ddb, observer = client("dynamodb", "counted-orchestrator"), client("dynamodb", "counted-observer")
    ddb.create_table(
        TableName="counted", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for i in range(3):
        ddb.put_item(TableName="counted", Item={"k": {"S": f"item-{i}"}})
    observer.get_item(TableName="counted", Key={"k": {"S": "item-0"}})
    client("sqs", "counted-orchestrator").list_queues()
    counts = requests.get(url, timeout=5).json()

    assert "counted-orchestrator" not in before
    assert counts["counted-orchestrator"] == {"CreateTable": 1, "PutItem": 3}
    assert counts["counted-observer"] == {"GetItem": 1}
