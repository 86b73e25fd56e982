"""The tool commands and paths that the docs give exist: `python -m tools.x.y` names a module
of tools/, and every `tools/...` path is a file."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "tools" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def mentions(pattern: str) -> list[tuple[str, str]]:
    found = set()
    for doc in DOCS:
        for match in re.findall(pattern, doc.read_text()):
            found.add((doc.relative_to(REPO).as_posix(), match))
    return sorted(found)


def test_the_docs_name_tools():
    assert len(mentions(r"python3? -m (tools(?:\.\w+)+)")) >= 20


@pytest.mark.parametrize(("doc", "module"), mentions(r"python3? -m (tools(?:\.\w+)+)"))
def test_tool_command_names_a_module(doc, module):
    assert importlib.util.find_spec(module) is not None, f"{doc}: no module {module}"


@pytest.mark.parametrize(("doc", "path"), mentions(r"\btools/[\w/]+\.(?:py|sh)\b"))
def test_tool_path_exists(doc, path):
    assert (REPO / path).is_file(), f"{doc}: {path} does not exist"
