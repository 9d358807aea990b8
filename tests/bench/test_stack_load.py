"""bench/stack_load.py's arithmetic: percentiles, what counts as a failure, the per-route
rows. Its HTTP side needs a stack and is the benchmark's own run."""

from __future__ import annotations

import pytest

from bench.stack_load import LoadReport, Sample, percentile, route_of, summarize


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_routes_group_by_first_segment():
    assert route_of("/status/batch_1") == "/status"
    assert route_of("/health") == "/health"


def test_no_answer_and_5xx_are_failures_and_stay_out_of_latency():
    samples = [Sample("/status/b", 0.0, 0.010, 200), Sample("/status/b", 0.1, 1.2, 404),
               Sample("/status/b", 0.2, 5.0, 0), Sample("/status/b", 0.3, 3.0, 502)]
    row = summarize("/status", samples, 2.0)
    assert row["requests"] == 4 and row["failures"] == 2
    assert row["achieved_rps"] == pytest.approx(1.0)  # 2 answered (a 404 is an answer) in 2 s
    assert row["max_ms"] == pytest.approx(1200) and row["over_1s"] == 1


def test_report_rows_per_route_and_overall():
    report = LoadReport(200, 1.0, [Sample("/health", 0, 0.001, 200), Sample("/status/x", 0, 0.002, 200),
                                   Sample("/health", 0.5, 0.003, 200)])
    rows = {r["route"]: r for r in report.rows()}
    assert set(rows) == {"/health", "/status", "all"}
    assert (rows["/health"]["requests"], rows["all"]["requests"]) == (2, 3)
