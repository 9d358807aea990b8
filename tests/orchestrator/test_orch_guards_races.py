"""Guards against a second actor moving first (issue 8 item 7): a machine created for a task
that a reset closed meanwhile, a reset whose page went stale, a pass or a 429 with a stale
view of an ended batch, a lease taken over. Each test fails when one condition of
tools/mutations.toml is broken.

The second actor is placed exactly with botocore's `before-call` hook (where
ddb_metrics counts requests): when the first actor sends its DynamoDB request, the second's
whole operation runs first, as it would when it wins the race by a millisecond. Nothing of
ours is replaced; both actors run their real code against moto.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import app
from chalicelib import admin, scheduler, store
from chalicelib.clock import now_ms
from chalicelib.delivery import deliver
from chalicelib.errors import IntakeBusy
from chalicelib.models import Batch, Task
from chalicelib.runner import monotonic_deadline
from chalicelib.spawner import Spawner
from chalicelib.states import RESET_ERROR

from .conftest import (
    LambdaContext,
    get_status,
    list_tasks,
    message,
    post_admin,
    post_callback,
    run_pass,
    sqs_event,
)
from .ddb_hooks import DynamoHooks


@contextlib.contextmanager
def before_first(settings: Any, operation: str, action: Callable[[], None],
                 match: bytes = b"") -> Iterator[list[bool]]:
    """Run `action` once, just before the first DynamoDB `operation` request whose
    parameters contain `match` is sent (by any of the orchestrator's clients). Yields a
    flag list: [True] once it ran."""
    fired: list[bool] = []
    hooks = DynamoHooks(settings)
    text = match.decode()

    def run() -> None:
        fired.append(True)
        action()

    hooks.once(lambda op, params: op == operation and text in json.dumps(params, default=str), run, before=True)
    try:
        yield fired
    finally:
        hooks.detach()


def _start(tiffs: int = 1) -> None:
    app.intake(sqs_event(message(tiffs=tiffs, others=0)), LambdaContext(30))
    time.sleep(0.06)  # the batch's first pass comes due


def _recount(batch_id: str = "batch_abc") -> tuple[Counter[str], dict[str, int]]:
    stored = Counter(t.status for t in store.iter_tasks(batch_id, consistent_read=True))
    batch = store.get_batch(batch_id)
    return stored, {"completed": int(batch.tasks_completed), "failed": int(batch.tasks_failed),
                    "in_flight": int(batch.tasks_in_flight)}


def _claim_first(services: Any) -> tuple[Task, int]:
    [task] = store.ready_tasks("batch_abc", now_ms(), 10)
    attempt = store.claim_task(services.settings, task, "TIFF_CONVERSION", f"tiff-{task.task_id}",
                               now_ms() + 60_000, now_ms())
    assert attempt == 1
    return task, attempt


def test_machine_created_for_a_task_reset_meanwhile_is_destroyed(services, client, fly):
    """The admin resets the batch while Fly creates the machine: when the pass goes to
    record the machine, its task is closed. The machine must not run on unrecorded
    (nobody would ever destroy it)."""
    _start()
    resets = []

    def reset() -> None:
        resets.append(post_admin(client, "reset"))

    with before_first(services.settings, "UpdateItem", reset, match=b"machine_id") as fired:
        scheduler.run_due_passes(services, "test-tick")
    assert fired and resets[0].status_code == 200
    # the reset could not know the machine's id yet: it found the machine by its name
    assert resets[0].json_body == {"ok": True, "message": "Batch reset", "tasks_closed": 1,
                                   "machines_destroyed": 1}

    [created] = fly.created()
    assert set(fly.deleted) == {created["id"]}  # and the pass, refused its record, too
    [task] = list_tasks(client)
    assert task["status"] == "failed" and task["last_error"] == RESET_ERROR
    assert task["machine_id"] is None
    assert get_status(client)["progress"]["tasks_in_flight"] == 0



def test_the_spawn_destroys_a_machine_reset_could_not_find_yet(services, client, fly):
    """The same race while Fly's machine list lags behind the creation: reset finds no
    machine by the name, so the pass that was refused its record must destroy it."""
    _start()
    fly.lists_machines = False
    resets = []
    with before_first(services.settings, "UpdateItem", lambda: resets.append(post_admin(client, "reset")),
                      match=b"machine_id") as fired:
        scheduler.run_due_passes(services, "test-tick")
    assert fired and resets[0].json_body["machines_destroyed"] == 0
    [created] = fly.created()
    assert fly.deleted == [created["id"]]

def test_reset_does_not_overwrite_a_task_that_moved_after_its_read(services, client, fly):
    """Reset reads a page of open tasks; before its transaction lands, the spawn's 429
    puts the task back to pending (attempt not counted). Reset must read again, not close
    the task as if it were still running."""
    _start()
    task, attempt = _claim_first(services)

    def spawn_gets_429() -> None:
        assert store.unclaim_task(services.settings, "batch_abc", task.task_id, attempt,
                                  now_ms() + 1000, now_ms())

    with before_first(services.settings, "TransactWriteItems", spawn_gets_429) as fired:
        result = admin.reset_batch(services, "batch_abc")
    assert fired
    assert result == {"tasks_closed": 1, "machines_destroyed": 0}
    stored, counters = _recount()
    assert stored == Counter(failed=1)
    assert counters == {"completed": 0, "failed": 1, "in_flight": 0}
    assert store.get_task("batch_abc", task.task_id).attempts == 0


def test_pass_with_a_stale_view_claims_nothing_once_the_batch_ended(services, client, fly):
    """A pass read its batch in TIFF_CONVERSION; the batch ended before it claimed."""
    _start(tiffs=2)
    stale = store.get_batch("batch_abc")
    assert store.fail_batch(services.settings, "batch_abc", "ended elsewhere", now_ms(), now_ms())
    Spawner(services, stale.batch_id, 10, monotonic_deadline(2)).spawn(services.registry.first)
    assert fly.requests == []
    assert "processing" not in {t["status"] for t in list_tasks(client)}
    assert all(t["attempts"] == 0 for t in list_tasks(client))
    assert get_status(client)["progress"]["tasks_in_flight"] == 0


def test_claim_only_from_pending(services, client, fly):
    """A task read as pending that is failed by the time of the claim stays failed, even in
    a batch still in the phase."""
    _start()
    [task] = store.ready_tasks("batch_abc", now_ms(), 10)
    Task.of(task.batch_id, task.task_id).update(actions=[Task.status.set("failed")])
    assert store.claim_task(services.settings, task, "TIFF_CONVERSION", f"tiff-{task.task_id}",
                            now_ms() + 60_000, now_ms()) is None
    stored = store.get_task("batch_abc", task.task_id)
    assert stored.status == "failed" and stored.attempts == 0
    assert int(store.get_batch("batch_abc").tasks_in_flight) == 0


def test_a_429_answered_after_a_reset_leaves_the_task_closed(services, client, fly):
    _start()
    task, attempt = _claim_first(services)
    assert post_admin(client, "reset").json_body["tasks_closed"] == 1
    assert not store.unclaim_task(services.settings, "batch_abc", task.task_id, attempt,
                                  now_ms(), now_ms())
    stored = store.get_task("batch_abc", task.task_id)
    assert stored.status == "failed" and stored.attempts == 1
    assert _recount() == (Counter(failed=1), {"completed": 0, "failed": 1, "in_flight": 0})


def test_delivery_after_a_reset_leaves_the_batch_as_reset_left_it(services, client, fly, ingest):
    _start()
    run_pass(services)
    post_callback(client, fly.requests[0])
    run_pass(services)  # the phase ended: FINALIZING
    stale = store.get_batch("batch_abc")
    assert stale.status == "FINALIZING"
    assert post_admin(client, "reset").status_code == 200
    assert deliver(services, stale) is None  # it lost the race to the reset: nothing more to do
    status = get_status(client)
    assert status["status"] == "ERROR" and status["error"] == RESET_ERROR
    assert status["delivery"]["delivered_at"] is None


def test_tick_takes_no_lease_on_a_batch_that_ended_after_it_listed_it(services, client, fly):
    _start()

    def reset() -> None:
        admin.reset_batch(services, "batch_abc")

    # the round lists the batch as due; its lease request (an UpdateItem) comes after the reset
    with before_first(services.settings, "UpdateItem", reset) as fired:
        report = scheduler.run_due_passes(services, "test-tick")
    assert fired
    assert report.passes == 0 and report.errors == 0
    assert fly.requests == []
    batch = store.get_batch("batch_abc")
    assert batch.status == "ERROR" and batch.error == RESET_ERROR and batch.lease_owner is None


def test_a_pass_whose_lease_expired_does_not_free_its_successors(services, client, fly):
    _start()
    assert store.acquire_lease("batch_abc", "tick-old", now_ms(), 60_000) is not None
    Batch("batch_abc").update(actions=[Batch.lease_until.set(now_ms() - 1)])  # it stalled
    assert store.acquire_lease("batch_abc", "tick-new", now_ms(), 60_000) is not None
    store.release_lease("batch_abc", "tick-old", now_ms())  # the old pass wakes up and ends
    batch = store.get_batch("batch_abc")
    assert batch.lease_owner == "tick-new" and int(batch.lease_until) > now_ms()
    assert run_pass(services, owner="tick-third").passes == 0
    assert fly.requests == []


def test_second_copy_of_a_restart_message_changes_nothing(services, client, fly):
    """Two copies of the message that restarts an ERROR batch: both read ERROR; the first
    restarts the batch and a pass starts its machine before the second writes. The
    second must find the batch no longer in ERROR and leave it alone."""
    _start()
    assert post_admin(client, "reset").status_code == 200

    def first_copy_and_a_pass() -> None:
        app.intake(sqs_event(message(tiffs=1, others=0), message_id="copy-1"), LambdaContext(30))
        run_pass(services)

    with before_first(services.settings, "PutItem", first_copy_and_a_pass) as fired:
        app.intake(sqs_event(message(tiffs=1, others=0), message_id="copy-2"), LambdaContext(30))
    assert fired
    [created] = fly.created()
    [task] = list_tasks(client)
    assert task["status"] == "processing" and task["attempts"] == 1
    assert task["machine_id"] == created["id"]
    status = get_status(client)
    assert status["status"] == "TIFF_CONVERSION" and status["error"] is None
    assert status["progress"]["tasks_in_flight"] == 1


def test_intake_finished_by_a_second_copy_is_activated_once(services, client, fly):
    """The first copy of a message wrote the batch in INTAKE and its tasks; just before it
    activates, a second copy arrives. The second must not finish the intake under the
    first's live claim (SQS delivers it again later); the first activates, once."""
    busy: list[Exception] = []

    def second_copy() -> None:
        try:
            app.intake(sqs_event(message(tiffs=1, others=0), message_id="copy-2"), LambdaContext(30))
        except IntakeBusy as exc:
            busy.append(exc)

    with before_first(services.settings, "TransactWriteItems", second_copy, match=b"intake_clean") as fired:
        app.intake(sqs_event(message(tiffs=1, others=0), message_id="copy-1"), LambdaContext(30))
    assert fired and busy
    app.intake(sqs_event(message(tiffs=1, others=0), message_id="copy-2"), LambdaContext(30))  # again
    run_pass(services)
    [created] = fly.created()
    [task] = list_tasks(client)
    assert task["status"] == "processing" and task["machine_id"] == created["id"]
    assert _recount() == (Counter(processing=1), {"completed": 0, "failed": 0, "in_flight": 1})
    assert get_status(client)["status"] == "TIFF_CONVERSION"


def test_two_retries_at_once_one_runs_the_tasks_and_the_other_is_409(services, client, fly, ingest):
    """The second retry read the batch (one failed task) before the first reopened that
    task, and reaches the store after it did: it finds nothing to reopen and must say so,
    not reopen the batch itself (the first, which did the work, would then get a 409)."""
    _start()
    run_pass(services)
    env = fly.requests[0]["body"]["config"]["env"]
    post_callback(client, fly.requests[0], {"task_id": env["TASK_ID"], "batch_id": "batch_abc",
                                            "status": "error", "error": "Failed to download TIFF: 404 Not Found"})
    run_pass(services)
    run_pass(services)
    assert get_status(client)["status"] == "DONE"
    hooks = DynamoHooks(services.settings)
    reached, release = hooks.hold("retry-2", lambda op, params: op == "GetItem"
                                  and "batches" in str(params.get("TableName")))
    second: list = []
    other = threading.Thread(target=lambda: second.append(post_admin(client, "retry")), name="retry-2")
    other.start()
    assert reached.wait(10)

    def let_the_second_finish() -> None:
        release.set()
        other.join(10)

    with before_first(services.settings, "TransactWriteItems", let_the_second_finish,
                      match=b"delivery_generation") as fired:
        first = post_admin(client, "retry")
    hooks.detach()
    assert fired
    assert second[0].status_code == 409 and "no failed task" in second[0].json_body["error"]
    assert first.status_code == 200 and first.json_body["tasks_retried"] == 1
