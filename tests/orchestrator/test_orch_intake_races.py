"""Issue 8 §4: intake that cannot be half-applied. Killed after each of its DynamoDB
requests and delivered again, or run twice at the same time, it ends in the same state as
one clean run; a resumed or late intake never writes over tasks a pass already holds."""

from __future__ import annotations

import json
import threading
import time

import pytest

from chalicelib import intake, store
from chalicelib.errors import IntakeBusy
from chalicelib.services import get_services

from .conftest import (
    drive,
    get_status,
    make_services,
    message,
    post_admin,
    post_callback,
    run_pass,
)
from .ddb_hooks import Crash, DynamoHooks, updates_batch_item

LEASE_S = 1.0


def _state(batch_id: str) -> dict:
    batch = store.get_batch(batch_id)
    return {
        "status": batch.status, "total": int(batch.tasks_total), "owner": batch.intake_owner,
        "files": [f.info["r2_key"] for f in store.iter_files(batch_id)],
        "tasks": sorted((t.input_r2_key, t.status, int(t.attempts), t.planned_output_key)
                        for t in store.iter_tasks(batch_id)),
    }


@pytest.fixture
def fast_lease(services, env):
    """Services whose intake claims expire after LEASE_S (the shortest LEASE_MS allows)."""
    return make_services(env, LEASE_MS=str(int(LEASE_S * 1000)))


def _intake(body: dict, message_id: str = "msg") -> str:
    """One delivery of the message to the intake function, as Lambda makes it."""
    return intake.handle_body(get_services(), json.dumps(body), message_id)


def _deliver_until_started(body: dict) -> str:
    """SQS delivers again after a failed invocation, once the dead one's claim expired."""
    for _ in range(5):
        try:
            return _intake(body)
        except IntakeBusy:
            time.sleep(LEASE_S / 2)
    raise AssertionError("intake never finished")


def _requests_of_a_clean_intake(settings, body: dict) -> int:
    hooks = DynamoHooks(settings)
    assert _intake(body) == "started"
    hooks.detach()
    return len(hooks.calls)


def test_killed_after_each_request_then_redelivered_ends_as_one_clean_run(fast_lease):
    settings = fast_lease.settings
    reference = message("batch_ref", tiffs=3, others=1)
    steps = _requests_of_a_clean_intake(settings, reference)
    expected = _state("batch_ref")
    expected["files"] = [k.replace("batch_ref", "{b}") for k in expected["files"]]
    assert steps >= 4
    for step in range(1, steps + 1):
        batch_id = f"batch_k{step}"
        body = message(batch_id, tiffs=3, others=1)
        hooks = DynamoHooks(settings)
        hooks.crash_after = step
        with pytest.raises(Crash):
            _intake(body)
        hooks.detach()
        # the invocation failed, so SQS delivers the message again
        assert _deliver_until_started(body) in ("started", "duplicate")
        assert _intake(body) == "duplicate"
        state = _state(batch_id)
        assert state["files"] == [k.replace("{b}", batch_id) for k in expected["files"]], step
        assert (state["status"], state["total"], state["owner"]) == ("TIFF_CONVERSION", 3, None), step
        assert [t[1:3] for t in state["tasks"]] == [("pending", 0)] * 3, step


def test_restart_over_error_killed_after_each_request_leaves_no_old_item(fast_lease, client, fly, ingest):
    settings = fast_lease.settings
    first = message("batch_abc", tiffs=3, others=1)
    smaller = message("batch_abc", tiffs=1, others=0)
    assert _intake(first) == "started"
    assert post_admin(client, "reset").status_code == 200
    steps = None
    step = 1
    while steps is None or step <= steps:
        hooks = DynamoHooks(settings)
        hooks.crash_after = step
        try:
            _intake(smaller)
            steps = len(hooks.calls)  # it got through: every step has been killed once
            hooks.detach()
            break
        except Crash:
            hooks.detach()
        assert _deliver_until_started(smaller) in ("started", "duplicate")
        state = _state("batch_abc")
        assert state["files"] == ["staging/batch_abc/folder/image_0.tiff"], step
        assert len(state["tasks"]) == 1 and state["tasks"][0][1] == "pending", step
        # reset again for the next kill point
        assert post_admin(client, "reset").status_code == 200
        step += 1
    drive(fast_lease, lambda: len(fly.created()) >= 1 and get_status(client)["status"] == "TIFF_CONVERSION"
          and get_status(client)["progress"]["tasks_in_flight"] == 1)
    post_callback(client, fly.requests[-1])
    drive(fast_lease, lambda: get_status(client)["status"] == "DONE")
    assert len(ingest.accepted()[-1]["body"]["files"]) == 1


