"""python -m bench.worker_vs_sharp [--runs N] [--only NAME ...] [--with-250mp] [--machine-mb N]

Generates the inputs, installs sharp 0.33.5 from npm into bench/.cache/sharp, runs the
seed's conversion and ours (`python -m worker convert`) alternately, and prints per
image: median wall time, peak RSS, JPEG bytes, luma PSNR against the source, the ratios
ours/sharp, and for ours the encoder path it took and the machine memory it assumed.
Ours runs as on a machine that fits the image: the smallest Fly size whose memory budget
admits the full-quality encoder (`worker.encode.full_quality_memory`), unless
--machine-mb fixes one. Results also go to bench/.cache/worker_vs_sharp/results.json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys

from bench.worker_vs_sharp.inputs import make_inputs
from bench.worker_vs_sharp.quality import luma_psnr, reference_8bit
from bench.worker_vs_sharp.runners import (
    CACHE,
    ensure_sharp,
    measure,
    sharp_command,
    worker_command,
)

DEFAULT = ["rgb8-24mp", "rgb16-24mp", "grey8-24mp", "g4-page", "rgb8-100mp"]
WORK = CACHE / "worker_vs_sharp"
FLY_MEMORY_MB = (1024, 2048, 4096, 8192)  # the machine sizes the orchestrator may ask for
SUMMARY = re.compile(r"encoder (?P<path>.+?), memory budget (?P<budget>\d+) MB\)")


def machine_for(path) -> int:
    """The smallest Fly machine on which the worker takes its full-quality path."""
    import tifffile

    from worker.encode import full_quality_memory

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        mode = "L" if page.samplesperpixel == 1 else "RGB"
        need_mb = full_quality_memory(page.imagewidth, page.imagelength, mode) / 2**20
    return next((mb for mb in FLY_MEMORY_MB if mb >= need_mb), FLY_MEMORY_MB[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_vs_sharp")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and image")
    parser.add_argument("--only", nargs="*", help=f"images to run, of {DEFAULT + ['rgb8-250mp']}")
    parser.add_argument("--with-250mp", action="store_true", help="add the 250 MP stretch case")
    parser.add_argument("--machine-mb", type=int, help="run ours as on a machine of this memory")
    args = parser.parse_args(argv)

    names = list(args.only or DEFAULT)
    if args.with_250mp and "rgb8-250mp" not in names:
        names.append("rgb8-250mp")
    print("generating inputs (cached) ...", flush=True)
    inputs = make_inputs(WORK / "inputs", set(names))
    module = ensure_sharp()
    out_dir = WORK / "outputs"
    out_dir.mkdir(parents=True, exist_ok=True)

    results = []
    for item in inputs:
        machine_mb = args.machine_mb or machine_for(item.path)
        runs_for = {"ours": [], "sharp": []}
        outputs = {
            "ours": out_dir / f"{item.name}.ours.jpg",
            "sharp": out_dir / f"{item.name}.sharp.jpg",
        }
        for i in range(args.runs):
            for tool in ("ours", "sharp"):
                dst = outputs[tool]
                dst.unlink(missing_ok=True)
                if tool == "ours":
                    command, env = worker_command(item.path, dst, machine_mb)
                else:
                    command, env = sharp_command(module, item.path, dst)
                run = measure(command, env)
                runs_for[tool].append(run)
                state = "ok" if run.ok else f"FAILED: {run.error}"
                print(f"  {item.name} {tool} run {i + 1}: {run.seconds:.2f} s, "
                      f"{run.peak_rss_mb:.0f} MB {state}", flush=True)  # fmt: skip
        reference = reference_8bit(item.path)
        row = {"image": item.name, "description": item.description, "machine_mb": machine_mb,
               **_path_of(runs_for["ours"])}  # fmt: skip
        for tool in ("ours", "sharp"):
            ok = [r for r in runs_for[tool] if r.ok]
            row[tool] = {
                "ok_runs": len(ok),
                "error": next((r.error for r in runs_for[tool] if not r.ok), ""),
                "seconds": statistics.median(r.seconds for r in ok) if ok else None,
                "peak_rss_mb": max(r.peak_rss_mb for r in ok) if ok else None,
                "bytes": outputs[tool].stat().st_size if ok and outputs[tool].exists() else None,
                "psnr": luma_psnr(reference, outputs[tool])
                if ok and outputs[tool].exists()
                else None,
            }
        del reference
        results.append(row)

    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print(table(results))
    return 0


def _path_of(runs) -> dict:
    """The encoder path and memory budget our summary line reports."""
    for run in runs:
        match = SUMMARY.search(run.stdout)
        if match:
            return {"encoder_path": match["path"], "budget_mb": int(match["budget"])}
    return {"encoder_path": "-", "budget_mb": None}


def _ratio(a, b) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def _num(value, fmt: str) -> str:
    return format(value, fmt) if value is not None else "fail"


def table(results: list[dict]) -> str:
    lines = [
        "| image | tool | median s | peak RSS MB | bytes | luma PSNR dB | encoder path (ours) | machine MB / budget MB |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for row in results:
        for tool in ("sharp", "ours"):
            r = row[tool]
            lines.append(
                f"| {row['image']} | {tool} | {_num(r['seconds'], '.2f')} | "
                f"{_num(r['peak_rss_mb'], '.0f')} | {_num(r['bytes'], ',')} | "
                f"{_num(r['psnr'], '.2f')} | "
                + (f"{row['encoder_path']} | {row['machine_mb']} / {_num(row['budget_mb'], 'd')} |"
                   if tool == "ours" else "| |")
            )
        o, s = row["ours"], row["sharp"]
        dpsnr = (
            f"{o['psnr'] - s['psnr']:+.2f}"
            if o["psnr"] is not None and s["psnr"] is not None
            else "-"
        )
        lines.append(
            f"| {row['image']} | **ours/sharp** | {_ratio(o['seconds'], s['seconds'])} | "
            f"{_ratio(o['peak_rss_mb'], s['peak_rss_mb'])} | {_ratio(o['bytes'], s['bytes'])} | "
            f"{dpsnr} | | |"
        )
    failures = [f"{row['image']} {tool}: {row[tool]['error']}" for row in results
                for tool in ("sharp", "ours") if row[tool]["error"]]  # fmt: skip
    if failures:
        lines.append("")
        lines.extend(f"failed: {f}" for f in failures)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
