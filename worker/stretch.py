"""How samples that are not plain display values (floats outside 0..1, signed, 32/64-bit
integers: scientific rasters, DEMs) become 8-bit grey levels. Pure numpy; no decoder.

The rule (docs/worker.md):
1. The valid samples are the finite ones that are not the file's no-data value
   (GDAL_NODATA, tag 42113).
2. A sentinel is taken for no-data too: the minimum or maximum value when it lies more
   than ten times the rest's robust range away from the rest (a 9999 border around
   elevations 0..480, a -3.4e38 fill).
3. The stretch runs from the 0.5th to the 99.5th percentile of the valid samples (one
   range for all colour samples of a pixel, so colours keep their balance), clipped.
4. No-data pixels show white (what a GIS viewer shows on a white page: nothing).
"""

from __future__ import annotations

import numpy as np

LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5
SENTINEL_GAP = 10.0  # a sentinel sits this many robust ranges away from the rest
SAMPLE_LIMIT = 4_000_000  # percentiles from at most this many samples (a strided pick)


def parse_nodata(text: object) -> float | None:
    """GDAL_NODATA is ASCII ("-999999", "nan", "-3.4028234663852886e+38")."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    try:
        value = float(str(text).strip().strip("\0"))
    except (TypeError, ValueError):
        return None
    return value


def valid_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """True where a sample counts: finite and not the no-data value."""
    mask = np.isfinite(data) if data.dtype.kind == "f" else np.ones(data.shape, bool)
    if nodata is not None and not np.isnan(nodata) and _representable(data, nodata):
        mask &= data != np.asarray(nodata).astype(data.dtype)
    return mask


def _representable(data: np.ndarray, value: float) -> bool:
    if data.dtype.kind == "f":
        return True
    info = np.iinfo(data.dtype)
    return info.min <= value <= info.max and float(value).is_integer()


def _sample(values: np.ndarray) -> np.ndarray:
    step = max(1, values.size // SAMPLE_LIMIT)
    return values[::step].astype(np.float64)


def _drop_sentinels(values: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Remove an extreme value that sits far from everything else (see module rule 2)."""
    dropped: list[float] = []
    for pick in (np.max, np.min):
        if values.size < 2:
            break
        extreme = float(pick(values))
        rest = values[values != extreme]
        if rest.size == 0:
            break
        lo, hi = np.percentile(rest, [LOW_PERCENTILE, HIGH_PERCENTILE])
        nearest = float(rest.max() if pick is np.max else rest.min())
        if abs(extreme - nearest) > SENTINEL_GAP * max(float(hi - lo), 1e-12):
            values, dropped = rest, [*dropped, extreme]
    return values, dropped


def stretch_range(data: np.ndarray, nodata: float | None) -> tuple[float, float, list[float]]:
    """(low, high, sentinels) of the stretch for `data` by the module's rule."""
    values = _sample(data[valid_mask(data, nodata)])
    if values.size == 0:
        return 0.0, 0.0, []
    values, sentinels = _drop_sentinels(values)
    lo, hi = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
    return float(lo), float(hi), sentinels


def stretch(data: np.ndarray, nodata: float | None, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 samples and a per-sample mask of what is no-data (to be shown white)."""
    lo, hi, sentinels = stretch_range(data, nodata)
    invalid = ~valid_mask(data, nodata)
    for value in sentinels:
        invalid |= data == value
    out = np.zeros(data.shape, np.uint8)
    if hi > lo:
        scale = 255.0 / (hi - lo)
        step = max(1, (8 << 20) // max(1, data[0].size))
        for y in range(0, data.shape[0], step):
            block = np.nan_to_num(data[y : y + step].astype(np.float64), nan=lo, posinf=hi, neginf=lo)
            block = (block - lo) * scale + 0.5
            np.clip(block, 0, 255, out=block)
            out[y : y + step] = block.astype(np.uint8)
    described = f"stretched {lo:g}..{hi:g} (0.5-99.5 percentiles of the valid samples)"
    if nodata is not None:
        described += f", no-data {nodata:g}"
    if sentinels:
        described += ", sentinel " + ", ".join(f"{v:g}" for v in sentinels) + " as no-data"
    notes.append(described)
    return out, invalid
