"""YCbCr TIFFs that are not JPEG-compressed, decoded here: chroma subsampling (4:2:2,
4:2:0, 4:1:1, 4:4:0...) in TIFF 6.0 data units, or planar configuration, and samples
wider than 8 bits without subsampling. Pillow misreads them as truncated, tifffile refuses
them or hands over the raw samples, and libvips would show those raw samples as RGB.
Wider samples with subsampling are refused (NotImplementedError: unsupported). Strips are read with tifffile's own
decompressors (any compression it knows), then unpacked and converted to RGB with the
file's YCbCrCoefficients and ReferenceBlackWhite (TIFF 6.0 §21). Never touches the
network; raises nothing but what tifffile raises, which the caller translates.
"""

from __future__ import annotations

import numpy as np

DEFAULT_COEFFICIENTS = (0.299, 0.587, 0.114)


def needs_own_decoder(page) -> bool:
    """Uncompressed-style YCbCr that tifffile cannot decode itself."""
    if int(page.photometric) != 6 or int(page.compression) in (6, 7):
        return False
    sub = tuple(page.tags.valueof(530, (2, 2)))
    return page.bitspersample != 8 or sub != (1, 1) or page.planarconfig == 2


def _decode_wide(page) -> np.ndarray:
    """9- to 16-bit YCbCr: tifffile reads the samples of a page without subsampling."""
    bits = int(page.bitspersample)
    sub = tuple(int(v) for v in page.tags.valueof(530, (2, 2)))
    if sub != (1, 1) or not 8 < bits <= 16:
        raise NotImplementedError(f"YCbCr with {bits}-bit samples and chroma subsampling {sub[0]}x{sub[1]}")
    data = page.asarray()
    if page.planarconfig == 2:
        data = np.moveaxis(data, 0, -1)
    return to_rgb(page, data[..., 0], data[..., 1], data[..., 2], bits)


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


def decode(tif, page, notes: list[str] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a strip-organised YCbCr page. The chroma's resolution is
    read from the data when it contradicts the tag: libtiff sizes every plane of a planar
    file at full resolution, so writers store full-size chroma planes under the default
    (2, 2) subsampling, and some chunky writers store 4:4:4 samples under a subsampling
    tag; reading those as subsampled gives a picture of noise."""
    if page.bitspersample != 8:
        return _decode_wide(page)
    if page.is_tiled:
        raise NotImplementedError("tiled YCbCr with chroma subsampling")
    notes = notes if notes is not None else []
    height, width = page.imagelength, page.imagewidth
    sub = tuple(int(v) for v in page.tags.valueof(530, (2, 2)))
    segments = _segments(tif.filehandle, page)
    if page.planarconfig == 2:
        luma, cb, cr, sub = _planes(segments, width, height, sub, notes)
    else:
        luma, cb, cr, sub = _units(b"".join(segments), width, height, sub, notes)
    sh, sv = sub
    cb = np.repeat(np.repeat(cb, sv, axis=0), sh, axis=1)[:height, :width]
    cr = np.repeat(np.repeat(cr, sv, axis=0), sh, axis=1)[:height, :width]
    return to_rgb(page, luma, cb, cr)


def _planes(segments: list[bytes], width: int, height: int, sub, notes: list[str]):
    """Luma and chroma planes of a planar page (its strips: all of Y, then Cb, then Cr)."""
    per_plane = len(segments) // 3
    if per_plane == 0 or len(segments) % 3:
        raise ValueError("YCbCr planes: the strip count is not a multiple of three")
    y, cb, cr = (b"".join(segments[i * per_plane : (i + 1) * per_plane]) for i in range(3))
    if len(y) < width * height:
        raise ValueError("YCbCr planes are shorter than the image")
    sh, sv = sub
    if sub != (1, 1) and min(len(cb), len(cr)) >= width * height:
        notes.append(f"YCbCr chroma planes stored at full size despite subsampling {sh}x{sv}")
        sh, sv = 1, 1
    cw, ch = -(-width // sh), -(-height // sv)
    if min(len(cb), len(cr)) < cw * ch:
        raise ValueError("YCbCr chroma planes are shorter than the image")
    luma = np.frombuffer(y, np.uint8, width * height).reshape(height, width)
    planes = [np.frombuffer(c, np.uint8, cw * ch).reshape(ch, cw) for c in (cb, cr)]
    return luma, planes[0], planes[1], (sh, sv)


def _units(data: bytes, width: int, height: int, sub, notes: list[str]):
    """Luma and chroma of a chunky page: TIFF 6.0 data units of sh x sv luma samples
    followed by Cb and Cr."""
    sh, sv = sub
    cw, ch = -(-width // sh), -(-height // sv)
    unit = sh * sv + 2
    if sub != (1, 1) and len(data) >= width * height * 3 > cw * ch * unit:
        notes.append(f"YCbCr stored as 4:4:4 samples despite subsampling {sh}x{sv}")
        sh, sv, cw, ch, unit = 1, 1, width, height, 3
    if len(data) < cw * ch * unit:
        raise ValueError("YCbCr data units are shorter than the image")
    units = np.frombuffer(data, np.uint8, cw * ch * unit).reshape(ch, cw, unit)
    luma = units[..., : sh * sv].reshape(ch, cw, sv, sh).transpose(0, 2, 1, 3)
    luma = luma.reshape(ch * sv, cw * sh)[:height, :width]
    return luma, units[..., -2], units[..., -1], (sh, sv)


def default_reference(bits: int) -> tuple[float, ...]:
    """libtiff's ReferenceBlackWhite for a YCbCr file without one: full range at any depth."""
    top, half = float((1 << bits) - 1), float(1 << (bits - 1))
    return (0.0, top, half, top, half, top)


def _reference(page, bits: int) -> tuple[float, ...]:
    """The file's ReferenceBlackWhite; in a file wider than 8 bits, values that all fit
    in 8 bits are a writer's 8-bit default (tifffile writes one), taken at the file's
    depth rather than as a range of 255 in 65535."""
    ref = _floats(page.tags.valueof(532), default_reference(bits))
    if bits <= 8 or max(ref) > 255:
        return ref
    if ref == default_reference(8):
        return default_reference(bits)
    return tuple(v * ((1 << bits) - 1) / 255.0 for v in ref)


def to_rgb(page, luma: np.ndarray, cb: np.ndarray, cr: np.ndarray, bits: int = 8) -> np.ndarray:
    red, green, blue = (float(v) for v in _floats(page.tags.valueof(529), DEFAULT_COEFFICIENTS))
    ref = _reference(page, bits)
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
