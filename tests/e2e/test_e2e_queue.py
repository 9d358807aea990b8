"""End to end: a message intake cannot use is retried by the pump and dead-lettered by
the queue's redrive policy; a duplicate of a good message starts nothing new."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.e2e


def test_e2e_poison_message_lands_in_the_dead_letter_queue(e2e_local_stack):
    sqs = e2e_local_stack.target.aws("sqs")
    queue_url = sqs.get_queue_url(QueueName="arke-preprocess-jobs")["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName="preprocess-dlq")["QueueUrl"]
    body = json.dumps({"not": "a batch", "marker": time.time()})
    sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    deadline = time.monotonic() + 60
    moved = []
    while time.monotonic() < deadline and not moved:
        got = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=2, AttributeNames=["All"])
        moved = [m for m in got.get("Messages", []) if m["Body"] == body]
    assert moved, "the poison message never reached the dead-letter queue\n" + e2e_local_stack.log_tails()
    assert int(moved[0]["Attributes"]["ApproximateReceiveCount"]) >= 3
    sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=moved[0]["ReceiptHandle"])
