"""watch: the view at any width, the phase, the failed-task table and the exit codes."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from arke_local.client import ApiError
from arke_local.progress import Progress, render_failed, render_view, watch

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# GET /status's `machines` for a pool batch (chalicelib/views.py machines_view, docs/pool.md)
POOL = {"live": 12, "target": 40, "peak": 40, "created": 50}


def answer(status, total, completed, failed=0, error=None, in_flight=0, machines=None, delivery=None):
    a = {"status": status, "error": error,
         "progress": {"tasks_total": total, "tasks_completed": completed, "tasks_failed": failed,
                      "tasks_in_flight": in_flight,
                      "tasks_pending": max(0, total - completed - failed - in_flight)},
         "delivery": delivery or {"attempts": 0, "last_error": None, "delivered_at": None}}
    if machines is not None:
        a["machines"] = machines
    return a


FAILED = [{"task_id": "b_tiff_3", "input_r2_key": "staging/b/box 3/broken_scan_0003.tiff", "attempts": 5,
           "last_error": "Conversion failed: cannot identify image file (truncated TIFF at offset 1823)"}]


class FakeClient:
    """Answers `status` from a script (the last answer repeats) and the failed-task page."""

    def __init__(self, answers, failed=None):
        self.answers = list(answers)
        self.failed = failed or []
        self.pages = []

    def status(self, batch_id):
        item = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(item, Exception):
            raise item
        return item

    def tasks_page(self, batch_id, status=None, limit=100, next_token=None):
        self.pages.append((status, limit))
        return {"tasks": self.failed[:limit], "next": "tok" if len(self.failed) > limit else None}


def rendered(renderable, width):
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue().splitlines()


def busy(machines=None):
    p = Progress()
    p.update(0.0, answer("TIFF_CONVERSION", 1200, 380, 3, in_flight=12))
    p.update(10.0, answer("TIFF_CONVERSION", 1200, 420, 3, in_flight=12, machines=machines or POOL))
    return p


def test_rate_eta_and_phase_words():
    p = Progress()
    p.update(0.0, answer("TIFF_CONVERSION", 10, 0))
    assert p.rate is None and p.eta_s is None and p.phase == "converting"
    p.update(2.0, answer("TIFF_CONVERSION", 10, 3, 1))
    assert p.rate == 2.0 and p.eta_s == 3.0
    # every task ended, the phase not yet moved on: no "ETA 0s", the phase says so
    p.update(3.0, answer("TIFF_CONVERSION", 10, 9, 1))
    assert p.eta_s is None and "all tasks ended" in p.phase and not any("ETA" in x for x in p.task_parts())
    p.update(4.0, answer("FINALIZING", 10, 9, 1, delivery={"attempts": 1, "last_error": "503"}))
    assert p.phase == "delivering"
    assert p.delivery_text() == "delivering the file list (attempt 2), last: 503"


@pytest.mark.parametrize("width", [40, 80, 120, 200])
def test_view_fits_the_width(width):
    lines = rendered(render_view(busy(), "batch_2026_0001_abcdef", width, 75.0), width)
    assert len(lines) == 3  # batch + phase, tasks, machines
    assert all(len(line) <= width for line in lines), lines
    assert lines[0].startswith("batch_2026_0001_abcdef  converting")
    assert lines[1].startswith("tasks") and "420 done" in lines[1]
    # the counts start in the tasks line's column, whole, in the API's order, never cut
    full = "machines 12 live  40 target  40 peak  50 created"
    if width >= 80:  # rate and ETA survive at 80 columns, and every machine count
        assert "4.0/s" in lines[1] and "ETA 3m14s" in lines[1] and "━" in lines[1]
        assert lines[2] == full
    else:  # what does not fit is left out from the end, a whole count at a time
        assert lines[2] == "machines 12 live  40 target  40 peak"
    if width >= 120:
        assert "765 pending" in lines[1]


def test_machine_counts_are_named_from_their_keys():
    p = busy({"live": 3, "max_in_flight": 1000, "flag": True, "note": None})
    assert p.machine_parts() == ["3 live", "1000 max in flight"]  # not a number: left out


def test_a_pool_status_prints_its_machines_on_the_plain_line():
    out = io.StringIO()
    single = dict(answer("TIFF_CONVERSION", 60, 10), machines=None, pool=None)  # what a single-mode batch answers
    client = FakeClient([answer("TIFF_CONVERSION", 60, 10, machines=POOL),
                         answer("TIFF_CONVERSION", 60, 10, machines=dict(POOL, live=11)),  # the pool alone changed
                         single, answer("DONE", 60, 60, delivery={"attempts": 1, "delivered_at": "x"})])
    code, _ = watch(client, "b", interval_s=0.0, out=out, tty=False)
    assert code == 0
    lines = [line for line in out.getvalue().splitlines() if line.startswith("[CLI] b TIFF")]
    assert len(lines) == 3
    assert "; machines: 12 live, 40 target, 40 peak, 50 created (t+" in lines[0]
    assert "; machines: 11 live, 40 target" in lines[1]
    assert "machines" not in lines[2]


@pytest.mark.parametrize("machines", ["absent", None, {}])
def test_no_machine_line_without_a_machines_block(machines):
    p = Progress()
    status = answer("TIFF_CONVERSION", 4, 1)
    if machines != "absent":  # a single-mode batch answers "machines": null
        status["machines"] = machines
    p.update(0.0, status)
    lines = rendered(render_view(p, "b", 80, 1.0), 80)
    assert len(lines) == 2 and not any(line.startswith("machines") for line in lines)


@pytest.mark.parametrize("width", [40, 80, 200])
def test_failed_table_fits_and_names_the_retry(width):
    lines = rendered(render_failed(FAILED, False, 1, "arke-preprocess retry b"), width)
    text = "\n".join(lines)
    assert all(len(line) <= width for line in lines)
    assert "truncated" in text and "1823" in text and "retry them:" in text
    assert "arke-preprocess retry" in text


def test_done_without_failures_exits_0_one_plain_line_per_change():
    out = io.StringIO()
    client = FakeClient([
        ApiError(404, "unknown batch", "u"),
        answer("TIFF_CONVERSION", 3, 1),
        answer("TIFF_CONVERSION", 3, 1),  # no change: no line
        answer("TIFF_CONVERSION", 3, 2),
        answer("FINALIZING", 3, 3),
        answer("DONE", 3, 3, delivery={"attempts": 1, "delivered_at": "2026-01-01T00:00:00Z"}),
    ])
    code, last = watch(client, "b", interval_s=0.0, out=out, tty=False)
    assert code == 0 and last["status"] == "DONE"
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert all(line.startswith("[CLI] ") for line in lines)
    assert lines[0] == "[CLI] b: waiting for the batch to appear"
    progress_lines = [line for line in lines if line.startswith("[CLI] b TIFF") or line.startswith("[CLI] b FIN")
                      or line.startswith("[CLI] b DONE")]
    assert len(progress_lines) == 4
    assert progress_lines[0].startswith("[CLI] b TIFF_CONVERSION (converting): 1 done, 0 failed, of 3")
    assert progress_lines[2].startswith("[CLI] b FINALIZING (delivering): 3 done")
    assert progress_lines[3].startswith("[CLI] b DONE: 3 done") and "delivered after 1 attempt(s)" in progress_lines[3]
    assert lines[-1].startswith("[CLI] b: DONE in") and "failed" not in lines[-1]
    assert client.pages == []  # no failed task: no tasks query


def test_done_with_failed_tasks_exits_2_and_lists_them():
    out = io.StringIO()
    client = FakeClient([answer("TIFF_CONVERSION", 3, 1), answer("DONE", 3, 2, 1)], failed=FAILED)
    code, _ = watch(client, "b", interval_s=0.0, out=out, tty=False, retry_command="arke-preprocess retry b")
    assert code == 2
    text = out.getvalue()
    assert client.pages == [("failed", 20)]
    assert "[CLI] failed: staging/b/box 3/broken_scan_0003.tiff attempts=5 error: Conversion failed" in text
    assert "[CLI] retry them: arke-preprocess retry b" in text
    assert text.splitlines()[-1].startswith("[CLI] b: DONE in") and "1 task(s) failed" in text


def test_error_exits_1_and_the_terminal_view_fits_80_columns():
    out = io.StringIO()
    client = FakeClient([
        answer("TIFF_CONVERSION", 200, 10, 2, in_flight=30, machines={"running": 30}),
        answer("TIFF_CONVERSION", 200, 60, 2, in_flight=30, machines={"running": 30}),
        answer("ERROR", 200, 60, 2, error="Manually reset by admin"),
    ], failed=FAILED)
    code, _ = watch(client, "batch_with_a_rather_long_identifier_0001", interval_s=0.0, out=out,
                    tty=True, width=80)
    assert code == 1
    raw = out.getvalue()
    assert "\x1b[" in raw  # redrawn in place
    visible = [ANSI.sub("", part) for part in re.split(r"[\r\n]", raw)]
    assert all(len(line) <= 80 for line in visible), max(visible, key=len)
    assert "Manually reset by admin" in raw and "retry them:" in raw


def test_timeout_and_unknown_batch_exit_1():
    out = io.StringIO()
    code, _ = watch(FakeClient([answer("TIFF_CONVERSION", 2, 0)]), "b", interval_s=0.01, timeout_s=0.05,
                    out=out, tty=False)
    assert code == 1 and "gave up" in out.getvalue()
    code, _ = watch(FakeClient([ApiError(404, "no", "u")]), "b", interval_s=0.0, appear_timeout_s=0.0,
                    out=out, tty=False)
    assert code == 1


def test_cli_retry_command_names_the_stage():
    from arke_local.cli import _retry_command, build_parser

    args = build_parser().parse_args(["--stage", "dev", "--api-url", "https://x/api", "watch", "B"])
    assert _retry_command(args, "B") == "arke-preprocess --stage dev --api-url https://x/api retry B"
    assert _retry_command(build_parser().parse_args(["watch", "B"]), "B") == "arke-preprocess retry B"


def test_many_failed_tasks_say_how_to_list_them_all_and_a_failed_listing_is_reported():
    many = [dict(FAILED[0], task_id=f"t{i}", input_r2_key=f"staging/b/{i}.tif") for i in range(25)]
    out = io.StringIO()
    code, _ = watch(FakeClient([answer("DONE", 30, 5, 25)], failed=many), "b", interval_s=0.0, out=out,
                    tty=True, width=100)
    assert code == 2
    text = ANSI.sub("", out.getvalue())
    assert "staging/b/19.tif" in text and "staging/b/20.tif" not in text  # the first 20
    assert "all of them: arke-preprocess tasks b --failed" in text

    class Unlistable(FakeClient):
        def tasks_page(self, *a, **kw):
            raise ApiError(503, "busy", "u")

    out = io.StringIO()
    code, _ = watch(Unlistable([answer("DONE", 3, 2, 1)]), "b", interval_s=0.0, out=out, tty=False)
    assert code == 2 and "could not list the failed tasks: 503" in out.getvalue()
