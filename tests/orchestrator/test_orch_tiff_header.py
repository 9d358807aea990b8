"""The TIFF header parser (chalicelib/tiff_header.py), without a network: every layout
(classic and BigTIFF, both byte orders, the IFD before or after the image data, values
inline or out of line) checked against tifffile, files written by tifffile and Pillow
themselves, and every way a header can be unreadable."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import tifffile
from PIL import Image

from chalicelib.tiff_header import (
    MAX_ENTRIES,
    ImageHeader,
    TiffHeaderError,
    bytes_reader,
    read_header,
)

from .tiff_headers import tiff_header_file


def tifffile_says(data: bytes) -> tuple[int, int, int, int, int]:
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        return (page.imagewidth, page.imagelength, page.samplesperpixel, page.bitspersample,
                int(page.photometric))


def parsed(data: bytes) -> tuple[int, int, int, int, int | None]:
    h = read_header(bytes_reader(data))
    return h.width, h.height, h.samples_per_pixel, h.bits_per_sample, h.photometric


@pytest.mark.parametrize("order", ["<", ">"], ids=["II", "MM"])
@pytest.mark.parametrize("big", [False, True], ids=["classic", "bigtiff"])
@pytest.mark.parametrize("ifd_at_end", [False, True], ids=["ifd-first", "ifd-at-end"])
@pytest.mark.parametrize(("samples", "bits"), [(1, 8), (1, 16), (3, 8), (3, 16), (4, 8)])
def test_each_layout_reads_as_tifffile_reads_it(order, big, ifd_at_end, samples, bits):
    data = tiff_header_file(20000, 15000, samples, bits, order=order, big=big, ifd_at_end=ifd_at_end,
                            data_bytes=200_000 if ifd_at_end else 64)
    assert parsed(data) == tifffile_says(data)
    assert parsed(data)[:2] == (20000, 15000)


class CountingReader:
    """A range reader over bytes that remembers what was asked (as R2 would be asked)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.reads = data, []

    def __call__(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return self.data[offset:offset + length]


def test_an_ifd_at_the_end_is_found_through_its_offset():
    data = tiff_header_file(30000, 20000, 3, order=">", ifd_at_end=True, data_bytes=5_000_000)
    reader = CountingReader(data)
    assert read_header(reader).width == 30000
    assert reader.reads[0] == (0, 16)
    assert reader.reads[1][0] == 8 + 5_000_000  # straight to the IFD, nothing in between read


@pytest.mark.parametrize("kwargs", [
    {}, {"bigtiff": True}, {"byteorder": ">"}, {"bigtiff": True, "byteorder": ">"},
    {"tile": (16, 16)}, {"compression": "zlib"}, {"planarconfig": "separate"},
])  # fmt: skip
def test_files_tifffile_writes(kwargs):
    buf = io.BytesIO()
    shape = (3, 40, 56) if kwargs.get("planarconfig") == "separate" else (40, 56, 3)
    tifffile.imwrite(buf, np.zeros(shape, np.uint16), photometric="rgb", **kwargs)
    assert parsed(buf.getvalue()) == (56, 40, 3, 16, 2)


@pytest.mark.parametrize(("mode", "encoded_as"), [
    ("L", "L"), ("RGB", "RGB"), ("P", "RGB"), ("1", "L"), ("CMYK", "RGB"), ("RGBA", "RGB"), ("I;16", "L"),
])  # fmt: skip
def test_files_pillow_writes_and_the_mode_the_worker_encodes(mode, encoded_as):
    buf = io.BytesIO()
    Image.new(mode, (33, 21)).save(buf, "TIFF", compression="tiff_deflate" if mode != "1" else "group4")
    data = buf.getvalue()
    assert parsed(data) == tifffile_says(data)
    assert parsed(data)[:2] == (33, 21)
    assert read_header(bytes_reader(data)).mode == encoded_as


def test_no_photometric_one_sample_is_grey_three_are_colour():
    assert ImageHeader(10, 10, 1, 8, None).mode == "L"
    assert ImageHeader(10, 10, 3, 8, None).mode == "RGB"
    assert ImageHeader(4, 5, 1, 8, None).pixels == 20


def _classic(entries: list[tuple[int, int, int, bytes]], order: str = "<", count: int | None = None) -> bytes:
    """A classic TIFF with the raw entries given (tag, type, count, 4 value bytes)."""
    body = struct.pack(order + "H", len(entries) if count is None else count)
    for tag, kind, n, raw in entries:
        body += struct.pack(order + "HHI", tag, kind, n) + raw.ljust(4, b"\0")
    return (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, 8) + body + b"\0\0\0\0"


def _long(value: int) -> bytes:
    return struct.pack("<I", value)


SIZE = [(256, 4, 1, _long(100)), (257, 4, 1, _long(50))]


@pytest.mark.parametrize(("data", "says"), [
    (b"", "fewer than 8 bytes"),
    (b"%PDF-1.7\n" + b"\0" * 100, "byte order"),
    (b"II\x2b\x00\x04\x00\x00\x00" + b"\0" * 8, "BigTIFF"),
    (b"II\x2a\x00\x00\x00", "fewer than 8 bytes"),
    (b"II\x2c\x00\x08\x00\x00\x00" + b"\0" * 20, "magic number 44"),
    (b"II\x2a\x00\x00\x00\x00\x00", "first IFD offset 0"),
    (b"II\x2a\x00" + _long(10**9), "past the end"),
    (_classic([], count=0), "0 entries"),
    (_classic([], count=MAX_ENTRIES + 1), f"{MAX_ENTRIES + 1} entries"),
    (_classic(SIZE, count=40), "past the end"),
    (_classic(SIZE[:1]), "no ImageWidth or ImageLength"),
    (_classic([(256, 4, 1, _long(0)), SIZE[1]]), "0 x 50"),
    (_classic([(256, 2, 1, b"x"), SIZE[1]]), "field type 2"),
    (_classic([SIZE[0], (257, 4, 0, b"")]), "value count 0"),
    (_classic([*SIZE, (258, 3, 1000, b"")]), "value count 1000"),
    (_classic([*SIZE, (258, 3, 3, _long(10**8))]), "past the end"),
    (_classic([*SIZE, (277, 3, 1, b"\0\0")]), "0 samples"),
])  # fmt: skip
def test_unreadable_headers_say_why(data, says):
    with pytest.raises(TiffHeaderError, match=says):
        read_header(bytes_reader(data))


def test_a_minimal_header_defaults_samples_and_bits():
    assert parsed(_classic(SIZE)) == (100, 50, 1, 1, None)


def test_the_first_of_a_repeated_tag_counts():
    assert parsed(_classic([*SIZE, (256, 4, 1, _long(7))]))[0] == 100


def test_many_private_tags_are_skipped():
    data = tiff_header_file(1000, 800, 3, extra_tags=300, order=">", big=True)
    assert parsed(data) == tifffile_says(data)
