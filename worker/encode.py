"""The JPEG encoder, behind one function so it can change: `encode_jpeg`.

Chosen by measurement (docs/worker.md): mozjpeg through libvips (pyvips-binary) with
sharp's settings minus its slowest one (`optimize_scans`): 4:2:0 chroma, quant table 3,
trellis quantisation, overshoot deringing, progressive, optimised Huffman codes. The
pixels stay Pillow's: the image is written to a raw, strip-organised TIFF next to the
output and closed, so the decoded image and the encoder's buffers are never in memory
together; libvips then reads that file strip by strip.

mozjpeg's multi-pass mode holds two coefficient buffers for the whole image (about 6
bytes a pixel in 4:2:0 colour, 4 in grey; trellis quantisation alone already needs them,
so no streaming pass reaches the same bytes). The memory budget is the machine's memory
less a reserve (`memory_budget`; WORKER_MEMORY_BUDGET_MB overrides it), so a machine
sized for the image takes this full-quality path at any size: `full_quality_memory`
says how much that is. When it would break the budget, the image is encoded in one
streaming pass
instead (baseline, no trellis) and then, if its ~4 bytes a pixel fit, losslessly
re-optimised by mozjpeg (mozjpeg-lossless-optimization: optimal Huffman codes,
progressive scans): some 20% more bytes than the multi-pass path; past that, the
streaming pass alone (some 50% more).

Without pyvips the encoder falls back to Pillow (libjpeg-turbo: optimize + progressive).
The JPEG carries no ICC profile: its pixels are sRGB, which is what an untagged JPEG
means (docs/worker.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from worker.exceptions import ConversionError, NeedsMemoryError, UnsupportedTiffError

JPEG_MAX_SIDE = 65500
MIB = 1024 * 1024
# Bytes a pixel of mozjpeg's two whole-image coefficient buffers, and what the process
# holds besides (interpreter, Pillow, libvips).
MOZJPEG_FULL_BYTES_PER_PIXEL = {"RGB": 6.1, "L": 4.1}
# ... and of the lossless re-optimisation's coefficient buffers (measured: 100 MP RGB
# peaks near 500 MB with the JPEGs it reads and writes).
LOSSLESS_BYTES_PER_PIXEL = {"RGB": 4.2, "L": 2.8}
PROCESS_BASELINE = 48 * MIB
# What the budget leaves to the kernel, the page cache of the staged files and the
# task's parent process: a fifth of the machine, at least 160 MiB.
RESERVE_FRACTION = 0.2
MIN_RESERVE = 160 * MIB
MIN_BUDGET = 256 * MIB

# One pass, nothing held for the whole image: the large-image path.
STREAMING_OPTIONS = dict(subsample_mode="on", quant_table=3, optimize_coding=False)

MOZJPEG_OPTIONS = dict(
    subsample_mode="on",  # 4:2:0 as sharp; ignored for greyscale
    quant_table=3,
    trellis_quant=True,
    overshoot_deringing=True,
    interlace=True,
    optimize_coding=True,
)

_pyvips = None


def _load_pyvips():
    global _pyvips
    if _pyvips is None:
        if os.environ.get("WORKER_ENCODER", "").lower() == "pillow":
            _pyvips = False
        else:
            try:
                import pyvips

                pyvips.cache_set_max(0)
                _pyvips = pyvips
            except Exception:  # pyvips or its libvips missing: Pillow still encodes
                _pyvips = False
    return _pyvips or None


def memory_budget() -> int:
    """What one conversion may use: WORKER_MEMORY_BUDGET_MB, else the machine's memory
    (FLY_VM_MEMORY_MB, the cgroup limit or RAM) less the reserve."""
    raw = os.environ.get("WORKER_MEMORY_BUDGET_MB", "").strip()
    try:
        if raw:
            return int(float(raw) * MIB)
    except ValueError:
        pass
    from worker.settings import memory_limit_bytes

    memory = memory_limit_bytes()
    return max(MIN_BUDGET, memory - max(MIN_RESERVE, int(memory * RESERVE_FRACTION)))


def full_quality_memory(width: int, height: int, mode: str = "RGB") -> int:
    """The machine memory (bytes) with which `memory_budget` admits the full-quality
    multi-pass path for this image: what an orchestrator sizing machines should ask."""
    need = width * height * MOZJPEG_FULL_BYTES_PER_PIXEL[mode] + PROCESS_BASELINE
    return int(max(need + MIN_RESERVE, need / (1 - RESERVE_FRACTION)))


def fits_multipass(width: int, height: int, mode: str, budget: int | None = None) -> bool:
    """Whether mozjpeg's multi-pass encoder stays within the memory budget."""
    budget = memory_budget() if budget is None else budget
    need = width * height * MOZJPEG_FULL_BYTES_PER_PIXEL[mode] + PROCESS_BASELINE
    return need <= budget


