"""The console's read routes (issue 11 §1): GET /status/{id}/timeline counts tasks as the
callbacks end them (in the callbacks' own transaction, so a callback stays O(1) and a
duplicate counts nothing), GET /batches lists batches from indexes (no scan), and
GET /console is one self-contained HTML page."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime

import app
from chalicelib import store, timeline
from chalicelib.ddb_metrics import RequestCounter
from chalicelib.models import Batch
from chalicelib.store.dynamo import transact
from chalicelib.timeline import MINUTE_MS, eta_seconds, points, rate_per_minute
from chalicelib.transitions import Move

from .conftest import (
    LambdaContext,
    error_body,
    make_services,
    message,
    post_callback,
    run_pass,
    sqs_event,
)
from .test_orch_cost import _during


def _timeline(client, batch_id="batch_abc"):
    answer = client.http.get(f"/status/{batch_id}/timeline")
    assert answer.status_code == 200, answer.body
    return answer.json_body


def _ended(body):
    return (sum(p["completed"] for p in body["points"]), sum(p["failed"] for p in body["points"]))


def test_timeline_counts_what_ended_once(services, client, fly, env):
    make_services(env, MAX_RETRY_ATTEMPTS="2")
    app.intake(sqs_event(message(tiffs=4, others=0)), LambdaContext(30))
    assert _timeline(client)["points"] == []
    run_pass(services)
    first, second, third, fourth = fly.requests[:4]
    assert post_callback(client, first).status_code == 200
    assert post_callback(client, first).json_body.get("ignored") is True  # duplicate: not counted
    assert post_callback(client, second).status_code == 200
    env3 = third["body"]["config"]["env"]
    post_callback(client, third, error_body(env3, "Failed to download TIFF: 404 Not Found"))  # permanent
    env4 = fourth["body"]["config"]["env"]
    post_callback(client, fourth, error_body(env4, "connection reset"))  # retried: not ended
    body = _timeline(client)
    assert _ended(body) == (2, 1)
    assert body["bucket_seconds"] == 60 and body["status"] == "TIFF_CONVERSION"
    assert body["rate_per_minute"] > 0 and body["eta_seconds"] is not None  # one task left
    status = client.http.get("/status/batch_abc").json_body["progress"]
    assert (status["tasks_completed"], status["tasks_failed"]) == _ended(body)


def test_a_callback_costs_one_transaction_with_the_timeline(services, client, fly):
    app.intake(sqs_event(message(tiffs=2, others=0)), LambdaContext(30))
    run_pass(services)
    counter = RequestCounter().attach(services.settings)
    calls = _during(counter, lambda: post_callback(client, fly.requests[0]))
    assert calls == {"TransactWriteItems": 1}
    reads = _during(counter, lambda: _timeline(client))
    assert reads == {"GetItem": 1, "BatchGetItem": 2}  # the batch, its counts items, its timeline slots


def test_timeline_404_and_400(client):
    assert client.http.get("/status/batch_nope/timeline").status_code == 404
    assert client.http.get("/status/bad..id/timeline").status_code == 400


def test_points_fill_empty_minutes_and_ignore_foreign_keys():
    raw = {"c100": 3, "f100": 1, "c103": 2, "x101": 9, "cabc": 4}
    assert points(raw) == [(100, 3, 1), (101, 0, 0), (102, 0, 0), (103, 2, 0)]
    assert points(None) == [] and points({}) == []


def test_rate_uses_the_last_five_minutes_and_eta_follows():
    now = 110 * MINUTE_MS + 30_000  # half-way through minute 110
    series = [(100, 50, 0), (106, 4, 1), (110, 2, 0)]
    # minutes 106..110 count (4.5 minutes passed in that window): 7 tasks
    assert abs(rate_per_minute(series, now) - 7 / 4.5) < 1e-9
    young = [(110, 3, 0)]  # a batch in its first half minute
    assert abs(rate_per_minute(young, now) - 3 / 0.5) < 1e-9
    assert rate_per_minute([], now) == 0.0
    assert eta_seconds(10, 5.0) == 120
    assert eta_seconds(0, 0.0) == 0
    assert eta_seconds(10, 0.0) is None


def test_count_only_for_ended_tasks_in_their_minutes_slot():
    class Tx:
        def __init__(self):
            self.updates = []

        def update(self, item, actions):
            self.updates.append((item.batch_id, [(type(a).__name__, str(a.values[0])) for a in actions]))

    tx = Tx()
    timeline.count(tx, "b", Move.RETRY, 0)
    assert tx.updates == []
    minute = 29_410_003  # the fourth minute of slot 2941001
    timeline.count(tx, "b", Move.COMPLETE, minute * MINUTE_MS + 59_999)
    timeline.count(tx, "b", Move.FAIL, (minute + 7) * MINUTE_MS)
    assert [key for key, _ in tx.updates] == ["#timeline#b#2941000", "#timeline#b#2941001"]
    assert [actions for _, actions in tx.updates] == [[("AddAction", "c3")], [("AddAction", "f0")]]


def test_callbacks_leave_the_batch_item_as_it_was(services, client, fly):
    """The counts are the shards' counts items and the chart's the timeline slots: the
    batch item neither grows nor is written at all (docs/scale.md)."""
    app.intake(sqs_event(message(tiffs=2, others=0)), LambdaContext(30))
    run_pass(services)
    before = Batch.get("batch_abc", consistent_read=True).serialize()
    post_callback(client, fly.requests[0])
    post_callback(client, fly.requests[1])
    assert Batch.get("batch_abc", consistent_read=True).serialize() == before
    batch = store.get_batch("batch_abc")
    assert (batch.tasks_completed, batch.tasks_in_flight, batch.task_ms_count) == (2, 0, 2)
    assert batch.last_ended_at is not None


def test_batches_lists_newest_first_in_pages_without_a_scan(services, client):
    for i in range(3):
        app.intake(sqs_event(message(f"batch_{i}", tiffs=1, others=0)), LambdaContext(30))
    counter = RequestCounter().attach(services.settings)
    first = {}
    calls = _during(counter, lambda: first.update(client.http.get("/batches?limit=2").json_body))
    # the recent page's items, then the counts items of the recent and of the active batches
    assert "Scan" not in calls and calls["Query"] == 2 and calls["BatchGetItem"] == 3
    assert [b["batch_id"] for b in first["recent"]] == ["batch_2", "batch_1"]
    assert sorted(b["batch_id"] for b in first["active"]) == ["batch_0", "batch_1", "batch_2"]
    assert first["recent"][0]["progress"]["tasks_total"] == 1 and first["next"]
    second = client.http.get(f"/batches?limit=2&next={first['next']}").json_body
    assert [b["batch_id"] for b in second["recent"]] == ["batch_0"]
    assert second["active"] == [] and second["next"] is None


def test_batches_rejects_bad_pages(services, client):
    forged = base64.urlsafe_b64encode(json.dumps({"batch_id": {"S": "x"}}).encode()).decode()
    for query in ("limit=0", "limit=101", "limit=x", "next=%21%21", f"next={forged}"):
        answer = client.http.get(f"/batches?{query}")
        assert answer.status_code == 400 and set(answer.json_body) == {"error"}, query


def test_tasks_name_their_input_file(services, client):
    """The console shows each task's input file: the key's last segment, as written, even
    with characters HTML would read (the page escapes it; the route gives it as is)."""
    body = message(tiffs=0, others=0)
    names = ["plain.tif", 'Smith & Jones <draft> "p. 7".tif', "O'Brien.v2.TIFF"]
    folders = ["", "scans/volume-2/", "a.b/c d/"]
    body["directories"][0]["files"] = [
        {"r2_key": f"staging/batch_abc/{folder}{name}", "logical_path": f"{folder}{name}", "file_name": name,
         "file_size": 1000, "content_type": "image/tiff"} for folder, name in zip(folders, names, strict=True)]
    body["total_files"] = len(names)
    app.intake(sqs_event(body), LambdaContext(30))
    tasks = client.http.get("/status/batch_abc/tasks").json_body["tasks"]
    got = {t["input_r2_key"]: t["input_file_name"] for t in tasks}
    assert got == {f"staging/batch_abc/{folder}{name}": name for folder, name in zip(folders, names, strict=True)}


def test_console_is_one_self_contained_page(client):
    answer = client.http.get("/console")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "connect-src 'self'" in answer.headers["Content-Security-Policy"]
    html = answer.body.decode()
    assert "<script>" in html and "<style>" in html
    assert not re.search(r"""(src|href)=["']https?://""", html)  # no CDN, nothing fetched elsewhere
    assert "localStorage" not in html and "sessionStorage" not in html and "document.cookie" not in html


