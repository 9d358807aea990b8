"""One conversion, TIFF file -> JPEG file, with the limits applied: render the first page
(worker.render), encode it (worker.encode), in a forked child bounded in time
(worker.isolation). Knows nothing of R2 or callbacks."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from worker.isolation import run_isolated
from worker.settings import Limits


@dataclass
class ConversionReport:
    width: int
    height: int
    mode: str
    pages: int
    source: str
    decoder: str
    encoder: str
    output_bytes: int
    render_ms: int
    encode_ms: int
    notes: list[str] = field(default_factory=list)
    budget_mb: int = 0  # the memory budget the encoder's path was chosen for

    def summary(self) -> str:
        extra = "; ".join(self.notes)
        return (
            f"{self.width}x{self.height} {self.mode} from {self.source} "
            f"(page 1 of {self.pages}, decoder {self.decoder}, encoder {self.encoder}, "
            f"memory budget {self.budget_mb} MB), "
            f"{self.output_bytes} bytes, render {self.render_ms} ms, encode {self.encode_ms} ms"
            + (f"; {extra}" if extra else "")
        )


def convert_in_process(
    in_path: str, out_path: str, limits: Limits, max_memory_mb: int | None = None
) -> ConversionReport:
    """`max_memory_mb` (pool mode: the largest machine memory of the pool, when larger
    than this machine's): an image whose full-quality encoding needs a larger machine
    raises `NeedsMemoryError` from its header, before anything is decoded."""
    from worker.encode import check_machine_fits, encode_jpeg, memory_budget
    from worker.render import render_first_page, sniff
    from worker.stripwise import convert_stripwise, plan

    started = time.monotonic()
    sniff(in_path)
    if max_memory_mb:
        shape = encoded_shape(in_path)
        if shape is not None:  # unreadable: the decoders say what is wrong with it
            check_machine_fits(*shape, max_memory_mb)
    budget = memory_budget()
    big = plan(in_path, budget) if _may_be_large(in_path, budget) else None
    if big is not None:  # a plain scan too large to decode whole: strip by strip
        encoder = convert_stripwise(in_path, out_path, big, limits.max_pixels, limits.quality)
        done = time.monotonic()
        return ConversionReport(
            width=big.width,
            height=big.height,
            mode=big.mode,
            pages=big.pages,
            source=big.source,
            decoder="tifffile (strip by strip)",
            encoder=encoder,
            output_bytes=os.path.getsize(out_path),
            render_ms=0,
            encode_ms=round((done - started) * 1000),
            budget_mb=budget >> 20,
        )
    rendering = render_first_page(in_path, limits.max_pixels)
    image = rendering.image
    rendering.image = None
    width, height, mode = image.width, image.height, image.mode
    rendered = time.monotonic()
    encoder = encode_jpeg(image, out_path, limits.quality)
    del image
    done = time.monotonic()
    return ConversionReport(
        width=width,
        height=height,
        mode=mode,
        pages=rendering.pages,
        source=rendering.source,
        decoder=rendering.decoder,
        encoder=encoder,
        output_bytes=os.path.getsize(out_path),
        render_ms=round((rendered - started) * 1000),
        encode_ms=round((done - rendered) * 1000),
        notes=rendering.notes,
        budget_mb=budget >> 20,
    )


def encoded_shape(path: str) -> tuple[int, int, str] | None:
    """(width, height, mode the encoder will get: "L" or "RGB") of the first page, read
    from its header (Pillow, else tifffile) without decoding; None when neither reads it."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as probe:
            mode = probe.mode
            grey = mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;16")
            return probe.width, probe.height, "L" if grey else "RGB"
    except Exception:
        pass
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            samples = int(page.samplesperpixel) - len(page.extrasamples or ())
            photometric = int(page.photometric) if 262 in page.tags else (2 if samples >= 3 else 1)
            grey = photometric in (0, 1) and samples == 1
            return int(page.imagewidth), int(page.imagelength), "L" if grey else "RGB"
    except Exception:
        return None


def _may_be_large(path: str, budget: int) -> bool:
    """Cheap header look (Pillow) so small files never pay for importing tifffile."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as probe:
            pixels = probe.width * probe.height
    except Exception:
        return True  # Pillow cannot tell: let the strip-wise planner look
    return pixels * 4 + 64 * 1024 * 1024 > budget


def convert_file(
    in_path: str,
    out_path: str,
    limits: Limits,
    cancel: threading.Event | None = None,
    max_memory_mb: int | None = None,
) -> ConversionReport:
    """Convert with the wall-clock limit; raises a ConversionError subclass on failure,
    `NeedsMemoryError` when a larger machine of the pool should (`max_memory_mb`,
    `convert_in_process`), `Cancelled` when `cancel` is set meanwhile (the child is
    killed)."""
    args = (str(in_path), str(out_path), limits, max_memory_mb)
    return run_isolated(convert_in_process, args, limits.timeout_s, cancel)
