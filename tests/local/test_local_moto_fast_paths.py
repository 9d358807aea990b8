"""The stack's moto launcher cuts moto's own costs per request; what it answers must not change.

- Plain DynamoDB results are written with `json.dumps` instead of moto's shape-walking
  serializer. In check mode it writes every such result both ways and fails on a
  difference; here every data-plane operation the orchestrator uses (and the attribute types
  it does not) goes through moto in-process in check mode, and the fast path must have been
  taken for all but binary values, which stay with moto's serializer.
- An UpdateExpression is parsed once: the same expression with other values, on other
  items, in transactions and alone, must still write what each request says."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws
from moto.core.responses import ActionResult
from moto.dynamodb.parsing.expressions import UpdateExpressionParser

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


def test_an_update_expression_parsed_once_still_writes_each_requests_values(monkeypatch):
    monkeypatch.setattr(UpdateExpressionParser, "make", UpdateExpressionParser.make)  # restored after
    moto_server._parse_update_expressions_once()
    UpdateExpressionParser.make.cache_clear()  # an earlier test in this process (the fleet sim) may have used it
    expression = "SET #s = :s, n = if_not_exists(n, :zero) + :by REMOVE gone ADD tags :tag"
    with mock_aws():
        ddb = _table()
        for i in range(4):
            ddb.put_item(TableName=TABLE, Item={"p": {"S": "a"}, "r": {"S": f"r{i}"}, "gone": {"S": "x"}})

        def update(i: int, by: int, status: str) -> dict:
            return {"TableName": TABLE, "Key": {"p": {"S": "a"}, "r": {"S": f"r{i}"}},
                    "UpdateExpression": expression, "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {":s": {"S": status}, ":zero": {"N": "0"},
                                                  ":by": {"N": str(by)}, ":tag": {"SS": [status]}}}

        for i in range(4):
            ddb.update_item(**update(i, i + 1, f"s{i}"))
        ddb.transact_write_items(TransactItems=[{"Update": update(0, 10, "t0")}, {"Update": update(1, 20, "t1")}])
        with pytest.raises(ddb.exceptions.ClientError, match="ValidationException"):
            ddb.update_item(**{**update(2, 1, "bad"), "UpdateExpression": "SET = :s"})  # still refused
        items = {i["r"]["S"]: i for i in ddb.scan(TableName=TABLE)["Items"]}
    assert [(items[f"r{i}"]["status"]["S"], items[f"r{i}"]["n"]["N"]) for i in range(4)] == [
        ("t0", "11"), ("t1", "22"), ("s2", "3"), ("s3", "4")]
    assert items["r0"]["tags"]["SS"] == ["s0", "t0"] and all("gone" not in item for item in items.values())
    info = UpdateExpressionParser.make.cache_info()
    assert info.misses == 2 and info.hits >= 8  # the expression and the refused one; every write reused it
