"""python -m bench.worker_vs_sharp.candidates: the faster encoders, side by side with
sharp on the 24 MP scan (run the main benchmark first: it makes the input and sharp's JPEG).

Each candidate encodes the same decoded pixels; printed per candidate: the encoder's
own time (median of --runs, decoding excluded) and its ratio to mozjpeg as the worker
runs it now, bytes / sharp's bytes, luma PSNR minus sharp's, and SSIMULACRA2 (a
perceptual score, higher is better; on a 1024 x 1024 crop of the scan's middle,
computed by the `ssimulacra2` package) minus sharp's. jpegli (pyjpegli, whose only
setting is the quality) at the qualities around sharp's PSNR and SSIMULACRA2 (q94 is
the first at or above both; q93 below both).

Restart markers would let strips be entropy-coded apart, but only in one sequential
(baseline) scan with one set of Huffman tables: the "baseline, standard Huffman tables"
row is the best such a file can be.

"2 strips in parallel" encodes the top and bottom halves (cut on a 16-row MCU
boundary) with our mozjpeg settings on two threads at once (libvips releases the GIL):
its time is a lower bound of strip-parallel encoding, since one JPEG would still need
the halves' coefficients merged and entropy-coded again (timed separately as the
lossless re-optimisation of the whole JPEG, mozjpeg-lossless-optimization).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.worker_vs_sharp.quality import luma_psnr, reference_8bit
from bench.worker_vs_sharp.runners import CACHE

WORK = CACHE / "worker_vs_sharp"
CROP = 1024
OURS = dict(subsample_mode="on", quant_table=3, trellis_quant=True, overshoot_deringing=True,
            interlace=True, optimize_coding=True)  # fmt: skip


def ssimulacra2_score(reference: np.ndarray, jpeg: Path) -> float:
    """SSIMULACRA2 of the JPEG's middle crop against the source's."""
    from PIL import Image
    from ssimulacra2 import compute_ssimulacra2

    Image.MAX_IMAGE_PIXELS = None
    h, w = reference.shape[:2]
    box = (w // 2 - CROP // 2, h // 2 - CROP // 2, w // 2 + CROP // 2, h // 2 + CROP // 2)
    with tempfile.TemporaryDirectory() as tmp, Image.open(jpeg) as im:
        a, b = Path(tmp) / "a.png", Path(tmp) / "b.png"
        Image.fromarray(reference).crop(box).save(a)
        im.convert("RGB").crop(box).save(b)
        return float(compute_ssimulacra2(str(a), str(b)))


def timed(run, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def candidates(pixels: np.ndarray, out: Path):
    """(name, run) pairs; each run writes `out` (or the strips beside it)."""
    import pyjpegli
    import pyvips

    h, w = pixels.shape[:2]
    vimage = pyvips.Image.new_from_memory(pixels.tobytes(), w, h, 3, "uchar")

    def vips(**kw):
        return lambda: vimage.jpegsave(str(out), Q=95, keep="none", **kw)

    def jpegli(quality: int):
        return lambda: out.write_bytes(pyjpegli.encode(pixels, w, h, quality=quality))

    cut = (h // 2) // 16 * 16
    halves = [vimage.crop(0, 0, w, cut), vimage.crop(0, cut, w, h - cut)]
    strip_paths = [out.with_name(f"strip{i}.jpg") for i in range(2)]

    def two_strips():
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda i: halves[i].jpegsave(str(strip_paths[i]), Q=95, keep="none", **OURS),
                          range(2)))  # fmt: skip

    yield "mozjpeg trellis progressive deringing (ours now)", vips(**OURS), None
    yield "mozjpeg trellis, baseline (no progressive)", vips(**{**OURS, "interlace": False}), None
    yield ("mozjpeg trellis, baseline, standard Huffman tables (what restart-marker strips allow)",
           vips(**{**OURS, "interlace": False, "optimize_coding": False}), None)
    yield "mozjpeg trellis progressive, no deringing", vips(**{**OURS, "overshoot_deringing": False}), None
    yield "mozjpeg no trellis progressive", vips(**{**OURS, "trellis_quant": False}), None
    yield "mozjpeg 2 strips in parallel (pieces only, no merge)", two_strips, strip_paths
    for quality in (93, 94, 95):
        yield f"jpegli q{quality} (pyjpegli)", jpegli(quality), None


def lossless_seconds(path: Path, runs: int) -> float:
    import mozjpeg_lossless_optimization as mlo

    data = path.read_bytes()
    return timed(lambda: mlo.optimize(data), runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_vs_sharp.candidates")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    source = WORK / "inputs" / "rgb8-24mp.tif"
    sharp = WORK / "outputs" / "rgb8-24mp.sharp.jpg"
    if not source.exists() or not sharp.exists():
        print("run `python -m bench.worker_vs_sharp --only rgb8-24mp` first", file=sys.stderr)
        return 1
    reference = reference_8bit(source)
    sharp_bytes, sharp_psnr = sharp.stat().st_size, luma_psnr(reference, sharp)
    sharp_ss2 = ssimulacra2_score(reference, sharp)
    print(f"sharp: {sharp_bytes:,} bytes, luma PSNR {sharp_psnr:.2f} dB, SSIMULACRA2 {sharp_ss2:.2f}")
    print("| candidate (24 MP scan) | encode s | / ours now | bytes / sharp | PSNR - sharp (dB) | SSIMULACRA2 - sharp |")
    print("|---|---:|---:|---:|---:|---:|")
    out = WORK / "outputs" / "candidate.jpg"
    ours_seconds = None
    for name, run, pieces in candidates(reference, out):
        seconds = timed(run, args.runs)
        ours_seconds = ours_seconds or seconds
        if pieces:
            size = sum(p.stat().st_size for p in pieces)
            row = f"| {name} | {seconds:.2f} | {seconds / ours_seconds:.2f} | {size / sharp_bytes:.3f} | | |"
            for p in pieces:
                p.unlink(missing_ok=True)
        else:
            size, psnr = out.stat().st_size, luma_psnr(reference, out)
            ss2 = ssimulacra2_score(reference, out)
            row = (f"| {name} | {seconds:.2f} | {seconds / ours_seconds:.2f} | {size / sharp_bytes:.3f} "
                   f"| {psnr - sharp_psnr:+.2f} | {ss2 - sharp_ss2:+.2f} |")  # fmt: skip
        print(row, flush=True)
    vips_out = WORK / "outputs" / "rgb8-24mp.ours.jpg"
    if vips_out.exists():
        seconds = lossless_seconds(vips_out, args.runs)
        print(f"| lossless re-optimisation of a whole 24 MP JPEG (the strips' merge would need it) "
              f"| {seconds:.2f} | {seconds / ours_seconds:.2f} | | | |")  # fmt: skip
    out.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
