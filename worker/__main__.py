"""Entry point. `python -m worker` runs one task of the contract (worker.task), or, with
WORKER_MODE=pool, pulls tasks from the orchestrator until there are none (worker.pool);
`python -m worker convert IN.tif OUT.jpg` converts a local file (no R2, no callback).
Heavy modules (boto3, Pillow, libvips) are imported only where a mode needs them."""

from __future__ import annotations

import os
import sys

USAGE = """usage:
  python -m worker                      run the task described by the environment
                                        (WORKER_MODE=pool: pull tasks until none is left)
  python -m worker convert IN.tif OUT.jpg   convert a local TIFF to JPEG
"""


def convert_command(args: list[str]) -> int:
    if len(args) != 2:
        sys.stderr.write(USAGE)
        return 2
    from worker.convert import convert_file
    from worker.exceptions import WorkerError
    from worker.settings import Limits

    in_path, out_path = args
    try:
        report = convert_file(in_path, out_path, Limits.from_env())
    except WorkerError as exc:
        print(f"{in_path}: {exc}", file=sys.stderr)
        return 1
    print(f"{in_path} -> {out_path}: {report.summary()}")
    return 0


def run_mode(mode: str) -> int:
    """Contract mode when WORKER_MODE is absent (the seed's environment), pool mode when
    it says so; any other value is a mistake worth a loud exit."""
    if mode == "pool":
        from worker.pool import run_pool_from_env

        return run_pool_from_env()
    if mode in ("", "contract"):
        from worker.task import run_from_env

        return run_from_env()
    print(f"[Worker] batch=- task=- unknown WORKER_MODE {mode!r} (pool or contract)", flush=True)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        return run_mode(os.environ.get("WORKER_MODE", "").strip().lower())
    if args[0] == "convert":
        return convert_command(args[1:])
    if args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    sys.stderr.write(USAGE)
    return 2


if __name__ == "__main__":
    sys.exit(main())
