"""Luma PSNR of a JPEG against the source TIFF's 8-bit rendering (BT.601 luma)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def reference_8bit(path: Path) -> np.ndarray:
    """The source as 8-bit samples: 16-bit scaled by 257, bilevel as 0/255."""
    import tifffile

    data = tifffile.imread(path)
    if data.dtype == np.bool_:
        return data.astype(np.uint8) * 255
    if data.dtype == np.uint16:
        out = np.empty(data.shape, np.uint8)
        for y in range(0, data.shape[0], 1024):
            out[y : y + 1024] = ((data[y : y + 1024].astype(np.uint32) + 128) // 257).astype(
                np.uint8
            )
        return out
    return data


def luma_psnr(source: np.ndarray, jpeg_path: Path) -> float:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    with Image.open(jpeg_path) as im:
        decoded = np.asarray(im.convert("RGB" if source.ndim == 3 else "L"))
    if decoded.shape != source.shape:
        raise ValueError(f"shape {decoded.shape} != source {source.shape}")
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    total, count = 0.0, 0
    for y in range(0, source.shape[0], 512):
        a = source[y : y + 512].astype(np.float32)
        b = decoded[y : y + 512].astype(np.float32)
        if a.ndim == 3:
            a, b = a @ weights, b @ weights
        total += float(np.square(a - b, dtype=np.float64).sum())
        count += a.size
    mse = total / count
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
