"""Where each TIFF's JPEG is written: decided once, at discovery, never over a batch's file.

The rule, in order, for each TIFF in message order (so it is deterministic for a message):
1. the contract's: a final `.tif`/`.tiff` (any case) replaced by `.jpg`; a key without
   that suffix gains `.jpg` (the worker's own rule), so the output is never the input;
2. if that key is any input key of the batch or another TIFF's output (`scan.tif` and
   `scan.TIFF` in one folder, or `scan.tif` beside an uploaded `scan.jpg`): the whole key
   plus `.jpg` (`scan.tif.jpg`);
3. if that is taken too: `{key}.{n}.jpg` for the first free n = 2, 3, ...
The logical path gets the same transform, and must be free among the batch's logical
paths too, so the ingest service never receives two files at one path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

TIFF_SUFFIX = re.compile(r"\.tiff?$", re.IGNORECASE)
Transform = Callable[[str], str]


def jpeg_name(path: str) -> str:
    """Rule 1: `.tif`/`.tiff` at the end (any case) replaced by `.jpg`, else `.jpg` added."""
    return TIFF_SUFFIX.sub(".jpg", path) if TIFF_SUFFIX.search(path) else path + ".jpg"


def _transforms() -> Iterator[Transform]:
    yield jpeg_name
    yield lambda path: path + ".jpg"
    n = 2
    while True:
        yield lambda path, n=n: f"{path}.{n}.jpg"
        n += 1


@dataclass(frozen=True)
class PlannedOutput:
    r2_key: str
    logical_path: str


class OutputPlanner:
    """Hands out output keys for one batch: every file's key and logical path are taken
    from the start, and each output takes its own."""

    def __init__(self, files: Iterable[tuple[str, str]]) -> None:
        self._keys: set[str] = set()
        self._paths: set[str] = set()
        for key, logical_path in files:
            self._keys.add(key)
            if logical_path:
                self._paths.add(logical_path)

    def plan(self, key: str, logical_path: str) -> PlannedOutput:
        for transform in _transforms():
            out_key = transform(key)
            out_path = transform(logical_path) if logical_path else ""
            if out_key == key or out_key in self._keys or (out_path and out_path in self._paths):
                continue
            self._keys.add(out_key)
            if out_path:
                self._paths.add(out_path)
            return PlannedOutput(out_key, out_path)
        raise AssertionError("unreachable: the transforms never end")
