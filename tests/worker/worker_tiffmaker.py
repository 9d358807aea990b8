"""Builds the test TIFFs: through Pillow and tifffile where they can write the kind, by
hand (`raw_tiff`) where nothing writes it (old-style JPEG, bombs, odd tags). Each
builder returns the path and the rendering a viewer should show, computed here
independently of the worker (numpy only)."""

from __future__ import annotations

import io
import struct

import numpy as np

H, W = 64, 96  # small; quadrant edges on 16-pixel JPEG MCU boundaries in both orientations

# Quadrant colours: top-left, top-right, bottom-left, bottom-right.
QUADRANTS = ((200, 40, 40), (40, 180, 60), (50, 70, 210), (240, 230, 120))
GREY_QUADRANTS = (30, 100, 170, 240)


def quadrant_rgb(h: int = H, w: int = W) -> np.ndarray:
    a = np.empty((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = QUADRANTS[0]
    a[: h // 2, w // 2 :] = QUADRANTS[1]
    a[h // 2 :, : w // 2] = QUADRANTS[2]
    a[h // 2 :, w // 2 :] = QUADRANTS[3]
    return a


def quadrant_grey(h: int = H, w: int = W) -> np.ndarray:
    a = np.empty((h, w), np.uint8)
    a[: h // 2, : w // 2] = GREY_QUADRANTS[0]
    a[: h // 2, w // 2 :] = GREY_QUADRANTS[1]
    a[h // 2 :, : w // 2] = GREY_QUADRANTS[2]
    a[h // 2 :, w // 2 :] = GREY_QUADRANTS[3]
    return a


def orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for stored pixels `a` with the TIFF Orientation tag."""
    ops = {
        1: lambda x: x,
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: np.swapaxes(x, 0, 1),
        6: lambda x: np.swapaxes(x, 0, 1)[:, ::-1],
        7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1],
        8: lambda x: np.swapaxes(x, 0, 1)[::-1],
    }
    return np.ascontiguousarray(ops[orientation](a))


# Bytes per value of each TIFF field type (BYTE, ASCII, SHORT, LONG, RATIONAL, SBYTE,
# UNDEFINED, SSHORT, SLONG, SRATIONAL, FLOAT, DOUBLE).
_TYPE_FORMAT = {1: "B", 2: "s", 3: "H", 4: "I", 5: "II", 6: "b", 7: "s", 8: "h", 9: "i",
                10: "ii", 11: "f", 12: "d"}  # fmt: skip


def _offset(value: object, data_offset: int) -> object:
    """"DATA" is the pixel data's offset, ("DATA", n) n bytes past it."""
    if value == "DATA":
        return data_offset
    if isinstance(value, tuple) and value and value[0] == "DATA":
        return data_offset + value[1]
    return value


def _pack_value(typ: int, value: object, data_offset: int) -> bytes:
    if typ in (2, 7):  # ASCII / UNDEFINED: bytes or str, as given
        return value.encode() if isinstance(value, str) else bytes(value)
    values = value if isinstance(value, list) else [value]
    values = [_offset(v, data_offset) for v in values]
    if typ in (5, 10):  # rationals: (numerator, denominator) pairs
        return b"".join(struct.pack("<" + _TYPE_FORMAT[typ], *v) for v in values)
    return struct.pack("<" + _TYPE_FORMAT[typ] * len(values), *values)


def raw_tiff(
    width: int, height: int, entries: list[tuple[int, int, object]], data: bytes = b""
) -> bytes:
    """A little-endian classic TIFF with one IFD. `entries`: (tag, type, value) with any
    TIFF field type (value an int, a list, a (num, den) pair list for rationals, bytes or
    str for ASCII/UNDEFINED); the pixel data follows the IFD, and the placeholder value
    "DATA" is replaced by its offset."""
    entries = sorted([(256, 4, width), (257, 4, height), *entries], key=lambda e: e[0])
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    extra_base = ifd_offset + ifd_size
    sizes = [len(_pack_value(typ, value, 0)) for _tag, typ, value in entries]
    data_offset = extra_base + sum(size for size in sizes if size > 4)
    body = bytearray(struct.pack("<2sHI", b"II", 42, ifd_offset))
    body += struct.pack("<H", len(entries))
    extra = bytearray()
    for tag, typ, value in entries:
        packed = _pack_value(typ, value, data_offset)
        unit = struct.calcsize("<" + _TYPE_FORMAT[typ]) if typ not in (2, 7) else 1
        count = len(packed) // unit
        if len(packed) > 4:
            body += struct.pack("<HHII", tag, typ, count, extra_base + len(extra))
            extra += packed
        else:
            body += struct.pack("<HHI", tag, typ, count) + packed.ljust(4, b"\0")
    body += struct.pack("<I", 0)
    body += extra
    assert len(body) == data_offset
    return bytes(body + data)


def old_style_jpeg_tiff(rgb: np.ndarray) -> bytes:
    """Compression 6 (old-style JPEG) with a JPEGInterchangeFormat stream, as old
    scanners wrote it."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, subsampling=0)
    jpeg = buf.getvalue()
    h, w = rgb.shape[:2]
    entries = [
        (258, 3, [8, 8, 8]),
        (259, 3, 6),
        (262, 3, 6),
        (273, 4, "DATA"),
        (277, 3, 3),
        (278, 4, h),
        (279, 4, len(jpeg)),
        (284, 3, 1),
        (513, 4, "DATA"),
        (514, 4, len(jpeg)),
        (530, 3, [1, 1]),
    ]
    return raw_tiff(w, h, entries, jpeg)


def bomb_tiff(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny file that claims 10 gigapixels (one 8-bit grey strip, deflate)."""
    import zlib

    data = zlib.compress(b"\0" * 1024)
    entries = [
        (258, 3, 8),
        (259, 3, 8),
        (262, 3, 1),
        (273, 4, "DATA"),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, len(data)),
    ]
    return raw_tiff(width, height, entries, data)


def linear_rgb_icc() -> bytes:
    """An ICC v2 RGB matrix/TRC profile: sRGB (D50-adapted) primaries, gamma 1.0.

    A pixel value v in a file tagged with it is linear light, so a viewer shows
    255 * srgb_encode(v / 255)."""

    def s15(x: float) -> bytes:
        return struct.pack(">i", round(x * 65536))

    def xyz(x, y, z):
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    desc_text = b"Linear sRGB test\0"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(desc_text)) + desc_text
            + b"\0" * 4 + b"\0" * 4 + b"\0" * 2 + b"\0" + b"\0" * 67)  # fmt: skip
    curve = b"curv\0\0\0\0" + struct.pack(">I", 1) + struct.pack(">H", 256) + b"\0\0"
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text\0\0\0\0" + b"public domain\0\0\0"),
    ]
    table = struct.pack(">I", len(tags))
    offset = 128 + 4 + 12 * len(tags)
    blobs = b""
    for sig, blob in tags:
        while len(blob) % 4:
            blob += b"\0"
        table += sig + struct.pack(">II", offset + len(blobs), len(blob))
        blobs += blob
    size = offset + len(blobs)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000)
              + b"mntr" + b"RGB " + b"XYZ " + b"\0" * 12 + b"acsp" + b"APPL"
              + struct.pack(">I", 0) + b"\0" * 4 + b"\0" * 4 + b"\0" * 8
              + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249)
              + b"\0" * 4 + b"\0" * 16 + b"\0" * 28)  # fmt: skip
    assert len(header) == 128, len(header)
    return header + table + blobs


def srgb_encode(v: np.ndarray) -> np.ndarray:
    x = np.asarray(v, np.float64) / 255.0
    y = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.round(y * 255.0)


# --- kinds nothing here writes: built from their definitions ------------------------


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """TIFF's default YCbCr (CCIR 601 coefficients, full range ReferenceBlackWhite)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = (b - y) / 1.772 + 128
    cr = (r - y) / 1.402 + 128
    return np.clip(np.round(np.dstack([y, cb, cr])), 0, 255).astype(np.uint8)


def ycbcr_tiff(rgb: np.ndarray, sub: tuple[int, int], planar: bool = False,
               tag: tuple[int, int] | None | str = "same") -> bytes:
    """Uncompressed YCbCr with chroma subsampling `sub` = (horizontal, vertical), chunky
    (TIFF 6.0 data units: sh*sv luma samples then Cb, Cr) or planar (three planes, the
    chroma ones subsampled). `tag` is the YCbCrSubsampling written (None: no tag, so
    TIFF's default 2x2), when a writer's tag contradicts its data."""
    ycc = rgb_to_ycbcr(rgb)
    h, w = ycc.shape[:2]
    sh, sv = sub
    luma = ycc[..., 0]
    chroma = ycc[..., 1:].reshape(h // sv, sv, w // sh, sh, 2).mean(axis=(1, 3)).round()
    chroma = chroma.astype(np.uint8)
    if planar:
        planes = [luma.tobytes(), chroma[..., 0].tobytes(), chroma[..., 1].tobytes()]
        offsets = [("DATA", 0), ("DATA", len(planes[0])), ("DATA", len(planes[0]) + len(planes[1]))]
        data = b"".join(planes)
        strips = [(273, 4, offsets), (279, 4, [len(p) for p in planes])]
    else:
        units = luma.reshape(h // sv, sv, w // sh, sh).transpose(0, 2, 1, 3).reshape(h // sv, w // sh, sv * sh)
        data = np.concatenate([units, chroma], axis=2).tobytes()
        strips = [(273, 4, "DATA"), (279, 4, len(data))]
    tag = sub if tag == "same" else tag
    subsampling = [(530, 3, list(tag))] if tag else []
    entries = [(258, 3, [8, 8, 8]), (259, 3, 1), (262, 3, 6), (277, 3, 3), (278, 4, h),
               (284, 3, 2 if planar else 1), *subsampling, *strips]  # fmt: skip
    return raw_tiff(w, h, entries, data)


def wide_ycbcr_tiff(rgb: np.ndarray, bits: int, sub: tuple[int, int] = (1, 1)) -> bytes:
    """Uncompressed chunky YCbCr with `bits`-bit samples (packed MSB first), full range at
    that depth and no ReferenceBlackWhite tag (libtiff's default: 0..2^n-1, chroma
    centred on 2^(n-1)). With `sub` other than 1x1 only the tag says so: for refusals."""
    r, g, b = (rgb[..., i].astype(np.float64) / 255.0 for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    top, half = (1 << bits) - 1, 1 << (bits - 1)
    ycc = np.dstack([y * top, (b - y) / 1.772 * (half - 1) + half, (r - y) / 1.402 * (half - 1) + half])
    ycc = np.clip(np.round(ycc), 0, top).astype(np.uint32)
    h, w = ycc.shape[:2]
    # 16-bit samples are words in the file's byte order; narrower ones a bit stream
    data = ycc.astype("<u2").tobytes() if bits == 16 else pack_bits(ycc.reshape(h, w * 3), bits)
    entries = [(258, 3, [bits] * 3), (259, 3, 1), (262, 3, 6), (273, 4, "DATA"), (277, 3, 3),
               (278, 4, h), (279, 4, len(data)), (530, 3, list(sub))]  # fmt: skip
    return raw_tiff(w, h, entries, data)


def _literal_runs(plane: bytes) -> bytes:
    """SGILOG's byte-plane coding with literal runs only (a count < 128, then the bytes)."""
    out = bytearray()
    for i in range(0, len(plane), 127):
        chunk = plane[i : i + 127]
        out += bytes([len(chunk)]) + chunk
    return bytes(out)


def _sgilog(words: np.ndarray, nbytes: int) -> bytes:
    """Rows of 16- or 32-bit LogL/LogLuv words, each row coded byte plane by byte plane
    from the most significant (libtiff tif_luv.c)."""
    out = bytearray()
    for row in words:
        for shift in range(8 * (nbytes - 1), -1, -8):
            out += _literal_runs(((row >> shift) & 0xFF).astype(np.uint8).tobytes())
    return bytes(out)


def log_l(y: np.ndarray) -> np.ndarray:
    """Luminance -> LogL16 (15-bit log2 code, 1/256 stop steps, +64 offset)."""
    return np.floor(256 * (np.log2(np.maximum(y, 2.0**-63)) + 64)).astype(np.uint32)


def logl_tiff(y: np.ndarray) -> bytes:
    """Photometric LogL (32844), SGILOG compression (34676): one luminance sample."""
    h, w = y.shape
    data = _sgilog(log_l(y), 2)
    entries = [(258, 3, 16), (259, 3, 34676), (262, 3, 32844), (273, 4, "DATA"), (277, 3, 1),
               (278, 4, h), (279, 4, len(data)), (339, 3, 2)]  # fmt: skip
    return raw_tiff(w, h, entries, data)


def srgb_to_xyz(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float64) / 255
    lin = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    return lin @ m.T


def logluv_tiff(rgb: np.ndarray) -> bytes:
    """Photometric LogLuv (32845), SGILOG compression: 16-bit log luminance and 8-bit
    u', v' chromaticity codes in one 32-bit word per pixel."""
    xyz = srgb_to_xyz(rgb)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    d = np.maximum(x + 15 * y + 3 * z, 1e-9)
    ue = np.clip(np.floor(410 * 4 * x / d), 0, 255).astype(np.uint32)
    ve = np.clip(np.floor(410 * 9 * y / d), 0, 255).astype(np.uint32)
    words = (log_l(y) << 16) | (ue << 8) | ve
    h, w = y.shape
    data = _sgilog(words, 4)
    entries = [(258, 3, [16, 16, 16]), (259, 3, 34676), (262, 3, 32845), (273, 4, "DATA"),
               (277, 3, 3), (278, 4, h), (279, 4, len(data)), (284, 3, 1),
               (339, 3, [2, 2, 2])]  # fmt: skip
    return raw_tiff(w, h, entries, data)


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Rows of integers packed MSB first, `bits` each, every row padded to a byte."""
    rows = []
    for row in values.astype(np.uint64):
        shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
        stream = ((row[:, None] >> shifts) & 1).astype(np.uint8).ravel()
        rows.append(np.packbits(stream).tobytes())
    return b"".join(rows)


def grey12_predictor_tiff(grey12: np.ndarray) -> bytes:
    """12-bit grey, Deflate with the horizontal predictor (differences modulo 4096)."""
    import zlib

    h, w = grey12.shape
    diff = grey12.astype(np.int64)
    diff[:, 1:] = (grey12[:, 1:].astype(np.int64) - grey12[:, :-1]) % 4096
    data = zlib.compress(pack_bits(diff, 12))
    entries = [(258, 3, 12), (259, 3, 8), (262, 3, 1), (273, 4, "DATA"), (277, 3, 1),
               (278, 4, h), (279, 4, len(data)), (317, 3, 2)]  # fmt: skip
    return raw_tiff(w, h, entries, data)


def no_photometric_tiff(pixels: np.ndarray) -> bytes:
    """8-bit samples, uncompressed, without a PhotometricInterpretation tag."""
    h, w = pixels.shape[:2]
    samples = pixels.shape[2] if pixels.ndim == 3 else 1
    data = pixels.tobytes()
    entries = [(258, 3, [8] * samples), (259, 3, 1), (273, 4, "DATA"), (277, 3, samples),
               (278, 4, h), (279, 4, len(data))]  # fmt: skip
    return raw_tiff(w, h, entries, data)
