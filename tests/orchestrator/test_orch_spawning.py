"""Bounded outbound pressure on Fly (design.md invariant 3) and passes that overlap
(invariant 1): 429 Retry-After, 5xx and timeouts, backoff, leases."""

from __future__ import annotations

import threading
import time
from collections import Counter

import app
from chalicelib import scheduler, store
from chalicelib.clock import now_ms
from chalicelib.models import Batch
from chalicelib.runner import monotonic_deadline
from chalicelib.services import build_services
from chalicelib.spawner import Spawner

from .conftest import (
    LambdaContext,
    callback_path,
    drive,
    get_status,
    list_tasks,
    make_services,
    message,
    run_pass,
    sqs_event,
    without_spawned,
)


def _task_ids(fly):
    return [callback_path(r)[1]["TASK_ID"] for r in fly.requests]


def test_429_closes_the_gate_without_counting_an_attempt(services, client, fly, env):
    services = make_services(env, SPAWN_CONCURRENCY="1")
    fly.script = [429]
    fly.retry_after = "2"
    app.intake(sqs_event(message(tiffs=3, others=0)), LambdaContext(30))

    run_pass(services)
    assert [r["answer"] for r in fly.requests] == [429]  # the gate stopped the other two
    limited_at = fly.requests[0]["at"]
    tasks = list_tasks(client)
    assert {t["status"] for t in tasks} == {"pending"}
    assert [t["attempts"] for t in tasks] == [0, 0, 0]  # a 429 is not an attempt
    assert all(t["machine_id"] is None for t in tasks)
    progress = get_status(client)["progress"]
    assert progress["tasks_in_flight"] == 0 and progress["tasks_pending"] == 3

    # while Retry-After runs, no pass creates anything
    while time.monotonic() < limited_at + 1.6:
        run_pass(services)
        assert len(fly.requests) == 1

    # then creation resumes: each task once, all as attempt 1
    drive(services, lambda: len(fly.created()) == 3, timeout=5)
    created = fly.created()
    assert min(r["at"] for r in created) >= limited_at + 2.0 - 0.05
    assert sorted(Counter(_task_ids(fly)[1:]).values()) == [1, 1, 1]
    assert all(not r["body"]["name"].endswith("-2") for r in created)
    assert all(without_spawned(callback_path(r)[0]).endswith("?attempt=1") for r in created)
    assert {t["attempts"] for t in list_tasks(client)} == {1}
    assert get_status(client)["progress"]["tasks_in_flight"] == 3


def test_5xx_and_timeouts_count_and_are_bounded(services, client, fly, env, ingest):
    services = make_services(env, MAX_RETRY_ATTEMPTS="3", FLY_REQUEST_TIMEOUT_MS="300")
    fly.timeout_s = 0.6
    fly.script = [500, 503, "timeout"]
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))

    run_pass(services)
    [task] = list_tasks(client)
    assert task["status"] == "pending" and task["attempts"] == 1
    assert task["last_error"] == "Machine creation failed: Fly API 500: injected 500"

    drive(services, lambda: list_tasks(client, status="failed"))
    [failed] = list_tasks(client, status="failed")
    assert failed["attempts"] == 3
    assert failed["last_error"] == "Machine creation failed: Fly API timed out creating the machine"
    task_id = failed["task_id"]
    assert [r["body"]["name"] for r in fly.requests] == [f"tiff-{task_id}", f"tiff-{task_id}-2",
                                                         f"tiff-{task_id}-3"]

    # no infinite retry: the batch moves on, no further creations
    drive(services, lambda: get_status(client)["status"] == "DONE")
    for _ in range(3):
        run_pass(services)
    assert len(fly.requests) == 3
    status = get_status(client)
    assert status["progress"]["tasks_failed"] == 1 and status["progress"]["tasks_in_flight"] == 0


def test_spawn_retry_waits_for_its_backoff(services, client, fly, env):
    # ALARM_DELAY_ERROR_RETRY caps the backoff: the first retry waits 0.5-1 s (jittered)
    services = make_services(env, ALARM_DELAY_ERROR_RETRY="1000")
    fly.script = [502]
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    run_pass(services)
    failed_at = fly.requests[0]["at"]
    [task] = list_tasks(client)
    assert task["status"] == "pending" and task["attempts"] == 1

    stored = store.get_task("batch_abc", task["task_id"])
    retry_at = int(stored.open_due) - store.PENDING_OFFSET
    assert 500 <= retry_at - int(stored.updated_at) <= 1000

    while now_ms() < retry_at - 100:
        run_pass(services)
        assert len(fly.requests) == 1, "retried before its backoff"
    drive(services, lambda: len(fly.requests) == 2, timeout=4)
    assert fly.requests[1]["at"] - failed_at >= 0.45
    assert fly.requests[1]["body"]["name"].endswith("-2")


