"""CloudWatch Embedded Metric Format records (issue 11 §8): their shape follows the EMF
spec (every declared metric is a number at the top level, every dimension a string there,
the batch id a property and never a dimension), and a batch run through the tick, the
callbacks and the final delivery emits the seed guide's metrics with the right values."""

from __future__ import annotations

import json
import logging
import sys
import time

import pytest

import app
from chalicelib import metrics
from chalicelib.models import Batch

from .conftest import (
    LambdaContext,
    callback_path,
    drive,
    error_body,
    get_status,
    message,
    post_admin,
    run_pass,
    sqs_event,
    success_body,
)

CLOUDWATCH_UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes",
                    "Gigabytes", "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits",
                    "Percent", "Count", "Bytes/Second", "Kilobytes/Second", "Megabytes/Second",
                    "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second",
                    "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None"}


def check_emf(rec: dict) -> None:
    """The EMF specification's rules for one record, as CloudWatch applies them."""
    aws = rec["_aws"]
    assert isinstance(aws["Timestamp"], int) and abs(aws["Timestamp"] - time.time() * 1000) < 3_600_000
    (directive,) = aws["CloudWatchMetrics"]
    assert directive["Namespace"] == "Arke/Preprocess"
    for dimension_set in directive["Dimensions"]:
        assert 1 <= len(dimension_set) <= 30
        for name in dimension_set:
            assert isinstance(rec[name], str) and rec[name], name
        assert "batch_id" not in dimension_set and "task_id" not in dimension_set
    assert 1 <= len(directive["Metrics"]) <= 100
    for metric in directive["Metrics"]:
        assert metric["Unit"] in CLOUDWATCH_UNITS
        value = rec[metric["Name"]]
        assert isinstance(value, int | float) and not isinstance(value, bool), metric
    assert isinstance(rec["batch_id"], str)


class _Stdout:
    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def emf(capsys):
    """Every EMF record written while the test runs, parsed."""
    handler = logging.getLogger("arke.metrics").handlers[0]
    previous = handler.setStream(_Stdout())  # type: ignore[attr-defined]
    records: list[dict] = []

    def read() -> list[dict]:
        for line in capsys.readouterr().out.splitlines():
            if line.startswith('{"_aws"'):
                records.append(json.loads(line))
        return records
    yield read
    handler.setStream(previous)


def _named(records, name):
    return [r for r in records if name in r]


