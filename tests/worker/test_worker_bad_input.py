"""Bad input: a precise one-line reason, never a hang, a crash or a traceback."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
import worker_tiffmaker as tm
from PIL import Image
from worker_helpers import run_cli

from worker.convert import convert_file
from worker.exceptions import (
    ConversionCrashedError,
    ConversionError,
    ConversionTimeoutError,
    CorruptTiffError,
    ImageTooLargeError,
    NotATiffError,
)
from worker.settings import Limits

LIMITS = Limits(max_pixels=50_000_000, timeout_s=30)


def lzw_rgb_bytes(h=256, w=256) -> bytes:
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    tifffile.imwrite(buf, rng.integers(0, 255, (h, w, 3), np.uint8), compression="lzw",
                     photometric="rgb", rowsperstrip=h)  # fmt: skip
    return buf.getvalue()


def check(tmp_path, data: bytes, error: type, words: str, limits: Limits = LIMITS):
    path = tmp_path / "bad.tif"
    path.write_bytes(data)
    with pytest.raises(error) as info:
        convert_file(str(path), str(tmp_path / "bad.jpg"), limits)
    message = str(info.value)
    assert words in message, message
    assert "\n" not in message
    return message


def test_not_a_tiff(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    check(tmp_path, buf.getvalue(), NotATiffError, "not a TIFF file: it starts with b'\\x89PNG")


def test_empty_file(tmp_path):
    check(tmp_path, b"", NotATiffError, "the file is empty")


def test_truncated_header(tmp_path):
    check(tmp_path, b"II*\x00\x08", CorruptTiffError, "truncated")


def test_truncated_pixel_data(tmp_path):
    data = lzw_rgb_bytes()
    check(tmp_path, data[: len(data) // 2], ConversionError, "corrupt")


def test_truncated_uncompressed(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (300, 300), (10, 20, 30)).save(buf, "TIFF")
    data = buf.getvalue()
    check(tmp_path, data[: len(data) // 3], ConversionError, "truncated")


def test_corrupt_ifd_offset(tmp_path):
    check(tmp_path, b"II*\x00\xff\xff\xff\x7f" + b"\0" * 100, ConversionError, "TIFF")


def test_corrupt_compressed_data(tmp_path):
    data = bytearray(lzw_rgb_bytes())
    rng = np.random.default_rng(1)
    start = len(data) // 4
    data[start : start + 4000] = rng.integers(0, 255, 4000, np.uint8).tobytes()
    path = tmp_path / "bad.tif"
    path.write_bytes(bytes(data))
    # Garbage in an LZW stream is either detected or decodes to noise; it must not hang
    # or crash, and a detected error must be a ConversionError.
    try:
        convert_file(str(path), str(tmp_path / "bad.jpg"), LIMITS)
    except ConversionError as exc:
        assert "\n" not in str(exc)


def test_decompression_bomb(tmp_path):
    message = check(tmp_path, tm.bomb_tiff(), ImageTooLargeError, "image too large")
    assert "100000 x 100000" in message and "WORKER_MAX_PIXELS" in message


def test_pixel_limit_is_configurable(tmp_path):
    buf = io.BytesIO()
    Image.new("L", (100, 100)).save(buf, "TIFF")
    check(tmp_path, buf.getvalue(), ImageTooLargeError, "limit is 0.0", Limits(max_pixels=9_999))


def test_unsupported_compression(tmp_path):
    data = tm.raw_tiff(16, 16, [(258, 3, 8), (259, 3, 34712), (262, 3, 1), (273, 4, "DATA"),
                                (277, 3, 1), (278, 4, 16), (279, 4, 256)], b"\0" * 256)  # fmt: skip
    check(tmp_path, data, ConversionError, "TIFF")


def test_unsupported_photometric(tmp_path):
    data = tm.raw_tiff(16, 16, [(258, 3, 8), (259, 3, 1), (262, 3, 32844), (273, 4, "DATA"),
                                (277, 3, 1), (278, 4, 16), (279, 4, 256)], b"\0" * 256)  # fmt: skip
    check(tmp_path, data, ConversionError, "TIFF")


def test_wall_clock_limit(tmp_path):
    path = tmp_path / "slow.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 255, (1500, 1500, 3), np.uint8), photometric="rgb")
    with pytest.raises(ConversionTimeoutError, match="timed out after 0.05 s"):
        convert_file(
            str(path), str(tmp_path / "slow.jpg"), Limits(max_pixels=10**8, timeout_s=0.05)
        )


def _crash(*args):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_conversion_is_reported(tmp_path):
    from worker.isolation import run_isolated

    with pytest.raises(ConversionCrashedError, match="SIGKILL"):
        run_isolated(_crash, (), 10)


def test_cli_reports_one_line_without_traceback(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("hello, I am not a TIFF\n")
    result = run_cli("convert", str(path), str(tmp_path / "x.jpg"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "not a TIFF file" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "x.jpg").exists()


def test_cli_missing_file(tmp_path):
    result = run_cli("convert", str(tmp_path / "nope.tif"), str(tmp_path / "x.jpg"))
    assert result.returncode == 1
    assert "no such file" in result.stderr and "Traceback" not in result.stderr


def test_cli_timeout_and_success(tmp_path):
    path = tmp_path / "ok.tif"
    tifffile.imwrite(path, tm.quadrant_rgb(), photometric="rgb")
    result = run_cli("convert", str(path), str(tmp_path / "ok.jpg"))
    assert result.returncode == 0, result.stderr
    assert "96x64 RGB" in result.stdout
    assert (tmp_path / "ok.jpg").read_bytes()[:2] == b"\xff\xd8"

    big = tmp_path / "big.tif"
    tifffile.imwrite(big, np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), np.uint8))
    result = run_cli(
        "convert", str(big), str(tmp_path / "big.jpg"), env={"WORKER_CONVERT_TIMEOUT_S": "0.05"}
    )
    assert result.returncode == 1
    assert "timed out" in result.stderr and "Traceback" not in result.stderr


def test_cli_usage(tmp_path):
    result = run_cli("convert", "only-one-arg")
    assert result.returncode == 2 and "usage" in result.stderr


def test_too_large_for_the_machine_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("FLY_VM_MEMORY_MB", "64")
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((1000, 1000, 3), np.uint8), photometric="rgb",
                     extratags=[(274, "H", 1, 6, True)])  # fmt: skip
    check(tmp_path, buf.getvalue(), ImageTooLargeError, "the machine has 64 MB")


def test_isolated_conversion_after_libvips_ran_in_this_process(tmp_path):
    """libvips' threads do not survive fork: once it has run here, the child must be a
    fresh interpreter, or the conversion hangs until its time limit."""
    from worker.convert import convert_in_process
    from worker.isolation import _libvips_running

    path = tmp_path / "small.tif"
    tifffile.imwrite(path, tm.quadrant_rgb(), photometric="rgb")
    convert_in_process(str(path), str(tmp_path / "first.jpg"), LIMITS)  # libvips runs here
    assert _libvips_running()
    report = convert_file(str(path), str(tmp_path / "second.jpg"), Limits(50_000_000, timeout_s=20))
    assert report.encoder.startswith("mozjpeg")
