"""The `error_code` each kind of failure carries into the error callback (issue 9 §4):
real files and real conversions, each failure made to happen, the code read off the
exception the task turns into the callback body (worker.task.error_body). The codes of
transfers are asserted end to end in test_worker_contract and test_worker_presigned."""

from __future__ import annotations

import io
import os
import signal

import numpy as np
import pytest
import tifffile
import worker_tiffmaker as tm
from test_worker_kinds import save

from worker.convert import convert_file
from worker.exceptions import ConversionError, WorkerError
from worker.settings import ContractSettings, Limits
from worker.task import error_body

LIMITS = Limits(max_pixels=50_000_000, timeout_s=30)


def code_of(tmp_path, path, limits: Limits = LIMITS) -> str:
    with pytest.raises(ConversionError) as info:
        convert_file(str(path), str(tmp_path / "out.jpg"), limits)
    return info.value.code


def test_not_tiff(tmp_path):
    assert code_of(tmp_path, save(tmp_path, "pdf", b"%PDF-1.7 not a tiff")) == "not_tiff"


def test_corrupt(tmp_path):
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((256, 256, 3), np.uint8) + 7, compression="lzw", photometric="rgb")
    data = buf.getvalue()
    assert code_of(tmp_path, save(tmp_path, "cut", data[: len(data) // 2])) == "corrupt"


def test_unsupported(tmp_path):
    data = bytes(tm.W * tm.H)
    entries = [(258, 3, 8), (259, 3, 1), (262, 3, 32844), (273, 4, "DATA"), (277, 3, 1),
               (278, 4, tm.H), (279, 4, len(data))]  # fmt: skip
    assert code_of(tmp_path, save(tmp_path, "logl-raw", tm.raw_tiff(tm.W, tm.H, entries, data))) == "unsupported"


def test_too_large(tmp_path):
    assert code_of(tmp_path, save(tmp_path, "bomb", tm.bomb_tiff())) == "too_large"


def test_out_of_memory_when_the_machine_is_too_small(tmp_path, monkeypatch):
    monkeypatch.setenv("FLY_VM_MEMORY_MB", "64")  # fits the pixel limit, not the machine
    path = tmp_path / "rotated.tif"
    tifffile.imwrite(path, np.zeros((1000, 1000, 3), np.uint8), photometric="rgb",
                     extratags=[(274, "H", 1, 6, True)])  # fmt: skip
    assert code_of(tmp_path, path) == "out_of_memory"


def _killed():
    os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer sends


def _crashed():
    os.kill(os.getpid(), signal.SIGSEGV)


def test_out_of_memory_when_the_conversion_is_killed():
    from worker.isolation import run_isolated

    with pytest.raises(ConversionError) as info:
        run_isolated(_killed, (), 10)
    assert info.value.code == "out_of_memory"
    with pytest.raises(ConversionError) as info:
        run_isolated(_crashed, (), 10)
    assert info.value.code == "internal"  # a crash that is not the OOM killer's


def test_timeout(tmp_path):
    path = tmp_path / "slow.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 255, (1500, 1500, 3), np.uint8), photometric="rgb")
    assert code_of(tmp_path, path, Limits(max_pixels=50_000_000, timeout_s=0.05)) == "timeout"


def _bug():
    raise KeyError("a bug of ours")


def test_internal():
    from worker.isolation import run_isolated

    with pytest.raises(ConversionError) as info:
        run_isolated(_bug, (), 10)
    assert info.value.code == "internal" and "KeyError" in str(info.value)


def test_error_body_carries_the_code():
    settings = ContractSettings.from_env({
        "TASK_ID": "t", "BATCH_ID": "b", "INPUT_R2_KEY": "k.tif", "R2_ACCOUNT_ID": "a",
        "R2_ACCESS_KEY_ID": "i", "R2_SECRET_ACCESS_KEY": "s", "R2_BUCKET": "bk",
        "CALLBACK_URL": "http://127.0.0.1:9/cb",
    })  # fmt: skip
    body = error_body(settings, "x", WorkerError.code)
    assert body["error_code"] == "internal" and body["error"] == "x" and body["status"] == "error"
