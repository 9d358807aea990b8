"""The docs a clone has: every relative link in README.md and docs/ resolves inside the
repo (nothing points at ../shared, which only exists beside the steering repo), and every
`arke-preprocess ...` command the docs show is one the CLI accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from arke_local.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```(?:sh|bash|console)?\n(.*?)```", re.S)
COMMAND = re.compile(r"(?:^|[\s(])arke-preprocess((?: +[^\s#;|)`]+)+)")


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(path.read_text()) if not re.match(r"[a-z]+:|#", t)]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve_inside_the_repo(path):
    for target in relative_links(path):
        resolved = (path.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{path.name}: {target} leaves the repo"
        assert resolved.exists(), f"{path.name}: {target} does not exist"
    assert "../shared" not in path.read_text(), path.name


def doc_commands() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for block in FENCE.findall(path.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                code = re.split(r"\s#\s", line, maxsplit=1)[0]  # not what a comment says
                for match in COMMAND.finditer(code):
                    found.append((path.name, match.group(1).strip()))
    return found


def test_the_docs_show_commands():
    assert len(doc_commands()) >= 15


@pytest.mark.parametrize(("doc", "command"), doc_commands())
def test_every_documented_command_parses(doc, command):
    words = [re.sub(r"\$\{?\w+\}?|<[^>]+>", "X", w) for w in shlex.split(command.replace('"', ""))]
    try:
        build_parser().parse_args(words)
    except SystemExit as exc:
        pytest.fail(f"{doc}: `arke-preprocess {command}` is refused by the CLI ({exc.code})")