def test_two_copies_at_once_start_the_batch_once(fast_lease):
    body = message(tiffs=3, others=1)
    hooks = DynamoHooks(fast_lease.settings)
    reached, release = hooks.hold("copy-a", updates_batch_item)  # A holds the fresh claim
    results: dict[str, object] = {}

    def run(name: str) -> None:
        try:
            results[name] = _intake(body, name)
        except IntakeBusy as exc:
            results[name] = exc

    a = threading.Thread(target=run, args=("copy-a",), name="copy-a")
    a.start()
    assert reached.wait(10)
    run("copy-b")  # while A holds a live claim: B must not write, SQS retries it later
    assert isinstance(results["copy-b"], IntakeBusy)
    release.set()
    a.join(10)
    hooks.detach()
    assert results["copy-a"] == "started"
    assert _intake(body, "copy-b-again") == "duplicate"
    assert _state("batch_abc")["total"] == 3


def test_a_late_intake_cannot_write_over_tasks_a_pass_holds(fast_lease, client, fly):
    """The issue's case: A stalls past its claim, B takes over and activates, a pass claims
    the tasks, then A resumes. A's writes are fenced; nothing goes back to pending."""
    body = message(tiffs=3, others=1)
    hooks = DynamoHooks(fast_lease.settings)
    reached, release = hooks.hold("copy-a", updates_batch_item)
    outcome: list[str] = []

    def run_a() -> None:
        outcome.append(_intake(body, "copy-a"))

    a = threading.Thread(target=run_a, name="copy-a")
    a.start()
    assert reached.wait(10)
    time.sleep(LEASE_S + 0.1)  # A's claim expires
    assert _intake(body, "copy-b") == "started"
    run_pass(fast_lease)
    assert len(fly.created()) == 3
    release.set()
    a.join(10)
    hooks.detach()
    assert outcome == ["superseded"]  # its writes were refused; the message is done with
    assert {t[1:3] for t in _state("batch_abc")["tasks"]} == {("processing", 1)}
    for request in fly.requests:
        assert post_callback(client, request).json_body == {"ok": True}
    progress = get_status(client)["progress"]
    assert progress["tasks_completed"] == 3 and progress["tasks_in_flight"] == 0



def test_a_reset_during_intake_stops_it_and_leaves_no_open_task(fast_lease, client):
    body = message(tiffs=3, others=1)
    hooks = DynamoHooks(fast_lease.settings)
    reached, release = hooks.hold("copy-a", updates_batch_item)
    outcome: list[str] = []
    a = threading.Thread(target=lambda: outcome.append(_intake(body, "copy-a")), name="copy-a")
    a.start()
    assert reached.wait(10)
    assert post_admin(client, "reset").status_code == 200
    release.set()
    a.join(10)
    hooks.detach()
    assert outcome == ["superseded"]
    assert get_status(client)["status"] == "ERROR"
    assert not [t for t in _state("batch_abc")["tasks"] if t[1] in ("pending", "processing")]


def test_an_intake_whose_claim_was_taken_over_writes_nothing_even_before_activation(fast_lease):
    """A stalls past its claim; B takes the claim over but has not activated yet when A
    resumes. A must stop at its next write (the fence names the owner, not only INTAKE)."""
    body = message(tiffs=3, others=1)
    hooks = DynamoHooks(fast_lease.settings)
    a_reached, a_release = hooks.hold("copy-a", updates_batch_item)  # A's fresh claim
    results: dict[str, str] = {}
    a = threading.Thread(target=lambda: results.update(a=_intake(body, "copy-a")), name="copy-a")
    a.start()
    assert a_reached.wait(10)
    time.sleep(LEASE_S + 0.1)
    b_reached, b_release = hooks.hold("copy-b", updates_batch_item)  # B's take-over
    b = threading.Thread(target=lambda: results.update(b=_intake(body, "copy-b")), name="copy-b")
    b.start()
    assert b_reached.wait(10)
    a_release.set()
    a.join(10)
    b_release.set()
    b.join(10)
    hooks.detach()
    assert results == {"a": "superseded", "b": "started"}
    assert _state("batch_abc")["total"] == 3