def test_a_running_batch_shows_its_quiet_minutes_up_to_now(services, client, fly):
    app.intake(sqs_event(message(tiffs=2, others=0)), LambdaContext(30))
    run_pass(services)
    post_callback(client, fly.requests[0])
    batch = store.get_batch("batch_abc")
    later = timeline.timeline_json(batch, int(batch.updated_at) + 3 * MINUTE_MS)
    assert [p["completed"] for p in later["points"]] == [1, 0, 0, 0]
    assert later["rate_per_minute"] < 1  # one task in the last few minutes


def test_the_chart_reads_every_slot_of_the_batch_and_nothing_before_it(services, client, fly):
    app.intake(sqs_event(message(tiffs=1, others=0)), LambdaContext(30))
    batch = store.get_batch("batch_abc")
    start = timeline.minute_of(batch.started_at)
    ended = {start - 1: Move.COMPLETE,  # an earlier run's, before this batch started: not shown
             start: Move.COMPLETE, start + 9: Move.FAIL, start + 25: Move.COMPLETE}  # three slots
    for minute, move in ended.items():
        transact(services.settings, lambda tx, minute=minute, move=move: timeline.count(
            tx, "batch_abc", move, minute * MINUTE_MS + 1))
    transact(services.settings, lambda tx: timeline.count(tx, "batch_abc", Move.COMPLETE, start * MINUTE_MS))
    body = timeline.timeline_json(batch, (start + 26) * MINUTE_MS)
    got = {timeline.minute_of(_ms(p["minute"])): (p["completed"], p["failed"])
           for p in body["points"] if p["completed"] or p["failed"]}
    assert got == {start: (2, 0), start + 9: (0, 1), start + 25: (1, 0)}
    assert len(body["points"]) == 27  # every minute from the start to now, quiet ones as zeros


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
