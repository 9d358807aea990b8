"""Pure mapping from a TIFF's R2 key to its JPEG's key and file name (contracts §3)."""

from __future__ import annotations

import posixpath
import re

_TIFF_SUFFIX = re.compile(r"\.tiff?$", re.IGNORECASE)


def jpeg_key(input_key: str) -> str:
    """`a/b/scan.TIFF` -> `a/b/scan.jpg`; a key without a TIFF suffix gains `.jpg`."""
    if _TIFF_SUFFIX.search(input_key):
        return _TIFF_SUFFIX.sub(".jpg", input_key)
    return input_key + ".jpg"


def file_name(key: str) -> str:
    return posixpath.basename(key)
