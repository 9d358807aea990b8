"""The stack's moto launcher serializes DynamoDB: concurrent conditional transactions on
one item let exactly one through, and the counter it bumps moves exactly once (stock
moto fails this under contention; the orchestrator's exactly-once design relies on it)."""

from __future__ import annotations

import subprocess
import sys
import threading

import boto3
import pytest
import requests

from arke_local.endpoints import free_port
from arke_local.moto_server import wait_until_serving

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
    wait_until_serving(url, proc)
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


def _lsi_table(url: str):
    ddb = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    ddb.create_table(
        TableName="lsi-query", BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t}
                              for n, t in (("p", "S"), ("r", "S"), ("due", "N"))],
        KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}, {"AttributeName": "r", "KeyType": "RANGE"}],
        LocalSecondaryIndexes=[{"IndexName": "due-index", "Projection": {"ProjectionType": "ALL"},
                                "KeySchema": [{"AttributeName": "p", "KeyType": "HASH"},
                                              {"AttributeName": "due", "KeyType": "RANGE"}]}])
    for p in ("a", "b"):
        for i in range(40):
            item = {"p": {"S": p}, "r": {"S": f"r{i:02d}"}, "odd": {"BOOL": bool(i % 2)}}
            if i % 5:  # sparse: every fifth item is not in the index
                item["due"] = {"N": str((i * 7) % 40)}
            ddb.put_item(TableName="lsi-query", Item=item)
    return ddb


def test_a_local_index_query_answers_as_dynamodb_does(serialized_moto):
    """The launcher reads only the queried partition and hands moto the first limit + 1
    items in the index's order: the answers (order, limit, pages, filters, reverse) must be
    those of a query over the whole index."""
    ddb = _lsi_table(serialized_moto)
    expected = sorted(((i * 7) % 40, f"r{i:02d}") for i in range(40) if i % 5)
    in_range = [e for e in expected if 5 <= e[0] <= 30]

    def query(**kw):
        pages, start = [], None
        while True:
            args = dict(TableName="lsi-query", IndexName="due-index", ConsistentRead=True,
                        KeyConditionExpression="p = :p AND due BETWEEN :lo AND :hi",
                        ExpressionAttributeValues={":p": {"S": "a"}, ":lo": {"N": "5"}, ":hi": {"N": "30"}}, **kw)
            if "FilterExpression" in kw:
                args["ExpressionAttributeValues"][":t"] = {"BOOL": True}
            if start:
                args["ExclusiveStartKey"] = start
            answer = ddb.query(**args)
            pages.append([(int(i["due"]["N"]), i["r"]["S"]) for i in answer["Items"]])
            start = answer.get("LastEvaluatedKey")
            if not start:
                return pages

    first = query(Limit=4)
    assert first[0] == in_range[:4] and sum(first, []) == in_range  # pages go on to the end
    assert sum(query(Limit=4, ScanIndexForward=False), []) == in_range[::-1]
    odd = [e for e in in_range if int(e[1][1:]) % 2]
    assert sum(query(Limit=3, FilterExpression="odd = :t"), []) == odd
    everything = ddb.query(TableName="lsi-query", IndexName="due-index",
                           KeyConditionExpression="p = :p", ExpressionAttributeValues={":p": {"S": "b"}})
    assert len(everything["Items"]) == len(expected)  # the other partition, the sparse items left out