def check_machine_fits(width: int, height: int, mode: str, max_memory_mb: int | None) -> None:
    """Pool mode's memory tiers: raise `NeedsMemoryError` when the full-quality encoder
    needs more machine memory (`full_quality_memory`, the formula single mode sizes its
    machines with) than this machine has (`worker.settings.machine_memory_bytes`) and the
    pool has a machine with more (`max_memory_mb`, the assignment's). Not `fits_multipass`:
    the budget's MIN_BUDGET floor admits up to 256 MB on the smallest machines, where such
    an image is then killed for memory. Otherwise nothing: the encoder takes the best path
    within the budget, as without tiers. Never without mozjpeg (no machine encodes better
    then) nor for an image too large for any JPEG (the conversion says so)."""
    from worker.settings import machine_memory_bytes

    machine_mb = machine_memory_bytes() // MIB
    if not max_memory_mb or max_memory_mb <= machine_mb or max(width, height) > JPEG_MAX_SIDE:
        return
    if not _load_pyvips():
        return
    need_mb = -(-full_quality_memory(width, height, mode) // MIB)
    if need_mb <= machine_mb:  # only this slot's share or WORKER_MEMORY_BUDGET_MB is short
        return
    raise NeedsMemoryError(
        f"needs {need_mb} MB for full-quality encoding ({width} x {height} {mode}); this "
        f"machine has {machine_mb} MB, the pool up to {max_memory_mb} MB",
        need_mb,
    )


def check_jpeg_size(width: int, height: int) -> None:
    if max(width, height) > JPEG_MAX_SIDE:
        raise UnsupportedTiffError(
            f"unsupported TIFF: {width} x {height} is larger than a JPEG can be "
            f"({JPEG_MAX_SIDE} pixels a side)"
        )


def valid_dpi(dpi) -> tuple[float, float] | None:
    if dpi and len(dpi) >= 2 and all(isinstance(d, int | float) and d > 0 for d in dpi[:2]):
        return (float(dpi[0]), float(dpi[1]))
    return None


def encode_jpeg(image, out_path: str | os.PathLike, quality: int = 95) -> str:
    """Write `image` ("L" or "RGB", sRGB) as a JPEG; returns the encoder's name.

    Closes `image` to free its memory before the encoder's own buffers grow.
    """
    if image.mode not in ("L", "RGB"):
        raise ValueError(f"encode_jpeg wants L or RGB, got {image.mode}")
    check_jpeg_size(image.width, image.height)
    dpi = valid_dpi(image.info.get("dpi"))
    pyvips = _load_pyvips()
    if not pyvips:
        save_options = {"dpi": dpi} if dpi else {}
        image.save(out_path, "JPEG", quality=quality, optimize=True, progressive=True,
                   subsampling="4:2:0", **save_options)  # fmt: skip
        image.close()
        return "libjpeg-turbo (Pillow)"
    out_path = Path(out_path)
    raw_path = out_path.with_name(out_path.name + ".raw.tif")
    try:
        image.save(raw_path, "TIFF", compression="raw", **({"dpi": dpi} if dpi else {}))
        image.close()
        return encode_raw_tiff(raw_path, out_path, quality, dpi)
    finally:
        raw_path.unlink(missing_ok=True)


def encode_raw_tiff(raw_path: Path, out_path: Path, quality: int, dpi) -> str:
    """Encode an 8-bit L or RGB strip TIFF (read strip by strip) with mozjpeg, by the
    best of three paths that fits the memory budget; deletes `raw_path` when done."""
    pyvips = _load_pyvips()
    if not pyvips:
        raise ConversionError("libvips is not available for large images")
    budget = memory_budget()
    try:
        vimage = pyvips.Image.new_from_file(str(raw_path), access="sequential")
        width, height = vimage.width, vimage.height
        mode = "RGB" if vimage.bands >= 3 else "L"
        # No metadata but the resolution (an EXIF block of ~190 bytes, only with a dpi).
        keep = "exif" if dpi else "none"
        if fits_multipass(width, height, mode, budget):
            vimage.jpegsave(str(out_path), Q=quality, keep=keep, **MOZJPEG_OPTIONS)
            return "mozjpeg (libvips)"
        vimage.jpegsave(str(out_path), Q=quality, keep=keep, **STREAMING_OPTIONS)
        del vimage
        raw_path.unlink(missing_ok=True)
        if not fits_lossless(width, height, mode, out_path.stat().st_size, budget):
            return "mozjpeg (libvips, streaming, baseline)"
        if not _optimize_losslessly(out_path):
            return "mozjpeg (libvips, streaming, baseline)"
        return "mozjpeg (libvips, streaming) + lossless optimisation"
    except pyvips.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else "libvips error"
        raise ConversionError(f"JPEG encoding failed: {message}") from None
    finally:
        raw_path.unlink(missing_ok=True)


def fits_lossless(width: int, height: int, mode: str, jpeg_bytes: int, budget: int) -> bool:
    """Whether the lossless re-optimisation (coefficients of the whole image, the JPEG
    read and the JPEG written) stays within the budget."""
    need = width * height * LOSSLESS_BYTES_PER_PIXEL[mode] + 2.2 * jpeg_bytes + PROCESS_BASELINE
    return need <= budget


def _optimize_losslessly(path: Path) -> bool:
    try:
        import mozjpeg_lossless_optimization
    except ImportError:  # a worker requirement; without it the baseline JPEG stands
        return False

    data = path.read_bytes()
    try:
        optimized = mozjpeg_lossless_optimization.optimize(
            data, copy=mozjpeg_lossless_optimization.COPY_MARKERS.ALL
        )
    except Exception as exc:
        raise ConversionError(f"JPEG optimisation failed: {exc}") from None
    del data
    path.write_bytes(optimized)
    return True
