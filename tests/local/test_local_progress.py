"""watch: progress numbers and exit codes, on a terminal and off it."""

from __future__ import annotations

import io

from arke_local.client import ApiError
from arke_local.progress import Progress, watch


def answer(status, total, completed, failed=0, error=None):
    return {"status": status, "error": error,
            "progress": {"tasks_total": total, "tasks_completed": completed, "tasks_failed": failed}}


class FakeClient:
    def __init__(self, answers):
        self.answers = list(answers)

    def status(self, batch_id):
        item = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(item, Exception):
            raise item
        return item


def test_rate_and_eta():
    p = Progress()
    p.update(0.0, answer("TIFF_CONVERSION", 10, 0))
    assert p.rate is None and p.eta_s is None
    p.update(2.0, answer("TIFF_CONVERSION", 10, 3, 1))
    assert p.rate == 2.0 and p.eta_s == 3.0
    bar = p.render_bar("b")
    assert "3 completed, 1 failed, 10 total" in bar and "2.0/s" in bar and "ETA 3s" in bar
    assert "40.0%" in bar


def test_done_exits_zero_with_plain_lines():
    out = io.StringIO()
    client = FakeClient([
        ApiError(404, "unknown batch", "u"),
        answer("TIFF_CONVERSION", 3, 1),
        answer("TIFF_CONVERSION", 3, 2, 1),
        answer("DONE", 3, 2, 1),
    ])
    code, last = watch(client, "b", interval_s=0.0, out=out, tty=False)
    assert code == 0 and last["status"] == "DONE"
    lines = out.getvalue().splitlines()
    assert all(line.startswith("[CLI] ") for line in lines)
    assert "\r" not in out.getvalue()
    assert any("waiting for the batch" in line for line in lines)
    assert lines[-1].startswith("[CLI] b: DONE in")


def test_error_exits_one_and_tty_redraws():
    out = io.StringIO()
    client = FakeClient([answer("TIFF_CONVERSION", 2, 0), answer("ERROR", 2, 0, error="Manually reset by admin")])
    code, _ = watch(client, "b", interval_s=0.0, out=out, tty=True)
    assert code == 1
    assert "\r" in out.getvalue() and "Manually reset by admin" in out.getvalue()


def test_timeout_and_unknown_batch():
    out = io.StringIO()
    code, _ = watch(FakeClient([answer("TIFF_CONVERSION", 2, 0)]), "b", interval_s=0.01, timeout_s=0.05, out=out, tty=False)
    assert code == 1 and "gave up" in out.getvalue()
    code, _ = watch(FakeClient([ApiError(404, "no", "u")]), "b", interval_s=0.0, appear_timeout_s=0.0, out=out, tty=False)
    assert code == 1
