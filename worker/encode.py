"""The JPEG encoder, behind one function so it can change: `encode_jpeg`.

Chosen by measurement (docs/worker.md): mozjpeg through libvips (pyvips-binary) with
sharp's settings minus its slowest one (`optimize_scans`): 4:2:0 chroma, quant table 3,
trellis quantisation, overshoot deringing, progressive, optimised Huffman codes. The
pixels stay Pillow's: the image is written to a raw, strip-organised TIFF next to the
output and closed, so the decoded image and the encoder's coefficient buffer are never
in memory together; libvips then reads that file strip by strip. Without pyvips the
encoder falls back to Pillow (libjpeg-turbo: optimize + progressive). The JPEG carries no
ICC profile: its pixels are sRGB, which is what untagged JPEG means (docs/worker.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from worker.exceptions import ConversionError, UnsupportedTiffError

JPEG_MAX_SIDE = 65500

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


def encoder_name() -> str:
    return "mozjpeg (libvips)" if _load_pyvips() else "libjpeg-turbo (Pillow)"


def encode_jpeg(image, out_path: str | os.PathLike, quality: int = 95) -> str:
    """Write `image` ("L" or "RGB", sRGB) as a JPEG; returns the encoder's name.

    Closes `image` to free its memory before the encoder's own buffers grow.
    """
    if image.mode not in ("L", "RGB"):
        raise ValueError(f"encode_jpeg wants L or RGB, got {image.mode}")
    if max(image.size) > JPEG_MAX_SIDE:
        raise UnsupportedTiffError(
            f"unsupported TIFF: {image.width} x {image.height} is larger than a JPEG can be "
            f"({JPEG_MAX_SIDE} pixels a side)"
        )
    dpi = image.info.get("dpi")
    if not (dpi and len(dpi) >= 2 and all(isinstance(d, int | float) and d > 0 for d in dpi[:2])):
        dpi = None
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
        vimage = pyvips.Image.new_from_file(str(raw_path), access="sequential")
        # No metadata but the resolution (an EXIF block of ~190 bytes, only with a dpi).
        keep = "exif" if dpi else "none"
        vimage.jpegsave(str(out_path), Q=quality, keep=keep, **MOZJPEG_OPTIONS)
        del vimage
    except pyvips.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else "libvips error"
        raise ConversionError(f"JPEG encoding failed: {message}") from None
    finally:
        raw_path.unlink(missing_ok=True)
    return "mozjpeg (libvips)"
