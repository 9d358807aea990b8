"""The ingest receiver records enqueue-processed deliveries and shows them."""

from __future__ import annotations

import pytest
import requests

from arke_local.ingest_receiver import IngestReceiver


@pytest.fixture
def receiver():
    r = IngestReceiver(port=0).start()
    yield r
    r.stop()


def test_records_and_shows_deliveries(receiver):
    files = [{"r2_key": "staging/b1/a.jpg", "file_name": "a.jpg"}]
    resp = requests.post(f"{receiver.url}/api/batches/b1/enqueue-processed", json={"files": files}, timeout=5)
    assert resp.status_code == 200 and resp.json()["files"] == 1
    summary = requests.get(f"{receiver.url}/received", timeout=5).json()
    assert summary["count"] == 1 and summary["deliveries"][0]["batch_id"] == "b1"
    one = requests.get(f"{receiver.url}/received/b1", timeout=5).json()
    assert one["count"] == 1 and one["deliveries"][0]["body"] == {"files": files}
    assert requests.get(f"{receiver.url}/received/other", timeout=5).json()["count"] == 0


def test_rejects_a_body_without_files(receiver):
    resp = requests.post(f"{receiver.url}/api/batches/b1/enqueue-processed", json={"x": 1}, timeout=5)
    assert resp.status_code == 400
    assert requests.get(f"{receiver.url}/received", timeout=5).json()["count"] == 0


def test_fail_next_knob_refuses_then_accepts(receiver):
    requests.post(f"{receiver.url}/_receiver/fail-next", json={"count": 2, "status": 502}, timeout=5)
    url = f"{receiver.url}/api/batches/b2/enqueue-processed"
    codes = [requests.post(url, json={"files": []}, timeout=5).status_code for _ in range(3)]
    assert codes == [502, 502, 200]
    got = requests.get(f"{receiver.url}/received/b2", timeout=5).json()
    assert got["count"] == 1 and len(got["rejected"]) == 2
    requests.delete(f"{receiver.url}/received", timeout=5)
    assert requests.get(f"{receiver.url}/received", timeout=5).json()["count"] == 0
