"""Strip-wise conversion of scans too large to decode whole.

Pillow decodes a page in one piece and holds RGB at 4 bytes a pixel, so a 250 MP scan
would need 1 GB before encoding starts. For the plain kind of scan (8-bit grey or RGB,
chunky, no alpha, no orientation, no ICC profile other than sRGB) tifffile decodes it
one strip or one row of tiles at a time, straight into the raw strip TIFF that the
encoder reads (worker.encode.encode_raw_tiff): memory stays at a few strips. Used only
when the Pillow path would break the memory budget; everything else goes through
worker.render.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from worker.exceptions import ConversionError, CorruptTiffError, ImageTooLargeError

PILLOW_BYTES_PER_PIXEL = {"RGB": 4, "L": 1}
PROCESS_BASELINE = 64 * 1024 * 1024


@dataclass
class Plan:
    width: int
    height: int
    mode: str
    pages: int
    dpi: tuple[float, float] | None
    source: str


def plan(path: str | os.PathLike, budget: int) -> Plan | None:
    """A Plan when the file is a plain scan too large for the Pillow path, else None."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            pages = len(tif.pages)
            mode = {(1, 1): "L", (2, 3): "RGB"}.get((int(page.photometric), page.samplesperpixel))
            if mode is None or page.bitspersample != 8 or page.dtype is None:
                return None
            if page.dtype.kind != "u" or page.planarconfig != 1 or page.extrasamples:
                return None
            if int(page.tags.valueof(274, 1) or 1) != 1:
                return None
            icc = page.tags.valueof(34675)
            if icc and b"sRGB" not in bytes(icc[:200]):
                return None
            pixels = page.imagewidth * page.imagelength
            if pixels * PILLOW_BYTES_PER_PIXEL[mode] + PROCESS_BASELINE <= budget:
                return None
            from worker.render import _tiff_dpi

            source = (
                f"{mode} 8-bit {str(getattr(page.compression, 'name', page.compression)).lower()}"
            )
            return Plan(page.imagewidth, page.imagelength, mode, pages, _tiff_dpi(page), source)
    except Exception:
        return None  # anything unusual: the general path decides and reports


def write_raw_strips(path: str | os.PathLike, plan: Plan, raw_path: Path) -> None:
    """Decode the first page segment by segment into an uncompressed strip TIFF."""
    import numpy as np
    import tifffile

    samples = 3 if plan.mode == "RGB" else 1
    width, height = plan.width, plan.height

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        band_height = page.tilelength if page.is_tiled else page.rowsperstrip
        band_height = max(1, min(band_height or height, height))

        def bands():
            band = np.zeros((band_height, width, samples), np.uint8)
            current, filled = 0, 0
            for segment, index, _shape in page.segments(
                maxworkers=1, sort=True, buffersize=8 << 20
            ):
                if segment is None:
                    raise CorruptTiffError("truncated or corrupt TIFF: a strip could not be read")
                y, x = index[2], index[3]
                top = y // band_height
                while top > current:  # the band is complete: emit it
                    rows = min(band_height, height - current * band_height)
                    yield band[:rows]
                    band[:] = 0
                    current += 1
                    filled = 0
                data = segment.reshape(segment.shape[-3], segment.shape[-2], -1)
                rows = min(data.shape[0], height - y)
                cols = min(data.shape[1], width - x)
                band[:rows, x : x + cols] = data[:rows, :cols, :samples]
                filled += 1
            while current * band_height < height:
                rows = min(band_height, height - current * band_height)
                yield band[:rows]
                band[:] = 0
                current += 1

        options = {"resolution": plan.dpi, "resolutionunit": "INCH"} if plan.dpi else {}
        tifffile.imwrite(
            raw_path,
            bands(),
            shape=(height, width, samples) if samples == 3 else (height, width),
            dtype=np.uint8,
            photometric="rgb" if samples == 3 else "minisblack",
            rowsperstrip=band_height,
            **options,
        )


def convert_stripwise(in_path: str, out_path: str, plan: Plan, max_pixels: int, quality: int):
    """Returns (encoder name); raises ConversionError subclasses."""
    from worker.encode import check_jpeg_size, encode_raw_tiff

    if plan.width * plan.height > max_pixels:
        raise ImageTooLargeError(
            f"image too large: {plan.width} x {plan.height} = "
            f"{plan.width * plan.height / 1e6:.1f} megapixels, the limit is "
            f"{max_pixels / 1e6:.1f} megapixels (WORKER_MAX_PIXELS)"
        )
    check_jpeg_size(plan.width, plan.height)
    out = Path(out_path)
    raw_path = out.with_name(out.name + ".raw.tif")
    try:
        write_raw_strips(in_path, plan, raw_path)
    except ConversionError:
        raw_path.unlink(missing_ok=True)
        raise
    except Exception as exc:
        raw_path.unlink(missing_ok=True)
        raise CorruptTiffError(f"truncated or corrupt TIFF: {exc}") from None
    return encode_raw_tiff(raw_path, out, quality, plan.dpi)
