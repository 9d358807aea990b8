"""The last decoder in line: libvips (pyvips, which the worker ships for encoding) for
the kinds neither Pillow nor tifffile read, chiefly SGI LogLuv and LogL (Photometric
32845/32844, high dynamic range luminance from Radiance-style cameras and scanners).

HDR rule (docs/worker.md): luminance Y is relative (1.0 = diffuse white). When the
99.5th percentile of Y is above 1 the image is scaled so that it becomes white, else it
is shown as stored; colour goes XYZ -> sRGB by libvips, grey is Y sRGB-encoded.
Anything else libvips reads is brought to sRGB by its colourspace conversion, an
embedded profile applied with relative colorimetric intent and black-point
compensation. Never touches the network.
"""

from __future__ import annotations

import numpy as np

from worker.exceptions import NotEnoughMemoryError, UnsupportedTiffError

PHOTOMETRIC_LOGL, PHOTOMETRIC_LOGLUV = 32844, 32845
HIGH_PERCENTILE = 99.5


def _pyvips():
    from worker.encode import _load_pyvips

    pyvips = _load_pyvips()
    if not pyvips:
        raise UnsupportedTiffError("unsupported TIFF: libvips is not available")
    return pyvips


def _check_memory(width: int, height: int, bands: int) -> None:
    from worker.settings import memory_limit_bytes

    need = width * height * max(bands, 1) * 4 * 3 + 64 * 1024 * 1024
    memory = memory_limit_bytes()
    if need > memory:
        raise NotEnoughMemoryError(
            f"image too large: decoding this image through libvips needs about {need >> 20} MB, "
            f"the machine has {memory >> 20} MB"
        )


def _exposure(y: np.ndarray) -> float:
    """The factor that brings relative luminance to display range (module rule)."""
    finite = y[np.isfinite(y)]
    high = float(np.percentile(finite[:: max(1, finite.size // 4_000_000)], HIGH_PERCENTILE)) if finite.size else 1.0
    return 1.0 / high if high > 1.0 else 1.0


def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    x = np.clip(linear, 0.0, 1.0)
    y = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return (y * 255.0 + 0.5).astype(np.uint8)


def render(path: str, photometric: int | None, notes: list[str]):
    """A Pillow image ("L" or "RGB", sRGB) of the first page, orientation not applied."""
    from PIL import Image

    pyvips = _pyvips()
    image = pyvips.Image.new_from_file(str(path), access="random", fail=True)
    _check_memory(image.width, image.height, image.bands)
    if photometric == PHOTOMETRIC_LOGL:
        code = image.numpy().astype(np.int64) & 0x7FFF  # libvips hands over the LogL16 code
        y = np.where(code == 0, 0.0, np.exp2((code + 0.5) / 256.0 - 64.0))
        factor = _exposure(y)
        notes.append(f"LogL luminance shown at exposure x{factor:g}")
        return Image.fromarray(_srgb_encode(y * factor), "L")
    if image.interpretation == "xyz":  # LogLuv: libvips gives CIE XYZ with Y of 1.0 = 100
        factor = _exposure(image[1].numpy() / 100.0)
        srgb = (image * factor).colourspace("srgb").cast("uchar")
        notes.append(f"LogLuv (CIE XYZ) converted to sRGB at exposure x{factor:g}")
        return Image.fromarray(np.ascontiguousarray(srgb.numpy()[..., :3]), "RGB")
    return _generic(pyvips, image, notes)


def _generic(pyvips, image, notes: list[str]):
    from PIL import Image

    if image.hasalpha():
        image = image.flatten(background=[255 if image.format == "uchar" else 65535] * (image.bands - 1))
        notes.append("alpha flattened onto white")
    if image.get_typeof("icc-profile-data"):
        image = image.icc_transform("srgb", embedded=True, intent="relative",
                                    black_point_compensation=True)  # fmt: skip
        notes.append("embedded ICC profile converted to sRGB")
    grey = image.bands == 1 or image.interpretation in ("b-w", "grey16")
    image = image.colourspace("b-w" if grey else "srgb")
    if image.format == "ushort":
        image = image / 257
    image = image.cast("uchar")
    pixels = image.numpy()
    if grey:
        pixels = pixels if pixels.ndim == 2 else pixels[..., 0]
        return Image.fromarray(np.ascontiguousarray(pixels), "L")
    notes.append(f"decoded by libvips ({image.interpretation})")
    return Image.fromarray(np.ascontiguousarray(pixels[..., :3]), "RGB")
