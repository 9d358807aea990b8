"""Decoded sample arrays (tifffile's, samples last) -> 8-bit Pillow images by the
rendering rules of docs/worker.md: bit-depth scaling, the scientific-raster stretch
(worker.stretch), palettes, every L*a*b* encoding, alpha onto white, MinIsWhite. Pure
numpy and Pillow; no file, no decoder, no network."""

from __future__ import annotations

from worker.exceptions import CorruptTiffError, UnsupportedTiffError
from worker.stretch import parse_nodata  # noqa: F401 (the decoder reads GDAL_NODATA through here)


def samples_last(np, data, axes: str):
    """tifffile's array -> (H, W) or (H, W, S)."""
    keep = [i for i, a in enumerate(axes) if a in "YXS"]
    for i in reversed(range(len(axes))):
        if i not in keep:
            data = data.take(0, axis=i)
    axes = "".join(a for a in axes if a in "YXS")
    if "S" in axes and axes != "YXS":
        data = np.moveaxis(data, axes.index("S"), -1)
    return np.ascontiguousarray(data)


def _to_uint8(np, data, bits: int, nodata: float | None, notes: list[str]):
    """Scale any sample type to uint8 by the rules in the module docstring; returns the
    samples and the mask of no-data samples (None when there is none)."""
    if data.dtype == np.bool_:
        return data.astype(np.uint8) * 255, None
    kind = data.dtype.kind
    container = 8 * data.dtype.itemsize
    odd_depth = kind == "u" and 16 < bits < container  # 24-bit samples held in 32 bits
    if kind == "u" and (data.dtype.itemsize <= 2 or odd_depth) and nodata is None:
        bits = bits if 0 < bits <= 8 * data.dtype.itemsize else 8 * data.dtype.itemsize
        if bits == 8:
            return data.astype(np.uint8, copy=False), None
        return _affine(np, data, 255.0 / ((1 << bits) - 1), 0.0), None
    if kind == "f" and nodata is None:
        finite = np.isfinite(data)
        values = data[finite] if not finite.all() else data
        if values.size and float(values.min()) >= 0.0 and float(values.max()) <= 1.0:
            return _affine(np, np.nan_to_num(data, nan=0.0), 255.0, 0.0), None
    from worker import stretch

    pixels, invalid = stretch.stretch(data, nodata, notes)
    return pixels, invalid if invalid.any() else None


