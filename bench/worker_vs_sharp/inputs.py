"""The benchmark's own inputs, generated deterministically and cached in
bench/.cache/worker_vs_sharp/inputs: scan-like RGB with grain, its 16-bit and greyscale
versions, a 300 dpi bilevel G4 page, and a 100 MP RGB scan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Input:
    name: str
    description: str
    path: Path
    megapixels: float


def _scan_rows(y0: int, y1: int, h: int, w: int, rng) -> np.ndarray:
    """Rows y0..y1 of a scan-like page: smooth colour fields, dark 'text' bars, grain."""
    y = (np.arange(y0, y1, dtype=np.float32) / h)[:, None]
    x = (np.arange(w, dtype=np.float32) / w)[None, :]
    r = 170 + 60 * np.sin(6 * x + 2 * y)
    g = 150 + 70 * np.cos(5 * y - 3 * x)
    b = 120 + 50 * np.sin(9 * x * y + 1)
    img = np.stack([np.broadcast_to(c, (y1 - y0, w)) for c in (r, g, b)], axis=-1)
    # text lines: bars of 12 rows every 40 rows, broken into words by x
    rows = (np.arange(y0, y1) % 40) < 12
    words = (np.sin(x * 173.0) + np.sin(x * 61.0 + 1.3)) > 0.2
    mask = rows[:, None] & words
    img = np.where(mask[..., None], img * 0.25, img)
    img = img + rng.normal(0, 2.0, (y1 - y0, w, 1)).astype(np.float32)  # luminance grain
    img = img + rng.normal(0, 1.0, (y1 - y0, w, 3)).astype(np.float32)  # colour grain
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def scan_rgb(h: int, w: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((h, w, 3), np.uint8)
    step = 512
    for y in range(0, h, step):
        out[y : y + step] = _scan_rows(y, min(h, y + step), h, w, rng)
    return out


def g4_page(h: int = 3300, w: int = 2550) -> np.ndarray:
    """A US-letter page at 300 dpi: black text-like marks on white."""
    rng = np.random.default_rng(7)
    page = np.ones((h, w), bool)
    for top in range(300, h - 300, 60):
        left = 300
        while left < w - 400:
            length = int(rng.integers(40, 260))
            glyphs = rng.random((30, length)) < 0.35
            page[top : top + 30, left : left + length] &= ~glyphs
            left += length + 25
    return page


def make_inputs(folder: Path, include: set[str] | None = None) -> list[Input]:
    import tifffile
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    made: list[Input] = []

    def want(name: str) -> bool:
        return include is None or name in include

    def cached(name: str) -> Path:
        return folder / f"{name}.tif"

    rgb24 = None
    if want("rgb8-24mp") or want("rgb16-24mp") or want("grey8-24mp"):
        names = ("rgb8-24mp", "rgb16-24mp", "grey8-24mp")
        if not all(cached(n).exists() for n in names if want(n)):
            rgb24 = scan_rgb(4000, 6000)
    if want("rgb8-24mp"):
        path = cached("rgb8-24mp")
        if not path.exists():
            tifffile.imwrite(path, rgb24, photometric="rgb", rowsperstrip=64)
        made.append(Input("rgb8-24mp", "24 MP RGB 8-bit scan with grain", path, 24.0))
    if want("rgb16-24mp"):
        path = cached("rgb16-24mp")
        if not path.exists():
            low = np.random.default_rng(2).integers(0, 257, rgb24.shape, dtype=np.uint16)
            data = rgb24.astype(np.uint16) * 257 + low // 2
            tifffile.imwrite(path, data, photometric="rgb", rowsperstrip=32)
            del data, low
        made.append(Input("rgb16-24mp", "24 MP RGB 16-bit", path, 24.0))
    if want("grey8-24mp"):
        path = cached("grey8-24mp")
        if not path.exists():
            grey = (rgb24 @ np.array([0.299, 0.587, 0.114], np.float32) + 0.5).astype(np.uint8)
            tifffile.imwrite(path, grey, photometric="minisblack", rowsperstrip=128)
        made.append(Input("grey8-24mp", "24 MP greyscale 8-bit", path, 24.0))
    del rgb24
    if want("g4-page"):
        path = cached("g4-page")
        if not path.exists():
            image = Image.fromarray(g4_page().astype(np.uint8) * 255).convert("1")
            image.save(path, "TIFF", compression="group4", dpi=(300, 300))
        made.append(Input("g4-page", "300 dpi bilevel letter page, CCITT G4", path, 8.4))
    for name, (h, w), label in (
        ("rgb8-100mp", (8200, 12200), "100 MP RGB 8-bit scan"),
        ("rgb8-250mp", (12900, 19400), "250 MP RGB 8-bit scan (stretch)"),
    ):
        if not want(name):
            continue
        path = cached(name)
        if not path.exists():
            _write_big_scan(path, h, w)
        made.append(Input(name, label, path, round(h * w / 1e6, 1)))
    return made


def _write_big_scan(path: Path, h: int, w: int) -> None:
    """Written strip by strip so generating it needs little memory."""
    import tifffile

    rng = np.random.default_rng(3)
    rows = 256

    def strips():
        for y in range(0, h, rows):
            yield _scan_rows(y, min(h, y + rows), h, w, rng)

    tifffile.imwrite(path, strips(), shape=(h, w, 3), dtype=np.uint8, photometric="rgb",
                     rowsperstrip=rows)  # fmt: skip
