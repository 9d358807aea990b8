"""The stack's moto launcher writes plain DynamoDB results with `json.dumps` instead of
moto's shape-walking serializer. In check mode it writes every such result both ways and
fails on a difference; here every data-plane operation the orchestrator uses (and the
attribute types it does not) goes through moto in-process in check mode, and the fast path
must have been taken for all but binary values, which stay with moto's serializer."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws
from moto.core.responses import ActionResult

from arke_local import moto_server

TABLE = "fast-json"
EVERY_TYPE = {
    "p": {"S": "a"}, "r": {"S": "r1"}, "n": {"N": "12.5"}, "t": {"BOOL": True}, "z": {"NULL": True},
    "ss": {"SS": ["x", "y"]}, "ns": {"NS": ["1", "2"]}, "l": {"L": [{"S": "é"}, {"N": "3"}, {"M": {}}]},
    "m": {"M": {"deep": {"M": {"s": {"S": 'quote " and \\\\ slash'}}}, "empty": {"L": []}}},
}


@pytest.fixture
def fast_hits(monkeypatch):
    """moto in-process with the fast path in check mode; yields [(operation, fast or not)]."""
    monkeypatch.setattr(ActionResult, "execute_result", ActionResult.execute_result)  # restored after
    hits: list[tuple[str, bool]] = []
    fast_json = moto_server._fast_json

    def counted(result, operation):
        body = fast_json(result, operation)
        hits.append((operation.name, body is not None))
        return body

    monkeypatch.setattr(moto_server, "_fast_json", counted)
    moto_server._serialize_dynamodb_json_fast(check=True)
    with mock_aws():
        yield hits


def _table():
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    ddb.create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("p", "r")],
        KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}, {"AttributeName": "r", "KeyType": "RANGE"}])
    return ddb


def test_plain_results_are_written_as_moto_writes_them(fast_hits):
    ddb = _table()
    key = {"p": {"S": "a"}, "r": {"S": "r1"}}
    ddb.put_item(TableName=TABLE, Item=EVERY_TYPE)
    ddb.put_item(TableName=TABLE, Item={**EVERY_TYPE, "n": {"N": "1"}}, ReturnValues="ALL_OLD",
                 ReturnConsumedCapacity="TOTAL")
    assert ddb.get_item(TableName=TABLE, Key=key, ConsistentRead=True)["Item"]["ss"] == {"SS": ["x", "y"]}
    assert ddb.get_item(TableName=TABLE, Key={"p": {"S": "none"}, "r": {"S": "r"}}).get("Item") is None
    ddb.update_item(TableName=TABLE, Key=key, UpdateExpression="SET n = n + :one ADD c :one",
                    ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="ALL_NEW",
                    ReturnConsumedCapacity="INDEXES")
    for i in range(5):
        ddb.put_item(TableName=TABLE, Item={"p": {"S": "b"}, "r": {"S": f"r{i}"}, "i": {"N": str(i)}})
    page = ddb.query(TableName=TABLE, KeyConditionExpression="p = :p", Limit=2,
                     ExpressionAttributeValues={":p": {"S": "b"}})
    assert len(page["Items"]) == 2 and page["LastEvaluatedKey"] == {"p": {"S": "b"}, "r": {"S": "r1"}}
    assert ddb.query(TableName=TABLE, KeyConditionExpression="p = :p", Select="COUNT",
                     ExpressionAttributeValues={":p": {"S": "b"}})["Count"] == 5
    assert len(ddb.scan(TableName=TABLE)["Items"]) == 6
    ddb.batch_write_item(RequestItems={TABLE: [{"DeleteRequest": {"Key": {"p": {"S": "b"}, "r": {"S": "r4"}}}}]})
    got = ddb.batch_get_item(RequestItems={TABLE: {"Keys": [key, {"p": {"S": "b"}, "r": {"S": "r0"}}]}})
    assert len(got["Responses"][TABLE]) == 2
    ddb.transact_write_items(TransactItems=[
        {"Update": {"TableName": TABLE, "Key": key, "UpdateExpression": "SET t = :f",
                    "ExpressionAttributeValues": {":f": {"BOOL": False}}}},
        {"ConditionCheck": {"TableName": TABLE, "Key": {"p": {"S": "b"}, "r": {"S": "r0"}},
                            "ConditionExpression": "attribute_exists(p)"}}])
    assert ddb.transact_get_items(TransactItems=[{"Get": {"TableName": TABLE, "Key": key}}])[
        "Responses"][0]["Item"]["t"] == {"BOOL": False}
    ddb.delete_item(TableName=TABLE, Key=key, ReturnValues="ALL_OLD")
    fast = {name for name, was_fast in fast_hits if was_fast}
    assert fast == set(moto_server.FAST_JSON_OPERATIONS)  # every one of them took the fast path


def test_binary_values_and_errors_stay_with_motos_serializer(fast_hits):
    ddb = _table()
    ddb.put_item(TableName=TABLE, Item={"p": {"S": "a"}, "r": {"S": "r1"}, "b": {"B": b"\x00\xff"},
                                        "bs": {"BS": [b"1", b"2"]}})
    item = ddb.get_item(TableName=TABLE, Key={"p": {"S": "a"}, "r": {"S": "r1"}})["Item"]
    assert item["b"] == {"B": b"\x00\xff"} and sorted(item["bs"]["BS"]) == [b"1", b"2"]
    assert ("GetItem", False) in fast_hits  # base64 is the serializer's to write
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):
        ddb.put_item(TableName=TABLE, Item={"p": {"S": "a"}, "r": {"S": "r1"}},
                     ConditionExpression="attribute_not_exists(p)")
