"""Sample TIFFs of the kinds archives hold, for the demo and the end-to-end tests.

Kinds: ordinary RGB and greyscale, LZW-compressed RGB, 16-bit greyscale, 48-bit RGB,
CMYK, bilevel (CCITT G4), palette, RGBA, tiled, multi-page, and one broken file whose
first IFD points past the end. Each sample comes with the size its JPEG must have (the
first page's) and whether its conversion is expected to fail. Pillow writes most of
them; the tiled and 48-bit ones are written by a small TIFF writer here, so nothing
beyond Pillow is needed. Deterministic for a given seed. Writes only under the folder
it is given.
"""

from __future__ import annotations

import random
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw

KINDS = (
    "rgb",
    "rgb_lzw",
    "grey",
    "grey16",
    "rgb48",
    "cmyk",
    "bilevel",
    "palette",
    "rgba",
    "tiled",
    "multipage",
)
BROKEN = "broken"


@dataclass(frozen=True)
class Sample:
    relpath: str  # relative to the batch folder, with "/" separators
    kind: str
    width: int
    height: int
    expect_failure: bool = False

    @property
    def is_tiff(self) -> bool:
        return self.relpath.lower().endswith((".tif", ".tiff"))

    def to_dict(self) -> dict:
        return asdict(self)


