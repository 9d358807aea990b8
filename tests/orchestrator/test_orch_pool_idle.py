"""Idle pulls are cheap (issue 17, item 7): a pull that finds no work reads the batch's
counters, not the task shards. Before, one cost 16 queries (every shard for a ready task,
every shard again for the next retry's due time)."""

from __future__ import annotations

import dataclasses
import time

from chalicelib import store
from chalicelib.ddb_metrics import RequestCounter
from chalicelib.models import TASK_SHARDS
from chalicelib.pool import candidates
from chalicelib.pool.candidates import Candidates
from chalicelib.services import use_services

from .conftest import run_pass
from .test_orch_pool import machines, start


def test_idle_pulls_at_a_pools_tail_query_no_task(services, client, fly, env):
    services = start(env, tiffs=8, MAX_POOL_MACHINES_PER_BATCH="8")
    run_pass(services)
    pool = machines(client, fly)
    assert len(pool) == 8
    tasks = [m.pull()["task"] for m in pool]
    for machine, task in zip(pool[2:], tasks[2:], strict=True):
        machine.report(task)  # the last two tasks still run on the first two machines
    counter = RequestCounter().attach(services.settings)
    answers = [m.pull() for m in pool[2:]]
    made = counter.take()
    assert [a["action"] for a in answers] == ["exit"] * 6
    assert made["Query"] == 0
    # each: at most a fresh read of the batch, and the retire (the first may mark its machine heard from)
    assert made["GetItem"] <= 6 and made["TransactWriteItems"] == 6 and made["UpdateItem"] <= 1


def test_pulls_waiting_for_a_retrys_backoff_share_one_read(services, client, fly, env):
    services = start(env, tiffs=1, MAX_POOL_MACHINES_PER_BATCH="1", ALARM_DELAY_ERROR_RETRY="4000")
    clock = [1000.0]  # the candidates' clock: their last read ages when the test says
    services = dataclasses.replace(services, candidates=Candidates(store.ready_tasks_from, clock=lambda: clock[0]))
    use_services(services)
    run_pass(services)
    [machine] = machines(client, fly)
    task = machine.pull()["task"]
    machine.report(task, ok=False, error="flaky", error_code="transfer_failed")  # back in 1 to 2 s
    due = int(store.get_task("batch_abc", task["task_id"]).open_due) - store.PENDING_OFFSET
    clock[0] += candidates.MAX_AGE_S + 0.1  # the next pull reads the shards afresh
    counter = RequestCounter().attach(services.settings)
    answers = []
    while len(answers) < 10 and time.time() * 1000 < due - 300:  # pulls well before the retry is due
        answers.append((due - time.time() * 1000, machine.pull()))
    assert len(answers) >= 3 and {a["action"] for _, a in answers} == {"wait"}, answers
    assert counter.take()["Query"] <= TASK_SHARDS  # one read of the shards for all of them
    assert all(left - 300 < a["retry_after_ms"] <= left + 1 for left, a in answers), answers  # back when due
    time.sleep(max(0, due / 1000 - time.time()))
    clock[0] += candidates.MAX_AGE_S + 0.1
    assert machine.pull_task()["attempt"] == 2  # once due, the retry is handed out


def test_a_task_that_went_back_to_pending_after_the_last_read_keeps_machines_waiting(services, client, fly, env):
    services = start(env, tiffs=3, MAX_POOL_MACHINES_PER_BATCH="3", ALARM_DELAY_ERROR_RETRY="4000")
    run_pass(services)
    first, second, third = machines(client, fly)
    first.report(first.pull()["task"])
    retried, last = first.pull()["task"], second.pull()["task"]
    assert third.pull()["reason"] == "no work left"  # every task is done or running
    first.report(retried, ok=False, error="flaky", error_code="transfer_failed")
    second.report(last)
    # the process's last read (it found every ready task) showed nothing pending; the
    # batch's counters say one is: wait, do not exit
    answer = second.pull()
    assert answer["action"] == "wait", answer
    assert store.get_machine("batch_abc", second.name).state == "running"
