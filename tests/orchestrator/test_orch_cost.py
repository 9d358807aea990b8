"""O(1) per event (design.md invariant 4): a callback costs the same DynamoDB requests in a
5,000-task batch as in a 5-task one, counted at botocore's request hooks."""

from __future__ import annotations

import time
from collections import Counter

import app
from chalicelib.ddb_metrics import RequestCounter

from .conftest import (
    LambdaContext,
    callback_path,
    error_body,
    make_services,
    message,
    post_callback,
    run_pass,
    sqs_event,
)


def _during(counter: RequestCounter, action) -> Counter:
    """The DynamoDB requests `action` makes, by operation name."""
    counter.take()
    action()
    return counter.take()


def _batch(tiffs: int, batch_id: str) -> dict:
    return message(batch_id, tiffs=tiffs, others=0)


def test_callback_cost_does_not_grow_with_the_batch(services, client, fly, env):
    services = make_services(env, BATCH_SIZE_TIFF_CONVERSION="2")
    started = time.monotonic()
    app.intake(sqs_event(_batch(5, "batch_small")), LambdaContext(30))
    app.intake(sqs_event(_batch(5000, "batch_big")), LambdaContext(60))
    intake_s = time.monotonic() - started
    run_pass(services)
    assert len(fly.created()) == 4  # two machines in each batch
    by_batch = {}
    for request in fly.requests:
        by_batch.setdefault(callback_path(request)[1]["BATCH_ID"], []).append(request)

    counter = RequestCounter().attach(services.settings)
    costs = {}
    for batch_id, (first, second) in by_batch.items():
        _, env2 = callback_path(second)
        costs[batch_id] = {
            "success": _during(counter, lambda first=first: post_callback(client, first)),
            "duplicate": _during(counter, lambda first=first: post_callback(client, first)),
            "retryable_error": _during(counter,
                lambda second=second, env2=env2: post_callback(client, second, error_body(env2, "ECONNRESET"))),
        }
    small, big = costs["batch_small"], costs["batch_big"]
    assert small == big, costs
    assert small["success"] == Counter({"TransactWriteItems": 1})
    assert small["retryable_error"] == Counter({"TransactWriteItems": 1})
    assert sum(small["duplicate"].values()) <= 2  # the failed transaction, then one read to explain it
    assert not any(op in ("Query", "Scan") for cost in costs.values() for c in cost.values() for op in c)
    assert intake_s < 45, f"intake of 5,000 tasks took {intake_s:.1f} s"
