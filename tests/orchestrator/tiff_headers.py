"""Real TIFF files whose header claims any size, made without the pixels: the tests' way to
put a 300 MP scan in moto's S3 in a few kilobytes.

The image data is one strip of `data_bytes` zero bytes (a truncated image, but a valid
header: tifffile and libtiff read its tags), and the first IFD sits before the strip or
after it (as streaming writers place it), in classic TIFF or BigTIFF, either byte order.
"""

from __future__ import annotations

import struct

SHORT, LONG, LONG8 = 3, 4, 16


def tiff_header_file(width: int, height: int, samples: int = 3, bits: int = 8, *, order: str = "<",
                     big: bool = False, ifd_at_end: bool = False, data_bytes: int = 64,
                     photometric: int | None = None, extra_tags: int = 0) -> bytes:
    """The bytes of a TIFF (first IFD only) claiming `width` x `height` pixels."""
    if photometric is None:
        photometric = 2 if samples >= 3 else 1
    entry_size, inline = (20, 8) if big else (12, 4)
    count_size = 8 if big else 2
    head_size = 16 if big else 8
    long_kind = LONG8 if big else LONG
    entries = [
        (256, LONG, [width]), (257, LONG, [height]), (258, SHORT, [bits] * samples), (259, SHORT, [1]),
        (262, SHORT, [photometric]), (273, long_kind, [0]), (277, SHORT, [samples]),
        (278, LONG, [height]), (279, long_kind, [data_bytes]),
        *[(40000 + i, SHORT, [i]) for i in range(extra_tags)],  # private tags, sorted after
    ]
    ifd_size = count_size + len(entries) * entry_size + inline
    ifd_at = head_size + data_bytes if ifd_at_end else head_size
    values_at = ifd_at + ifd_size  # out-of-line values right after the IFD
    data_at = head_size if ifd_at_end else values_at + 2 * samples + 8
    out_of_line = b""
    body = struct.pack(order + ("Q" if big else "H"), len(entries))
    sizes = {SHORT: (2, "H"), LONG: (4, "I"), LONG8: (8, "Q")}
    for tag, kind, values in entries:
        if tag == 273:
            values = [data_at]
        size, code = sizes[kind]
        raw = struct.pack(f"{order}{len(values)}{code}", *values)
        if len(raw) > inline:
            offset = values_at + len(out_of_line)
            out_of_line += raw
            raw = struct.pack(order + ("Q" if big else "I"), offset)
        body += struct.pack(order + ("HHQ" if big else "HHI"), tag, kind, len(values)) + raw.ljust(inline, b"\0")
    body += b"\0" * inline  # no next IFD
    mark = b"II" if order == "<" else b"MM"
    head = mark + (struct.pack(order + "HHHQ", 43, 8, 0, ifd_at) if big else struct.pack(order + "HI", 42, ifd_at))
    if ifd_at_end:
        return head + b"\0" * data_bytes + body + out_of_line
    return (head + body + out_of_line).ljust(data_at, b"\0") + b"\0" * data_bytes
