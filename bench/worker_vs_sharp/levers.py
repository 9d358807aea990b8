"""python -m bench.worker_vs_sharp.levers: the encoder levers, measured on the 24 MP
scan (run the main benchmark first: it makes the input and sharp's JPEG).

Each variant encodes the same decoded pixels; printed: bytes / sharp's bytes, luma PSNR
minus sharp's, and the encoder's own time (decoding excluded, one run each).
"""

from __future__ import annotations

import io
import sys
import time

from bench.worker_vs_sharp.quality import luma_psnr, reference_8bit
from bench.worker_vs_sharp.runners import CACHE

WORK = CACHE / "worker_vs_sharp"


def main() -> int:
    import mozjpeg_lossless_optimization as mlo
    import pyvips
    from PIL import Image

    source = WORK / "inputs" / "rgb8-24mp.tif"
    sharp = WORK / "outputs" / "rgb8-24mp.sharp.jpg"
    if not source.exists() or not sharp.exists():
        print("run `python -m bench.worker_vs_sharp --only rgb8-24mp` first", file=sys.stderr)
        return 1
    reference = reference_8bit(source)
    sharp_bytes, sharp_psnr = sharp.stat().st_size, luma_psnr(reference, sharp)
    image = Image.open(source)
    image.load()
    vimage = pyvips.Image.new_from_memory(image.tobytes(), image.width, image.height, 3, "uchar")
    out = WORK / "outputs" / "lever.jpg"

    def pillow(**kw):
        def run():
            image.save(out, "JPEG", **kw)

        return run

    def pillow_then_mlo(**kw):
        def run():
            buf = io.BytesIO()
            image.save(buf, "JPEG", **kw)
            out.write_bytes(mlo.optimize(buf.getvalue()))

        return run

    def vips(**kw):
        def run():
            vimage.jpegsave(str(out), keep="none", subsample_mode="on", **kw)

        return run

    moz = dict(quant_table=3, optimize_coding=True)
    variants = [
        ("Pillow q95", pillow(quality=95)),
        ("Pillow q95 optimize progressive", pillow(quality=95, optimize=True, progressive=True)),
        ("Pillow q94 optimize progressive", pillow(quality=94, optimize=True, progressive=True)),
        ("Pillow q95 + mozjpeg-lossless-optimization", pillow_then_mlo(quality=95)),
        ("mozjpeg q95 table 3, no trellis", vips(Q=95, **moz)),
        ("mozjpeg q95 table 3, no trellis, progressive", vips(Q=95, interlace=True, **moz)),
        ("mozjpeg q95 trellis", vips(Q=95, trellis_quant=True, **moz)),
        ("mozjpeg q95 trellis progressive deringing (ours)",
         vips(Q=95, trellis_quant=True, interlace=True, overshoot_deringing=True, **moz)),
        ("mozjpeg q95 + optimize_scans (sharp's settings)",
         vips(Q=95, trellis_quant=True, interlace=True, overshoot_deringing=True,
              optimize_scans=True, **moz)),
        ("mozjpeg q95 streaming + lossless optimisation (ours, large images)",
         lambda: (vimage.jpegsave(str(out), Q=95, keep="none", subsample_mode="on",
                                  quant_table=3, optimize_coding=False),
                  out.write_bytes(mlo.optimize(out.read_bytes())))),
    ]  # fmt: skip
    print("| encoder variant (24 MP scan) | bytes / sharp | PSNR - sharp (dB) | encode s |")
    print("|---|---:|---:|---:|")
    for name, run in variants:
        started = time.perf_counter()
        run()
        seconds = time.perf_counter() - started
        size, psnr = out.stat().st_size, luma_psnr(reference, out)
        print(f"| {name} | {size / sharp_bytes:.3f} | {psnr - sharp_psnr:+.2f} | {seconds:.2f} |",
              flush=True)  # fmt: skip
    out.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