def test_record_shape_and_guards():
    rec = metrics.record("dev", "TIFF_CONVERSION", {"MachinesSpawned": 3, "CallbackLatency": 1234},
                         {"batch_id": "batch_abc", "task_id": "tiff_x"})
    check_emf(rec)
    assert rec["stage"] == "dev" and rec["phase"] == "TIFF_CONVERSION"
    assert rec["MachinesSpawned"] == 3 and rec["task_id"] == "tiff_x"
    units = {m["Name"]: m["Unit"] for m in rec["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units == {"MachinesSpawned": "Count", "CallbackLatency": "Milliseconds"}
    assert set(metrics.UNITS.values()) <= CLOUDWATCH_UNITS
    with pytest.raises(ValueError, match="no unit"):
        metrics.record("dev", "p", {"Spawned": 1}, {"batch_id": "b"})
    with pytest.raises(ValueError, match="overwrite"):
        metrics.record("dev", "p", {"MachinesSpawned": 1}, {"batch_id": "b", "stage": "x"})


def test_a_bad_record_is_dropped_not_raised(emf, logs):
    metrics.emit("dev", "p", "batch_abc", NoSuchMetric=1)
    metrics.emit("dev", "p", "batch_abc", {"stage": "clash"}, MachinesSpawned=1)
    metrics.emit("dev", "p", "batch_abc", MachinesSpawned=None)  # nothing to say: no record
    out = logs.readouterr().out  # the metric lines would be here too (emf's stream)
    assert '{"_aws"' not in out
    assert out.count("[Batch] metric_dropped batch_id=batch_abc") == 2


def test_latency_and_progress_helpers():
    now = 1_800_000_000_000
    assert metrics.latency_ms(str(now - 2500), now) == 2500
    for bad in (None, "", "abc", "-5", str(now + 10), str(now - 90_000_000), "9" * 40):
        assert metrics.latency_ms(bad, now) is None, bad
    assert metrics.seconds_since_progress(now - 30_000, None, now) == 30
    assert metrics.seconds_since_progress(now - 3_600_000, now - 600_000, now) == 600
    assert metrics.seconds_since_progress(now - 3_600_000, now, now) == 0
    assert metrics.seconds_since_progress(now - 3_600_000, now - 1_800_000, now, now - 5000) == 5


def test_a_batch_emits_the_guides_metrics(services, client, fly, ingest, emf):
    app.intake(sqs_event(message(tiffs=3, others=0)), LambdaContext(30))
    fly.script = [200, 429]  # the second creation is rate limited, then retried
    run_pass(services)
    records = emf()
    (limited,) = _named(records, "FlyRateLimited")
    (first_pass,) = _named(records, "MachinesSpawned")
    for rec in (limited, first_pass):
        check_emf(rec)
        assert (rec["stage"], rec["phase"], rec["batch_id"]) == ("dev", "TIFF_CONVERSION", "batch_abc")
    spawned = len([r for r in fly.requests if r["answer"] == 200])  # 1 or 2: creations run in parallel
    assert 1 <= spawned <= 2
    assert (first_pass["MachinesSpawned"], first_pass["MachinesInFlight"], first_pass["TasksPending"]) == (
        spawned, spawned, 3 - spawned)
    drive(services, lambda: len([r for r in fly.requests if r["answer"] == 200]) == 3, timeout=15)

    created = [r for r in fly.requests if r["answer"] == 200]
    routes = [callback_path(r) for r in created]
    for (route, env), body in zip(routes, (None, None, "Failed to download TIFF: 404 Not Found"), strict=True):
        payload = success_body(env) if body is None else error_body(env, body)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {env['CALLBACK_TOKEN']}"}
        assert client.http.post(route, headers=headers, body=json.dumps(payload)).status_code == 200
    records = emf()
    callbacks = [r for r in records if "CallbackLatency" in r]
    assert len(callbacks) == 3
    assert sum(r.get("TasksCompleted", 0) for r in callbacks) == 2
    assert sum(r.get("TasksFailed", 0) for r in callbacks) == 1
    for rec in callbacks:
        check_emf(rec)
        assert 0 <= rec["CallbackLatency"] < 60_000 and rec["task_id"].startswith("tiff_")

    drive(services, lambda: get_status(client)["status"] == "DONE", timeout=15)
    (done,) = _named(emf(), "SuccessRate")
    check_emf(done)
    assert done["SuccessRate"] == pytest.approx(66.67) and done["DeliveryAttempts"] == 1
    assert done["phase"] == "TIFF_CONVERSION" and done["BatchSeconds"] > 0


def test_a_failed_delivery_is_counted(services, client, fly, ingest, emf):
    ingest.script = [500]
    app.intake(sqs_event(message(tiffs=0, others=1)), LambdaContext(30))  # straight to delivery
    drive(services, lambda: _named(emf(), "DeliveryFailed"), timeout=10)
    (failed,) = _named(emf(), "DeliveryFailed")
    check_emf(failed)
    assert failed["DeliveryAttempts"] == 1 and failed["batch_id"] == "batch_abc"


def test_an_admin_retry_is_not_a_stall(services, client, fly, ingest, emf):
    """A batch whose last task ended an hour ago, retried now: its passes report the time
    since the retry, not since that task (the stalled-batch alarm must not fire)."""
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    run_pass(services)
    (route, env) = callback_path(fly.requests[0])
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {env['CALLBACK_TOKEN']}"}
    client.http.post(route, headers=headers, body=json.dumps(error_body(env, "Failed to download TIFF: 404 Not Found")))
    drive(services, lambda: get_status(client)["status"] == "DONE", timeout=15)
    hour_ago = int(time.time() * 1000) - 3_600_000
    Batch("batch_abc").update(actions=[Batch.started_at.set(hour_ago),
                                       Batch.last_ended_at.set(hour_ago)])
    assert post_admin(client, "retry").status_code == 200
    seen = len(emf())
    run_pass(services)
    (after,) = _named(emf()[seen:], "SecondsSinceProgress")
    assert after["SecondsSinceProgress"] < 60
