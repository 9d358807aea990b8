"""Mutation run of the orchestrator's guards (`make mutation`; not part of `make test` or CI).

Each mutation in tools/mutations.toml swaps one exact snippet of a source file for a broken
version of it (a condition dropped, a comparison flipped). For each one this writes the
mutant over the file, runs the fast orchestrator tests, and restores the file: a mutant the
tests fail on is killed, one they pass is a guard no test watches. A snippet that is not
in its file exactly once is a stale mutation (the code moved on): an error to fix in the
data file, never counted as a kill.

Each mutant is tried first on the test that killed it last time (tools/mutation-killers.json,
rewritten after every run) and on the whole command only when that test passes: a test of
the suite that fails on the mutant is a kill of the suite, so the score is the same, and a
run takes minutes instead of hours. The whole command runs the killers' files of mutants of
the same source file first.

The original bytes and mtime always come back (finally, SIGINT/SIGTERM, and a backup
under .mutation-backup/ that the next run restores if this process was killed outright).
Children run with PYTHONDONTWRITEBYTECODE so no mutant is left in a __pycache__.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tools" / "mutations.toml"
BACKUP = ROOT / ".mutation-backup"
KILLERS = ROOT / "tools" / "mutation-killers.json"
GUARD_TESTS = "tests/orchestrator/test_orch_guards*.py"  # run first: they kill fastest
ORCHESTRATOR_TESTS = "tests/orchestrator/test_*.py"
TIMEOUT_S = 300


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    find: str
    replace: str
    note: str = ""


@dataclass
class Result:
    mutation: Mutation
    outcome: str  # killed | survived | timeout | stale | error
    seconds: float = 0.0
    detail: str = ""


class Stop(Exception):
    """SIGTERM/SIGHUP, turned into an exception so the finally that restores the file runs."""


def load(path: Path) -> list[Mutation]:
    """The data file's [[mutation]] tables; a malformed entry stops the run at once."""
    raw = tomllib.loads(path.read_text())
    mutations, seen = [], set()
    for i, entry in enumerate(raw.get("mutation", []), 1):
        missing = {"name", "file", "find", "replace"} - set(entry)
        if missing:
            raise SystemExit(f"{path}: mutation #{i} lacks {', '.join(sorted(missing))}")
        if entry["name"] in seen:
            raise SystemExit(f"{path}: two mutations are named {entry['name']!r}")
        if entry["find"] == entry["replace"]:
            raise SystemExit(f"{path}: mutation {entry['name']!r} replaces its snippet with itself")
        seen.add(entry["name"])
        mutations.append(Mutation(entry["name"], entry["file"], entry["find"], entry["replace"],
                                  entry.get("note", "")))
    return mutations


def default_command() -> list[str]:
    """pytest -x on every file of tests/orchestrator, the guard tests first (named one by
    one: given a folder, pytest would run them in its own order)."""
    guards = sorted(glob.glob(str(ROOT / GUARD_TESTS)))
    rest = sorted(set(glob.glob(str(ROOT / ORCHESTRATOR_TESTS))) - set(guards))
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
            *(os.path.relpath(f, ROOT) for f in guards + rest)]


def recover_backups() -> None:
    """A run killed with SIGKILL leaves its backup behind: put those files back first."""
    if not BACKUP.exists():
        return
    for saved in BACKUP.rglob("*"):
        if saved.is_file():
            target = ROOT / saved.relative_to(BACKUP)
            target.write_bytes(saved.read_bytes())
            print(f"restored {target.relative_to(ROOT)} from a previous run's backup", file=sys.stderr)
            saved.unlink()
    for folder in sorted(BACKUP.rglob("*"), reverse=True):
        folder.rmdir()
    BACKUP.rmdir()


@contextlib.contextmanager
def mutated(path: Path, text: str) -> Iterator[None]:
    """`text` in place of the file while the block runs; the original bytes and mtime after."""
    original, stat = path.read_bytes(), path.stat()
    saved = BACKUP / path.relative_to(ROOT)
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_bytes(original)
    try:
        path.write_text(text)
        # a later mtime than the original's, so a cached .pyc of the original never stands in
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
        yield
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        saved.unlink()
        for folder in (*saved.parents,):
            if folder == BACKUP.parent:
                break
            with contextlib.suppress(OSError):  # not empty: another file's backup is in it
                folder.rmdir()


def run_tests(command: list[str], timeout: float) -> tuple[int | None, str]:
    """The test command in its own process group (killed whole on timeout or Ctrl-C)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise


def first_failure(output: str) -> str:
    """The first `FAILED test::name` of pytest's short summary (-ra), without its message."""
    for line in output.splitlines():
        match = re.match(r"(FAILED|ERROR) (\S+)", line)
        if match:
            return match.group(2).split("/")[-1]
    return ""


