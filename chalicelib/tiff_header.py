"""What a TIFF's first image is, from its header alone: width, height, samples, bits.

Pure parsing over a range reader (`read(offset, length) -> bytes`), so the orchestrator can
size a machine for an image with a couple of ranged GETs instead of downloading it, and the
tests can check every layout without a network. Classic TIFF and BigTIFF, both byte orders;
the first IFD may sit anywhere (writers that stream put it at the end), and values that do
not fit in an entry (BitsPerSample of RGB) are read where they point. Never decodes pixels,
never trusts a count it has not bounded: a malformed header is a TiffHeaderError, nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

RangeReader = Callable[[int, int], bytes]  # (offset, length) -> at most `length` bytes there

WIDTH, HEIGHT, BITS, PHOTOMETRIC, SAMPLES = 256, 257, 258, 262, 277
WANTED = (WIDTH, HEIGHT, BITS, PHOTOMETRIC, SAMPLES)
MAX_ENTRIES = 4096  # real IFDs hold a few dozen; more is a damaged or hostile file
MAX_SAMPLES = 64
# TIFF field types this parser reads as integers: size and struct code.
TYPES = {1: (1, "B"), 3: (2, "H"), 4: (4, "I"), 16: (8, "Q")}  # BYTE, SHORT, LONG, LONG8


class TiffHeaderError(ValueError):
    """The bytes are not a readable TIFF header (says why)."""


@dataclass(frozen=True)
class ImageHeader:
    """The first image of a TIFF, as far as sizing a machine for it needs."""

    width: int
    height: int
    samples_per_pixel: int
    bits_per_sample: int  # the largest, when the samples differ
    photometric: int | None  # None when the tag is missing

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def mode(self) -> str:
        """The mode the worker encodes it in: "L" for one grey sample, else "RGB"
        (palette, colour, CMYK and alpha all become RGB)."""
        grey = self.samples_per_pixel == 1 and self.photometric in (None, 0, 1)
        return "L" if grey else "RGB"


@dataclass(frozen=True)
class _Layout:
    order: str  # "<" or ">"
    big: bool

    @property
    def count_format(self) -> str:  # entry count of an IFD
        return "Q" if self.big else "H"

    @property
    def entry_size(self) -> int:
        return 20 if self.big else 12

    @property
    def offset_format(self) -> str:
        return "Q" if self.big else "I"

    @property
    def inline_bytes(self) -> int:  # value bytes an entry holds itself
        return 8 if self.big else 4


def _exact(read: RangeReader, offset: int, length: int, what: str) -> bytes:
    data = read(offset, length)
    if len(data) < length:
        raise TiffHeaderError(f"truncated TIFF: {what} at byte {offset} runs past the end")
    return data[:length]


def _layout(head: bytes) -> tuple[_Layout, int]:
    """Byte order, classic or BigTIFF, and the first IFD's offset, from the first 16 bytes."""
    if len(head) < 8:
        raise TiffHeaderError("not a TIFF: fewer than 8 bytes")
    orders = {b"II": "<", b"MM": ">"}
    if head[:2] not in orders:
        raise TiffHeaderError("not a TIFF: no II/MM byte order mark")
    order = orders[head[:2]]
    magic = struct.unpack(order + "H", head[2:4])[0]
    if magic == 42:
        return _Layout(order, False), struct.unpack(order + "I", head[4:8])[0]
    if magic == 43:
        if len(head) < 16:
            raise TiffHeaderError("truncated BigTIFF header")
        size, zero = struct.unpack(order + "HH", head[4:8])
        if size != 8 or zero != 0:
            raise TiffHeaderError("not a valid BigTIFF: offset size is not 8")
        return _Layout(order, True), struct.unpack(order + "Q", head[8:16])[0]
    raise TiffHeaderError(f"not a TIFF: magic number {magic}")


def _values(read: RangeReader, layout: _Layout, entry: bytes) -> list[int]:
    """An entry's integer values, inline or at the offset it points to."""
    tag, kind = struct.unpack(layout.order + "HH", entry[:4])
    count = struct.unpack(layout.order + layout.offset_format, entry[4:4 + layout.inline_bytes])[0]
    if kind not in TYPES:
        raise TiffHeaderError(f"unexpected field type {kind} for tag {tag}")
    size, code = TYPES[kind]
    if count < 1 or count > MAX_SAMPLES:
        raise TiffHeaderError(f"unexpected value count {count} for tag {tag}")
    value_at = 4 + layout.inline_bytes
    raw = entry[value_at:value_at + layout.inline_bytes]
    if size * count > layout.inline_bytes:
        offset = struct.unpack(layout.order + layout.offset_format, raw)[0]
        raw = _exact(read, offset, size * count, "a tag's values")
    return list(struct.unpack(f"{layout.order}{count}{code}", raw[:size * count]))


def read_header(read: RangeReader) -> ImageHeader:
    """The first image's header, through `read`. Raises TiffHeaderError."""
    layout, ifd = _layout(read(0, 16))
    if ifd < 8:
        raise TiffHeaderError(f"invalid TIFF: first IFD offset {ifd}")
    count_size = 8 if layout.big else 2
    count = struct.unpack(layout.order + layout.count_format, _exact(read, ifd, count_size, "the IFD"))[0]
    if count == 0 or count > MAX_ENTRIES:
        raise TiffHeaderError(f"invalid TIFF: first IFD has {count} entries")
    entries = _exact(read, ifd + count_size, count * layout.entry_size, "the IFD's entries")
    found: dict[int, list[int]] = {}
    for i in range(count):
        entry = entries[i * layout.entry_size:(i + 1) * layout.entry_size]
        tag = struct.unpack(layout.order + "H", entry[:2])[0]
        if tag in WANTED and tag not in found:
            found[tag] = _values(read, layout, entry)
    return _image(found)


def _image(found: dict[int, list[int]]) -> ImageHeader:
    if WIDTH not in found or HEIGHT not in found:
        raise TiffHeaderError("invalid TIFF: no ImageWidth or ImageLength")
    width, height = found[WIDTH][0], found[HEIGHT][0]
    if width < 1 or height < 1:
        raise TiffHeaderError(f"invalid TIFF: {width} x {height} pixels")
    samples = found.get(SAMPLES, [1])[0]
    if not 1 <= samples <= MAX_SAMPLES:
        raise TiffHeaderError(f"invalid TIFF: {samples} samples per pixel")
    bits = max(found.get(BITS, [1]))
    photometric = found[PHOTOMETRIC][0] if PHOTOMETRIC in found else None
    return ImageHeader(width, height, samples, bits, photometric)


def bytes_reader(data: bytes) -> RangeReader:
    """A range reader over bytes in memory (tests, and a first chunk already fetched)."""
    return lambda offset, length: data[offset:offset + length]