def test_overlapping_ticks_create_each_task_once(services, client, fly):
    app.intake(sqs_event(message(tiffs=24, others=0)), LambdaContext(30))
    time.sleep(0.06)
    other = build_services(services.settings)  # a second Lambda process: own bucket and gate
    for _ in range(3):
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def tick(svc, owner, start=start, errors=errors):
            try:
                start.wait()
                report = scheduler.run_due_passes(svc, owner)
                assert report.errors == 0
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=tick, args=(services, "tick-a")),
                   threading.Thread(target=tick, args=(other, "tick-b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        time.sleep(0.06)

    counts = Counter(_task_ids(fly))
    assert len(counts) == 24 and set(counts.values()) == {1}
    assert get_status(client)["progress"]["tasks_in_flight"] == 24
    assert {t["attempts"] for t in list_tasks(client)} == {1}
    batch = store.get_batch("batch_abc")
    assert batch.lease_owner is None  # every pass gave its lease back


def test_racing_passes_on_one_batch_claim_each_task_once(services, client, fly, env):
    """Even two passes on one batch at once (a lease that expired mid-pass) create each
    task once: the claim is a conditional write on the task's status and attempt."""
    # The race is the subject, not Fly's latency: a loaded CI machine once made three
    # creates slower than the tests' short Fly timeout, and those tasks went to retry.
    services = make_services(env, FLY_REQUEST_TIMEOUT_MS="10000")
    app.intake(sqs_event(message(tiffs=16, others=0)), LambdaContext(30))
    time.sleep(0.06)
    batch = store.get_batch("batch_abc")
    phase = services.registry.first
    other = build_services(services.settings)
    start = threading.Barrier(2)

    def spawn(svc):
        start.wait()
        Spawner(svc, batch.batch_id, 1000, monotonic_deadline(5)).spawn(phase)

    threads = [threading.Thread(target=spawn, args=(svc,)) for svc in (services, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    counts = Counter(_task_ids(fly))
    assert len(counts) == 16 and set(counts.values()) == {1}
    assert get_status(client)["progress"]["tasks_in_flight"] == 16


def test_lease_held_by_another_owner_is_respected_until_it_expires(services, client, fly):
    app.intake(sqs_event(message(tiffs=2, others=0)), LambdaContext(30))
    time.sleep(0.06)
    Batch("batch_abc").update(actions=[Batch.lease_owner.set("tick-other"),
                                       Batch.lease_until.set(now_ms() + 60_000)])
    for _ in range(3):
        report = run_pass(services, owner="tick-mine")
        assert report.passes == 0
    assert fly.requests == []

    # the other owner died: its lease runs out and is taken over
    Batch("batch_abc").update(actions=[Batch.lease_until.set(now_ms() - 1)])
    report = run_pass(services, owner="tick-mine")
    assert report.passes == 1 and report.spawned == 2
    assert len(fly.created()) == 2
    batch = store.get_batch("batch_abc")
    assert batch.lease_owner is None and batch.lease_until is None


def test_a_fly_deploy_token_is_sent_in_its_own_scheme(services, client, fly, env):
    # `fly tokens create deploy` prints `FlyV1 fm2_...`; stored as printed (or without the
    # scheme), the Machines API gets `Authorization: FlyV1 fm2_...`, never `Bearer FlyV1 ...`.
    for stored in ("FlyV1 fm2_lJPECAAAAAAAAtest", "fm2_lJPECAAAAAAAAtest"):
        fly.requests.clear()
        services = make_services(env, FLY_API_TOKEN=stored)
        batch_id = f"batch_{len(stored)}"
        app.intake(sqs_event(message(batch_id=batch_id, tiffs=1, others=0)), LambdaContext(30))
        run_pass(services)
        assert [r["auth"] for r in fly.requests] == ["FlyV1 fm2_lJPECAAAAAAAAtest"]
