"""The last decoder in line: libvips (pyvips, which the worker ships for encoding) for
the kinds neither Pillow nor tifffile read, chiefly SGI LogLuv and LogL (Photometric
32845/32844, high dynamic range luminance from Radiance-style cameras and scanners).

Rendering rule for LogLuv and LogL (docs/worker.md): libtiff's own 8-bit rendering of the
format (tif_luv.c, Greg Ward's reference code, the pixels TIFFReadRGBAImage and so
tiff2rgba give): relative luminance Y = 1.0 is white and brighter values clip, XYZ goes to
RGB by libtiff's CCIR-709 matrix, then a gamma of 2.0 (int(256 x sqrt(v))). libvips
decodes the codes (XYZ floats for LogLuv, the LogL16 code for LogL); the rule is applied
here in numpy. Anything else libvips reads is brought to sRGB by its colourspace
conversion, an embedded profile applied with relative colorimetric intent and black-point
compensation. Never touches the network.
"""

from __future__ import annotations

import numpy as np

from worker.exceptions import NotEnoughMemoryError, UnsupportedTiffError

PHOTOMETRIC_LOGL, PHOTOMETRIC_LOGLUV = 32844, 32845


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


# libvips hands over LogLuv as its XYZ: libtiff's values times its D65 white (95.047, 100,
# 108.883); dividing by that gives libtiff's own XYZ, Y = 1.0 white.
_VIPS_WHITE = np.array([95.047, 100.0, 108.883], np.float32)

# libtiff's XYZ -> RGB ("assume CCIR-709 primaries", tif_luv.c XYZtoRGB24).
_XYZ_TO_RGB = np.array([[2.690, -1.276, -0.414], [-1.022, 1.978, 0.044], [0.061, -0.224, 1.163]])


def libtiff_8bit(linear: np.ndarray) -> np.ndarray:
    """libtiff's tone curve for SGILOG data: 0 at or below 0, 255 at or above 1, else
    int(256 x sqrt(v)) (tif_luv.c XYZtoRGB24 and L16toGry)."""
    v = np.nan_to_num(np.asarray(linear, np.float64), nan=0.0)
    out = (256.0 * np.sqrt(np.clip(v, 0.0, 1.0))).astype(np.int64)
    return np.clip(np.where(v >= 1.0, 255, out), 0, 255).astype(np.uint8)


def logl16_to_y(code: np.ndarray) -> np.ndarray:
    """LogL16 codes (15-bit log2 luminance, 1/256 stop steps, sign bit) -> Y."""
    code = code.astype(np.int64)
    level = code & 0x7FFF
    y = np.where(level == 0, 0.0, np.exp2((level + 0.5) / 256.0 - 64.0))
    return np.where(code & 0x8000, -y, y)


def _by_rows(data: np.ndarray, convert) -> np.ndarray:
    """convert() applied a block of rows at a time (its float64 copies stay small)."""
    step = max(1, (4 << 20) // max(1, data[0].size))
    return np.concatenate([convert(data[y : y + step]) for y in range(0, data.shape[0], step)])


def logl_to_grey8(code: np.ndarray) -> np.ndarray:
    """LogL as libvips hands it over (the 16-bit code, or Y as floats) -> libtiff's grey."""
    if code.dtype.kind == "f":
        return _by_rows(code, libtiff_8bit)
    return _by_rows(code, lambda rows: libtiff_8bit(logl16_to_y(rows.astype(np.int64) & 0xFFFF)))


def xyz_to_rgb8(xyz: np.ndarray, white=(1.0, 1.0, 1.0)) -> np.ndarray:
    """(H, W, 3) CIE XYZ, divided by `white` to make Y = 1.0 white -> libtiff's 8-bit RGB."""
    matrix = _XYZ_TO_RGB / np.asarray(white, np.float64)[None, :]
    return _by_rows(xyz, lambda rows: libtiff_8bit(rows.astype(np.float64) @ matrix.T))


def render(path: str, photometric: int | None, notes: list[str]):
    """A Pillow image ("L" or "RGB", sRGB) of the first page, orientation not applied."""
    from PIL import Image

    pyvips = _pyvips()
    image = pyvips.Image.new_from_file(str(path), access="random", fail=True)
    _check_memory(image.width, image.height, image.bands)
    if photometric == PHOTOMETRIC_LOGL:  # libvips hands over the LogL16 code
        code = image.numpy()
        code = code if code.ndim == 2 else code[..., 0]
        notes.append("LogL rendered as libtiff does (Y = 1 white, gamma 2.0)")
        return Image.fromarray(logl_to_grey8(code), "L")
    if image.interpretation == "xyz":  # LogLuv
        xyz = image.numpy()[..., :3]
        notes.append("LogLuv rendered as libtiff does (CIE XYZ, Y = 1 white, gamma 2.0)")
        return Image.fromarray(xyz_to_rgb8(xyz, _VIPS_WHITE), "RGB")
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
