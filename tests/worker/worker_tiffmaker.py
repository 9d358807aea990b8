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


def raw_tiff(
    width: int, height: int, entries: list[tuple[int, int, object]], data: bytes = b""
) -> bytes:
    """A little-endian classic TIFF with one IFD. `entries`: (tag, type, value) where
    type is 3 (SHORT) or 4 (LONG) and value an int or a list; the pixel data follows the
    IFD, and the placeholder value "DATA" is replaced by its offset."""
    entries = sorted([(256, 4, width), (257, 4, height), *entries])
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    extra = bytearray()
    extra_base = ifd_offset + ifd_size
    # first pass: lay out out-of-line values, leaving the data after them
    out_of_line = []
    for _tag, typ, value in entries:
        values = value if isinstance(value, list) else [value]
        size = (2 if typ == 3 else 4) * len(values)
        out_of_line.append(size > 4)
        if size > 4:
            extra += b"\0" * size
    data_offset = extra_base + len(extra)
    body = bytearray(struct.pack("<2sHI", b"II", 42, ifd_offset))
    body += struct.pack("<H", len(entries))
    extra = bytearray()
    for (tag, typ, value), far in zip(entries, out_of_line, strict=True):
        values = value if isinstance(value, list) else [value]
        values = [data_offset if v == "DATA" else v for v in values]
        fmt = "<" + ("H" if typ == 3 else "I") * len(values)
        packed = struct.pack(fmt, *values)
        if far:
            body += struct.pack("<HHII", tag, typ, len(values), extra_base + len(extra))
            extra += packed
        else:
            body += struct.pack("<HHI", tag, typ, len(values)) + packed.ljust(4, b"\0")
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
