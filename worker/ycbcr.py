"""YCbCr TIFFs that are not JPEG-compressed, decoded here: chroma subsampling (4:2:2,
4:2:0, 4:1:1, 4:4:0...) in TIFF 6.0 data units, or planar configuration. Pillow misreads
them as truncated and tifffile refuses them. Strips are read with tifffile's own
decompressors (any compression it knows), then unpacked and converted to RGB with the
file's YCbCrCoefficients and ReferenceBlackWhite (TIFF 6.0 §21). Never touches the
network; raises nothing but what tifffile raises, which the caller translates.
"""

from __future__ import annotations

import numpy as np

DEFAULT_COEFFICIENTS = (0.299, 0.587, 0.114)
DEFAULT_REFERENCE = (0.0, 255.0, 128.0, 255.0, 128.0, 255.0)


def needs_own_decoder(page) -> bool:
    """Uncompressed-style YCbCr that tifffile cannot decode itself."""
    if int(page.photometric) != 6 or int(page.compression) in (6, 7):
        return False
    sub = tuple(page.tags.valueof(530, (2, 2)))
    return page.bitspersample == 8 and (sub != (1, 1) or page.planarconfig == 2)


def _segments(fh, page) -> list[bytes]:
    """The decompressed bytes of every strip or tile, in file order."""
    from tifffile import TIFF

    compression = int(page.compression)
    decompress = None if compression == 1 else TIFF.DECOMPRESSORS[compression]
    out = []
    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
        fh.seek(offset)
        raw = fh.read(count)
        out.append(raw if decompress is None else bytes(decompress(raw)))
    return out


def decode(tif, page) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a strip-organised YCbCr page."""
    if page.is_tiled:
        raise NotImplementedError("tiled YCbCr with chroma subsampling")
    height, width = page.imagelength, page.imagewidth
    sh, sv = (int(v) for v in page.tags.valueof(530, (2, 2)))
    cw, ch = -(-width // sh), -(-height // sv)
    data = b"".join(_segments(tif.filehandle, page))
    if page.planarconfig == 2:
        y_size, c_size = width * height, cw * ch
        planes = np.frombuffer(data[: y_size + 2 * c_size], np.uint8)
        if planes.size < y_size + 2 * c_size:
            raise ValueError("YCbCr planes are shorter than the image")
        luma = planes[:y_size].reshape(height, width)
        cb = planes[y_size : y_size + c_size].reshape(ch, cw)
        cr = planes[y_size + c_size :].reshape(ch, cw)
    else:
        unit = sh * sv + 2
        units = np.frombuffer(data[: cw * ch * unit], np.uint8)
        if units.size < cw * ch * unit:
            raise ValueError("YCbCr data units are shorter than the image")
        units = units.reshape(ch, cw, unit)
        luma = units[..., : sh * sv].reshape(ch, cw, sv, sh).transpose(0, 2, 1, 3)
        luma = luma.reshape(ch * sv, cw * sh)[:height, :width]
        cb, cr = units[..., -2], units[..., -1]
    cb = np.repeat(np.repeat(cb, sv, axis=0), sh, axis=1)[:height, :width]
    cr = np.repeat(np.repeat(cr, sv, axis=0), sh, axis=1)[:height, :width]
    return to_rgb(page, luma, cb, cr)


def to_rgb(page, luma: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    red, green, blue = (float(v) for v in _floats(page.tags.valueof(529), DEFAULT_COEFFICIENTS))
    ref = _floats(page.tags.valueof(532), DEFAULT_REFERENCE)
    y = (luma.astype(np.float32) - ref[0]) * 255.0 / max(ref[1] - ref[0], 1e-6)
    b_ = (cb.astype(np.float32) - ref[2]) * 127.0 / max(ref[3] - ref[2], 1e-6)
    r_ = (cr.astype(np.float32) - ref[4]) * 127.0 / max(ref[5] - ref[4], 1e-6)
    r = r_ * (2 - 2 * red) + y
    b = b_ * (2 - 2 * blue) + y
    g = (y - blue * b - red * r) / green
    rgb = np.dstack([r, g, b]) + 0.5
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _floats(value, default: tuple[float, ...]) -> tuple[float, ...]:
    """Rational tags come back from tifffile as (num, den) pairs or flat numbers."""
    if value is None:
        return default
    flat = [float(v) for v in np.asarray(value, dtype=np.float64).ravel()]
    if len(flat) == 2 * len(default):
        flat = [n / d if d else 0.0 for n, d in zip(flat[::2], flat[1::2], strict=True)]
    return tuple(flat) if len(flat) == len(default) else default
