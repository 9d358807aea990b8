"""Issue 8 §6 and the transaction boundary: the final callback is delivered at least once,
every re-send of one delivery carrying the same Idempotency-Key; and a transaction that
DynamoDB cancels for a conflict (another transaction on the batch item at that instant) is
tried again, never mistaken for a lost race that would drop a machine's result."""

from __future__ import annotations

import json
from typing import Any

import pytest

import app
from chalicelib import store

from .conftest import (
    LambdaContext,
    drive,
    get_status,
    make_services,
    message,
    post_admin,
    post_callback,
    run_pass,
    sqs_event,
)
from .ddb_hooks import Crash, DynamoHooks


def _done_with_deliveries(services, client, fly) -> None:
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    run_pass(services)
    post_callback(client, fly.requests[0])


def test_resends_of_one_delivery_carry_one_key_and_a_new_delivery_a_new_one(services, client, fly, ingest, env):
    services = make_services(env, MAX_RETRY_ATTEMPTS="2")
    ingest.script = [500, 500]
    _done_with_deliveries(services, client, fly)
    drive(services, lambda: get_status(client)["status"] == "ERROR")
    first_keys = [r["idempotency_key"] for r in ingest.received]
    assert len(first_keys) == 2 and first_keys[0] and len(set(first_keys)) == 1
    assert post_admin(client, "redeliver").status_code == 200
    drive(services, lambda: get_status(client)["status"] == "DONE")
    second_key = ingest.received[-1]["idempotency_key"]
    assert second_key and second_key != first_keys[0]


def test_a_pass_that_dies_after_the_post_sends_it_again_with_the_same_key(services, client, fly, ingest):
    _done_with_deliveries(services, client, fly)
    hooks = DynamoHooks(services.settings)
    # the pass dies as it records the delivery: the POST was made, the batch not marked DONE
    hooks.crash_before(lambda op, params: op == "UpdateItem"
                       and "delivered_at" in str(params.get("ExpressionAttributeNames", {}).values()))
    with pytest.raises(Crash):
        drive(services, lambda: False)
    hooks.detach()
    assert len(ingest.received) == 1 and get_status(client)["status"] == "FINALIZING"
    store.release_lease("batch_abc", "test-tick", None)  # the dead pass's lease, expired
    drive(services, lambda: get_status(client)["status"] == "DONE")
    keys = [r["idempotency_key"] for r in ingest.received]
    assert len(keys) == 2 and keys[0] == keys[1]


class Conflicts:
    """Answers the first `n` TransactWriteItems with DynamoDB's TransactionConflict, as a
    before-call hook may (botocore then raises the error, as from the wire)."""

    def __init__(self, settings, n: int) -> None:
        self.left = n
        self.client = store.connection(settings).client
        self.client.meta.events.register("before-call.dynamodb.TransactWriteItems", self)

    def __call__(self, model: Any, params: Any, **_: Any) -> Any:
        if self.left <= 0:
            return None
        self.left -= 1
        body = params.get("body") if isinstance(params, dict) else None
        items = json.loads(body)["TransactItems"] if body else [{}]
        reasons = [{"Code": "None"} for _ in items]
        reasons[-1] = {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
        error = {"Error": {"Code": "TransactionCanceledException",
                           "Message": "Transaction cancelled, please refer cancellation reasons for specific "
                                      "reasons [None, TransactionConflict]"},
                 "CancellationReasons": reasons, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return _Http(400), error

    def detach(self) -> None:
        self.client.meta.events.unregister("before-call.dynamodb.TransactWriteItems", self)


class _Http:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.content = b""


def test_a_conflict_on_the_batch_item_is_retried_and_the_result_counts(services, client, fly):
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    run_pass(services)
    conflicts = Conflicts(services.settings, 2)
    answer = post_callback(client, fly.requests[0])
    conflicts.detach()
    assert conflicts.left == 0
    assert answer.json_body == {"ok": True}
    assert get_status(client)["progress"]["tasks_completed"] == 1