def load_killers(path: Path = KILLERS) -> dict[str, str]:
    """Mutation name -> the test id (`tests/...py::name`) that killed it last."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save_killers(killers: dict[str, str], path: Path = KILLERS) -> None:
    path.write_text(json.dumps(dict(sorted(killers.items())), indent=1) + "\n")


def test_id(command: list[str], failure: str) -> str:
    """`file.py::name` (first_failure's form) as the path the command names it by."""
    file, _, name = failure.partition("::")
    for arg in command:
        if arg.endswith(".py") and os.path.basename(arg) == file:
            return f"{arg}::{name}"
    return ""


def killers_first(command: list[str], files: set[str]) -> list[str]:
    """The command with the test files in `files` moved to the front (order otherwise kept)."""
    first = [a for a in command if a in files]
    if not first:
        return command
    head = [a for a in command if not a.endswith(".py") or a.startswith("-")]
    rest = [a for a in command if a.endswith(".py") and not a.startswith("-") and a not in files]
    return head + first + rest


def quick_command(command: list[str], killer: str) -> list[str] | None:
    """pytest on the one test that killed this mutant before, with the command's interpreter."""
    if not killer or "pytest" not in command:
        return None
    at = command.index("pytest")
    return [*command[: at + 1], "-x", "-q", "-p", "no:cacheprovider", killer]


def try_mutation(m: Mutation, command: list[str], timeout: float, killer: str = "") -> Result:
    path = ROOT / m.file
    if not path.is_file():
        return Result(m, "stale", detail=f"{m.file} does not exist")
    source = path.read_text()
    count = source.count(m.find)
    if count != 1:
        return Result(m, "stale", detail=f"snippet found {count} times in {m.file} (must be exactly once)")
    text = source.replace(m.find, m.replace)
    try:
        compile(text, str(path), "exec")
    except SyntaxError as exc:
        return Result(m, "error", detail=f"mutant does not compile: {exc}")
    start = time.monotonic()
    with mutated(path, text):
        quick = quick_command(command, killer)
        if quick is not None:
            code, _ = run_tests(quick, timeout)
            if code == 1:
                return Result(m, "killed", time.monotonic() - start, killer.split("/")[-1])
        code, output = run_tests(command, timeout)
    seconds = time.monotonic() - start
    if code is None:
        return Result(m, "timeout", seconds, f"no result within {timeout:g} s")
    if code == 0:
        return Result(m, "survived", seconds)
    if code == 1:
        return Result(m, "killed", seconds, first_failure(output))
    tail = " | ".join(output.strip().splitlines()[-3:])
    return Result(m, "error", seconds, f"test command exited {code}: {tail}"[:300])


def print_table(results: list[Result]) -> None:
    width = max((len(r.mutation.name) for r in results), default=4)
    print(f"\n{'mutation':<{width}}  {'file':<24} {'result':<9} {'s':>6}  detail")
    for r in results:
        print(f"{r.mutation.name:<{width}}  {r.mutation.file:<24} {r.outcome:<9} {r.seconds:6.1f}  {r.detail}")


def summarize(results: list[Result], seconds: float) -> int:
    """Print the score; the exit status is 1 when a mutation is stale or broke the run."""
    applied = [r for r in results if r.outcome != "stale"]
    killed = [r for r in applied if r.outcome in ("killed", "timeout")]
    print_table(results)
    print(f"\nscore: {len(killed)} killed / {len(applied)} applied"
          + (f" = {100 * len(killed) / len(applied):.0f}%" if applied else "")
          + f"  (total {seconds:.0f} s)")
    survivors = [r.mutation.name for r in results if r.outcome == "survived"]
    if survivors:
        print("survived: " + ", ".join(survivors))
    broken = [r for r in results if r.outcome in ("stale", "error")]
    for r in broken:
        label = "STALE MUTATION" if r.outcome == "stale" else "MUTATION ERROR"
        print(f"{label} {r.mutation.name} ({r.mutation.file}): {r.detail}; "
              f"fix its 'find' in {DATA.relative_to(ROOT)}", file=sys.stderr)
    return 1 if broken else 0


def _raise_stop(signum: int, _frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutation (repeatable)")
    parser.add_argument("--command", help="test command (default: pytest -x -q on tests/orchestrator, "
                                          "the guard tests first)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per mutant")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--list", action="store_true", help="list the mutations and whether each applies")
    parser.add_argument("--data", type=Path, default=DATA, help="the mutations file")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    recover_backups()
    mutations = load(args.data)
    if args.only:
        unknown = set(args.only) - {m.name for m in mutations}
        if unknown:
            raise SystemExit(f"no mutation named {', '.join(sorted(unknown))} in {args.data}")
        mutations = [m for m in mutations if m.name in args.only]
    if args.list:
        for m in mutations:
            count = (ROOT / m.file).read_text().count(m.find) if (ROOT / m.file).is_file() else 0
            print(f"{m.name:<36} {m.file:<24} {'ok' if count == 1 else f'STALE ({count} matches)'}")
        return 0
    command = shlex.split(args.command) if args.command else default_command()
    by_file: dict[str, set[str]] = {}
    for m in load(args.data):
        by_file.setdefault(m.file, set()).add(m.name)
    print("test command: " + " ".join(command))
    start = time.monotonic()
    if not args.no_baseline:
        code, output = run_tests(command, args.timeout)
        if code != 0:
            print(output[-3000:])
            raise SystemExit("the unmutated code fails its tests: no mutation score means anything")
        print(f"baseline: tests pass ({time.monotonic() - start:.0f} s)")
    results, killers = [], load_killers()
    try:
        for m in mutations:
            files = {v.split("::")[0] for k, v in killers.items() if k in by_file.get(m.file, ())}
            result = try_mutation(m, killers_first(command, files), args.timeout, killers.get(m.name, ""))
            print(f"  {m.name}: {result.outcome} ({result.seconds:.0f} s) {result.detail}", flush=True)
            results.append(result)
            if result.outcome == "killed":
                killers[m.name] = test_id(command, result.detail) or killers.get(m.name, "")
    except (KeyboardInterrupt, Stop) as exc:
        print(f"\ninterrupted ({type(exc).__name__} {exc}); every file is restored", file=sys.stderr)
        summarize(results, time.monotonic() - start)
        return 130
    finally:
        save_killers({k: v for k, v in killers.items() if v})
    return summarize(results, time.monotonic() - start)


if __name__ == "__main__":
    sys.exit(main())