def _picture(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """An RGB picture with gradients and shapes, so the JPEG has something to encode."""
    w, h = size
    r = Image.linear_gradient("L").resize(size)
    g = Image.linear_gradient("L").rotate(90).resize(size)
    b = Image.new("L", size, rng.randrange(256))
    img = Image.merge("RGB", (r, g, b))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = min(w - 1, x0 + rng.randrange(8, 80)), min(h - 1, y0 + rng.randrange(8, 80))
        draw.rectangle([x0, y0, x1, y1], fill=tuple(rng.randrange(256) for _ in range(3)))
    draw.text((4, 4), "arke", fill=(255, 255, 255))
    return img


def write_raw_tiff(
    path: Path,
    width: int,
    height: int,
    pixels: bytes,
    *,
    samples: int,
    bits: int,
    tile: int | None = None,
) -> None:
    """A baseline uncompressed little-endian TIFF, one strip or square tiles.

    `pixels` is row-major, interleaved, `bits` per sample (16-bit little-endian).
    """
    bps = bits // 8
    px = samples * bps
    if len(pixels) != width * height * px:
        raise ValueError("pixel buffer does not match the size")
    chunks: list[bytes] = []
    if tile:
        for ty in range(0, height, tile):
            for tx in range(0, width, tile):
                rows = []
                for y in range(ty, ty + tile):
                    if y < height:
                        start = (y * width + tx) * px
                        row = pixels[start : start + min(tile, width - tx) * px]
                    else:
                        row = b""
                    rows.append(row.ljust(tile * px, b"\0"))
                chunks.append(b"".join(rows))
    else:
        chunks.append(pixels)

    data_offset = 8
    offsets, counts, blob = [], [], bytearray()
    for chunk in chunks:
        offsets.append(data_offset + len(blob))
        counts.append(len(chunk))
        blob += chunk
        if len(blob) % 2:
            blob += b"\0"
    extra = bytearray()  # values that do not fit in an IFD entry
    extra_base = data_offset + len(blob)

    SHORT, LONG = 3, 4
    entries: list[tuple[int, int, int, bytes]] = []

    def add(tag: int, typ: int, values: list[int]) -> None:
        fmt = "H" if typ == SHORT else "I"
        raw = struct.pack(f"<{len(values)}{fmt}", *values)
        entries.append((tag, typ, len(values), raw))

    add(256, LONG, [width])
    add(257, LONG, [height])
    add(258, SHORT, [bits] * samples)
    add(259, SHORT, [1])
    add(262, SHORT, [2 if samples >= 3 else 1])
    if tile:
        add(277, SHORT, [samples])
        add(284, SHORT, [1])
        add(322, SHORT, [tile])
        add(323, SHORT, [tile])
        add(324, LONG, offsets)
        add(325, LONG, counts)
    else:
        add(273, LONG, offsets)
        add(277, SHORT, [samples])
        add(278, LONG, [height])
        add(279, LONG, counts)
        add(284, SHORT, [1])
    entries.sort()

    # Place out-of-line values first, then the IFD.
    placed = []
    for tag, typ, count, raw in entries:
        if len(raw) <= 4:
            placed.append(struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\0"))
        else:
            placed.append(struct.pack("<HHII", tag, typ, count, extra_base + len(extra)))
            extra += raw
            if len(extra) % 2:
                extra += b"\0"
    ifd_offset = extra_base + len(extra)
    ifd = struct.pack("<H", len(placed)) + b"".join(placed) + struct.pack("<I", 0)
    header = b"II" + struct.pack("<HI", 42, ifd_offset)
    path.write_bytes(header + bytes(blob) + bytes(extra) + ifd)


def _widen(raw: bytes) -> bytes:
    """8-bit samples to 16-bit little-endian ones (v -> v * 257, i.e. the bytes v, v)."""
    out = bytearray(len(raw) * 2)
    out[0::2] = raw
    out[1::2] = raw
    return bytes(out)


def write_sample(path: Path, kind: str, size: tuple[int, int], rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == BROKEN:
        # A valid header whose first IFD lies past the end of the file: unreadable.
        junk = bytes(rng.randrange(256) for _ in range(64))
        path.write_bytes(b"II*\x00" + struct.pack("<I", 10_000_000) + junk)
        return
    w, h = size
    picture = _picture(size, rng)
    if kind == "rgb":
        picture.save(path, format="TIFF")
    elif kind == "rgb_lzw":
        picture.save(path, format="TIFF", compression="tiff_lzw")
    elif kind == "grey":
        picture.convert("L").save(path, format="TIFF", compression="tiff_deflate")
    elif kind == "grey16":
        data = _widen(picture.convert("L").tobytes())
        Image.frombytes("I;16", size, data).save(path, format="TIFF")
    elif kind == "rgb48":
        data = _widen(picture.tobytes())
        write_raw_tiff(path, w, h, data, samples=3, bits=16)
    elif kind == "cmyk":
        picture.convert("CMYK").save(path, format="TIFF")
    elif kind == "bilevel":
        picture.convert("L").point(lambda v: 255 if v > 110 else 0).convert("1").save(
            path, format="TIFF", compression="group4"
        )
    elif kind == "palette":
        picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path, format="TIFF")
    elif kind == "rgba":
        rgba = picture.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(size))
        rgba.save(path, format="TIFF")
    elif kind == "tiled":
        write_raw_tiff(path, w, h, picture.tobytes(), samples=3, bits=8, tile=32)
    elif kind == "multipage":
        second = _picture((max(16, w // 2), max(16, h // 2)), rng).convert("L")
        third = _picture((w + 10, h + 10), rng)
        picture.save(path, format="TIFF", save_all=True, append_images=[second, third])
    else:
        raise ValueError(f"unknown sample kind {kind!r}")


def _name(index: int, kind: str, rng: random.Random) -> str:
    ext = rng.choice([".tif", ".tiff", ".TIF", ".tif"])
    folder = ("scans", "scans/volume-2", "loose")[index % 3]
    return f"{folder}/page-{index:04d}-{kind}{ext}"


def generate_batch(
    folder: str | Path,
    count: int = 24,
    *,
    seed: int = 7,
    broken: int = 1,
    extras: bool = True,
    min_side: int = 48,
    max_side: int = 320,
) -> list[Sample]:
    """`count` TIFFs cycling through every kind, `broken` broken ones among them, and
    (with `extras`) two files that are not TIFFs. Returns what was written."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    samples: list[Sample] = []
    good = max(0, count - broken)
    for i in range(good):
        kind = KINDS[i % len(KINDS)]
        size = (rng.randint(min_side, max_side), rng.randint(min_side, max_side))
        rel = _name(i, kind, rng)
        write_sample(root / rel, kind, size, rng)
        samples.append(Sample(rel, kind, size[0], size[1]))
    for j in range(broken):
        rel = f"loose/corrupt-{j:02d}.tif"
        write_sample(root / rel, BROKEN, (0, 0), rng)
        samples.append(Sample(rel, BROKEN, 0, 0, expect_failure=True))
    if extras:
        notes = root / "notes.txt"
        notes.write_text("Sample batch for the Arke preprocessing orchestrator.\n")
        samples.append(Sample("notes.txt", "text", 0, 0))
        cover = root / "scans" / "cover.png"
        cover.parent.mkdir(parents=True, exist_ok=True)
        _picture((64, 48), rng).save(cover, format="PNG")
        samples.append(Sample("scans/cover.png", "png", 64, 48))
    return samples


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m arke_local.samples")
    parser.add_argument("folder")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--broken", type=int, default=1)
    args = parser.parse_args(argv)
    samples = generate_batch(args.folder, args.count, seed=args.seed, broken=args.broken)
    print(json.dumps([s.to_dict() for s in samples], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
