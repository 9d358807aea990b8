"""The event pump: SQS delivery one message at a time, redrive to the DLQ, the tick loop."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest
import requests
from chalice.app import CloudWatchEvent, SQSEvent

from arke_local import infra
from arke_local.pump import EventPump, LambdaContext, scheduled_event, sqs_event


@pytest.fixture
def queues(moto_endpoint, monkeypatch):
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    cfg = infra.InfraConfig(endpoint_url=moto_endpoint, tables=False, create_bucket=False, max_receive_count=3)
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    queue_url, dlq_url = infra.ensure_queues(sqs, cfg)
    return sqs, queue_url, dlq_url


def _count(sqs, url):
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_success_is_deleted_and_the_event_is_sqs_shaped(queues):
    sqs, queue_url, _ = queues
    seen = []

    def intake(event, context):
        records = list(SQSEvent(event, context))  # what Chalice's handler wraps it in
        seen.append((records[0].body, context.function_name, context.get_remaining_time_in_millis()))

    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"batch_id": "b1"}))
    pump = EventPump(intake, None, sqs=sqs, queue_url=queue_url, wait_time_s=1)
    assert pump.poll_once() == 1
    assert json.loads(seen[0][0]) == {"batch_id": "b1"}
    assert seen[0][1].endswith("-intake") and 0 < seen[0][2] <= 60_000
    assert _count(sqs, queue_url) == 0
    assert pump.stats["intake_ok"] == 1


def test_failure_is_retried_then_dead_lettered(queues):
    sqs, queue_url, dlq_url = queues
    attempts = []

    def intake(event, context):
        attempts.append(event["Records"][0]["attributes"]["ApproximateReceiveCount"])
        raise ValueError("poison")

    sqs.send_message(QueueUrl=queue_url, MessageBody="not json")
    pump = EventPump(intake, None, sqs=sqs, queue_url=queue_url, wait_time_s=0, retry_visibility_s=0)
    for _ in range(6):
        pump.poll_once(wait_time_s=0)
    assert attempts == ["1", "2", "3"]  # maxReceiveCount 3, then the DLQ
    moved = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1)["Messages"]
    assert moved[0]["Body"] == "not json"
    assert _count(sqs, queue_url) == 0


def test_tick_is_invoked_again_when_it_returns():
    calls = []

    def tick(event, context):
        wrapped = CloudWatchEvent(event, context)
        assert wrapped.detail_type == "Scheduled Event"
        calls.append(context.aws_request_id)
        while context.get_remaining_time_in_millis() > 50:  # the orchestrator's loop
            time.sleep(0.01)

    pump = EventPump(None, tick, tick_timeout_ms=200, tick_min_interval_s=0.0)
    pump.start()
    time.sleep(0.9)
    pump.stop()
    assert 3 <= len(calls) <= 6
    assert len(set(calls)) == len(calls)  # a new request id each invocation


def test_a_failing_tick_does_not_stop_the_schedule():
    calls = threading.Semaphore(0)

    def tick(event, context):
        calls.release()
        raise RuntimeError("boom")

    pump = EventPump(None, tick, tick_min_interval_s=0.05)
    pump.start()
    assert calls.acquire(timeout=2) and calls.acquire(timeout=2)
    pump.stop()
    assert pump.stats["tick_failed"] >= 2


def test_context_counts_down():
    ctx = LambdaContext("fn", 1000)
    first = ctx.get_remaining_time_in_millis()
    time.sleep(0.05)
    assert 0 < ctx.get_remaining_time_in_millis() < first <= 1000
    assert ctx.aws_request_id and ctx.function_name == "fn"
    assert LambdaContext("fn", 0).get_remaining_time_in_millis() == 0


def test_event_shapes():
    msg = {"MessageId": "m", "ReceiptHandle": "r", "Body": "{}", "MD5OfBody": "x", "Attributes": {}}
    rec = sqs_event(msg, "arn:aws:sqs:us-east-1:1:q")["Records"][0]
    assert rec["eventSource"] == "aws:sqs" and rec["body"] == "{}" and rec["receiptHandle"] == "r"
    ev = scheduled_event("rule")
    assert ev["source"] == "aws.events" and ev["resources"][0].endswith("rule/rule")
