"""tools/mutation.py's bookkeeping: the killer of a mutant is tried first, and its files
lead the whole run; a killer no longer named by the command is not used."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import mutation  # noqa: E402

COMMAND = ["python", "-m", "pytest", "-x", "-q", "tests/orchestrator/a.py", "tests/orchestrator/b.py",
           "tests/orchestrator/c.py"]


def test_the_killers_files_lead_and_the_order_is_otherwise_kept():
    moved = mutation.killers_first(COMMAND, {"tests/orchestrator/c.py"})
    assert moved == ["python", "-m", "pytest", "-x", "-q", "tests/orchestrator/c.py", "tests/orchestrator/a.py",
                     "tests/orchestrator/b.py"]
    assert mutation.killers_first(COMMAND, {"tests/other.py"}) == COMMAND


def test_a_failure_is_named_by_the_path_the_command_uses():
    assert mutation.test_id(COMMAND, "b.py::test_x[1]") == "tests/orchestrator/b.py::test_x[1]"
    assert mutation.test_id(COMMAND, "gone.py::test_x") == ""


def test_the_quick_run_is_the_one_killer_under_the_same_interpreter():
    quick = mutation.quick_command(COMMAND, "tests/orchestrator/b.py::test_x")
    assert quick == ["python", "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "tests/orchestrator/b.py::test_x"]
    assert mutation.quick_command(COMMAND, "") is None
    assert mutation.quick_command(["make", "check"], "tests/b.py::t") is None


def test_killers_round_trip_and_a_broken_file_is_no_killers(tmp_path):
    path = tmp_path / "killers.json"
    mutation.save_killers({"b": "t2", "a": "t1"}, path)
    assert mutation.load_killers(path) == {"a": "t1", "b": "t2"}
    path.write_text("{not json")
    assert mutation.load_killers(path) == {}
