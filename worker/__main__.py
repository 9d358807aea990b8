"""Entry point. `python -m worker` runs one task of the contract (worker.task);
`python -m worker convert IN.tif OUT.jpg` converts a local file (no R2, no callback).
Heavy modules (boto3, Pillow, libvips) are imported only where a mode needs them."""

from __future__ import annotations

import sys

USAGE = """usage:
  python -m worker                      run the task described by the environment
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        from worker.task import run_from_env

        return run_from_env()
    if args[0] == "convert":
        return convert_command(args[1:])
    if args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    sys.stderr.write(USAGE)
    return 2


if __name__ == "__main__":
    sys.exit(main())