def _affine(np, data, scale: float, offset: float):
    """round(data * scale + offset) clipped to uint8, a block of rows at a time."""
    out = np.empty(data.shape, np.uint8)
    step = max(1, (8 << 20) // max(1, data[0].size))
    for y in range(0, data.shape[0], step):
        block = data[y : y + step].astype(np.float64) * scale + offset + 0.5
        np.clip(block, 0, 255, out=block)
        out[y : y + step] = block.astype(np.uint8)
    return out


_LAB = {8: "CIELAB", 9: "ICC L*a*b*", 10: "ITU L*a*b*"}


def _lab_to_pillow(np, data, photometric: int):
    """Any TIFF L*a*b* (8/16-bit; CIELab with signed a*/b*, ICCLab with unsigned ones
    offset by half the range, ITULab with the default Decode ranges) as Pillow's 8-bit
    LAB (L* x 2.55, a*/b* as signed bytes)."""
    raw = data[..., :3]
    top = 255.0 if raw.dtype.itemsize == 1 else 65535.0
    unsigned = raw.view(np.uint8 if raw.dtype.itemsize == 1 else np.uint16).astype(np.float64)
    if photometric == 10:
        lightness = unsigned[..., 0] * 100.0 / top
        a = -85.0 + unsigned[..., 1] * 170.0 / top
        b = -75.0 + unsigned[..., 2] * 199.0 / top
    else:
        lightness = unsigned[..., 0] * 100.0 / top
        if photometric == 8:
            signed = raw.view(np.int8 if raw.dtype.itemsize == 1 else np.int16).astype(np.float64)
            ab = signed[..., 1:]
        else:
            ab = unsigned[..., 1:] - (top + 1) / 2
        ab = ab if raw.dtype.itemsize == 1 else ab / 256.0
        a, b = ab[..., 0], ab[..., 1]
    out = np.empty(lightness.shape + (3,), np.uint8)
    out[..., 0] = np.clip(lightness * 2.55 + 0.5, 0, 255).astype(np.uint8)
    for i, channel in ((1, a), (2, b)):  # Pillow's LAB keeps a*/b* as signed bytes
        out[..., i] = np.clip(np.round(channel), -128, 127).astype(np.int8).view(np.uint8)
    return out


def _palette(np, data, colormap):
    """Indices through the colour map; a map of 8-bit values (0-255, written by some
    tools instead of TIFF's 16-bit range) is taken as such instead of turning black."""
    table = np.asarray(colormap).T.astype(np.float64)
    scale = 1.0 if table.max() <= 255 else 255.0 / 65535.0
    lut = np.clip(table * scale + 0.5, 0, 255).astype(np.uint8)
    index = data if data.ndim == 2 else data[..., 0]
    return np.ascontiguousarray(lut[np.minimum(index, len(lut) - 1)])


def _split_alpha(np, data, colour: int, extras):
    """(colour samples, alpha in 0..1 or None, premultiplied)."""
    samples = data.shape[2] if data.ndim == 3 else 1
    if samples <= colour or not extras or extras[0] not in (1, 2):
        return (data if data.ndim == 2 else data[..., :colour]), None, False
    alpha = data[..., colour]
    if alpha.dtype.kind == "f":
        alpha = np.clip(np.nan_to_num(alpha.astype(np.float32), nan=1.0), 0.0, 1.0)
    elif alpha.dtype.kind == "u":
        alpha = alpha.astype(np.float32) / float(np.iinfo(alpha.dtype).max)
    else:
        alpha = np.clip(alpha.astype(np.float32) / float(np.iinfo(alpha.dtype).max), 0.0, 1.0)
    return data[..., :colour], alpha, extras[0] == 1


def array_to_image(np, data, photometric: int, bits: int, extras, colormap, nodata, notes):
    from PIL import Image

    samples = data.shape[2] if data.ndim == 3 else 1
    if photometric == 3:  # palette
        if colormap is None:
            raise CorruptTiffError("truncated or corrupt TIFF: palette image without colour map")
        return Image.fromarray(_palette(np, data, colormap), "RGB")
    if photometric in _LAB and samples >= 3 and data.dtype.itemsize <= 2:
        notes.append(f"{_LAB[photometric]} {8 * data.dtype.itemsize}-bit read as such")
        return Image.fromarray(_lab_to_pillow(np, data, photometric), "LAB")
    if photometric not in (0, 1, 2, 5):
        raise UnsupportedTiffError(f"unsupported TIFF: photometric interpretation {photometric}")
    colour = {0: 1, 1: 1, 2: 3, 5: 4}[photometric]
    if samples < colour:
        raise CorruptTiffError(
            f"truncated or corrupt TIFF: {samples} samples for photometric {photometric}"
        )
    base, alpha, premultiplied = _split_alpha(np, data, colour, extras)
    base, invalid = _to_uint8(np, base, bits, nodata, notes)
    if base.ndim == 2:
        base = base[..., None]
        invalid = invalid[..., None] if invalid is not None else None
    if photometric == 0:
        base = 255 - base
    if alpha is not None:
        colours = base.astype(np.float32)
        if photometric == 5:  # CMYK over white paper: no ink where transparent
            colours = colours if premultiplied else colours * alpha[..., None]
        else:
            white = 255.0 * (1.0 - alpha[..., None])
            colours = colours + white if premultiplied else colours * alpha[..., None] + white
        base = np.clip(colours + 0.5, 0, 255).astype(np.uint8)
        notes.append("alpha flattened onto white")
    if invalid is not None:  # no-data shows as nothing: white paper (no ink for CMYK)
        hole = invalid.all(axis=2)
        base[hole] = 0 if photometric == 5 else 255
    mode = {1: "L", 3: "RGB", 4: "CMYK"}[colour]
    base = np.ascontiguousarray(base if colour > 1 else base[..., 0])
    return Image.fromarray(base, mode)
