"""Retry or fail from the worker's `error_code` (issue 9 §4): one case per code through
the phase's callback reading and the transition it drives, the wording fallback for a
worker that sends no code, and the code stored and shown by the tasks route."""

from __future__ import annotations

import pytest

import app
from chalicelib.phases.tiff_conversion import TiffConversion
from chalicelib.phases.worker_errors import ERROR_CODES
from chalicelib.transitions import Move, on_callback

from .conftest import (
    LambdaContext,
    callback_path,
    drive,
    error_body,
    list_tasks,
    message,
    post_callback,
    run_pass,
    sqs_event,
)

EXPECTED = {
    "input_missing": Move.FAIL,
    "not_tiff": Move.FAIL,
    "corrupt": Move.FAIL,
    "unsupported": Move.FAIL,
    "too_large": Move.FAIL,
    "out_of_memory": Move.RETRY,
    "needs_memory": Move.RETRY,
    "transfer_failed": Move.RETRY,
    "timeout": Move.RETRY,
    "internal": Move.RETRY,
}


def _decide(body: dict) -> tuple[Move, object]:
    outcome = TiffConversion().interpret_callback(body)
    return on_callback(outcome), outcome


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_each_code_decides_retry_or_fail(code):
    # the wording says the opposite of the code wherever it can: the code must win
    wording = "Failed to upload JPEG: 500" if EXPECTED[code] is Move.FAIL else "not found, corrupt"
    move, outcome = _decide({"status": "error", "error": wording, "error_code": code})
    assert move is EXPECTED[code]
    assert outcome.error_code == code


def test_the_table_is_the_one_documented():
    assert set(ERROR_CODES) == set(EXPECTED)


def test_a_transfer_error_that_says_not_found_is_retried():
    move, _ = _decide({"status": "error", "error": "Failed to upload JPEG: bucket not found",
                       "error_code": "transfer_failed"})  # fmt: skip
    assert move is Move.RETRY


def test_an_unknown_code_is_retried():
    move, outcome = _decide({"status": "error", "error": "unsupported TIFF", "error_code": "new_kind"})
    assert move is Move.RETRY and outcome.error_code == "new_kind"


@pytest.mark.parametrize(("error", "expected"), [
    ("Failed to download TIFF: 404 Not Found", Move.FAIL),
    ("Failed to convert TIFF: truncated or corrupt TIFF", Move.FAIL),
    ("Failed to upload JPEG: 500 Internal Server Error", Move.RETRY),
])  # fmt: skip
def test_without_a_code_the_wording_decides(error, expected):
    move, outcome = _decide({"status": "error", "error": error})
    assert move is expected and outcome.error_code is None


def test_the_tasks_route_shows_the_code(services, client, fly):
    app.intake(sqs_event(message(tiffs=2, others=0)), LambdaContext(30))
    run_pass(services)
    by_task = {callback_path(r)[1]["TASK_ID"]: r for r in fly.requests}
    failing, retried = sorted(by_task)
    _, fenv = callback_path(by_task[failing])
    _, renv = callback_path(by_task[retried])
    post_callback(client, by_task[failing], error_body(fenv, "Failed to convert TIFF: x", "unsupported"))
    post_callback(client, by_task[retried],
                  error_body(renv, "Failed to download TIFF: 404 Not Found", "transfer_failed"))
    tasks = {t["task_id"]: t for t in list_tasks(client, "batch_abc")}
    assert tasks[failing]["status"] == "failed" and tasks[failing]["error_code"] == "unsupported"
    assert tasks[retried]["status"] == "pending" and tasks[retried]["error_code"] == "transfer_failed"
    drive(services, lambda: len(fly.created()) == 3)  # the retried one gets a new machine
