"""tools/ is a package grouped by role that uses dinotrack's public names only, and neither the
tools nor the tests edit the module path or load a file as a module."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = sorted((REPO / "tools").rglob("*.py"))


def test_every_tool_folder_is_a_package():
    folders = {p.parent for p in TOOLS}
    assert {f.name for f in folders} >= {"tools", "bench", "data", "runs", "docs"}
    assert not [f for f in folders if not (f / "__init__.py").is_file()]
    assert [p.name for p in (REPO / "tools").glob("*.py")] == ["__init__.py"]


def test_tools_import_only_public_names_of_dinotrack():
    private = []
    for path in TOOLS:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dinotrack"):
                names = [*node.module.split("."), *(alias.name for alias in node.names)]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names if a.name.startswith("dinotrack")]
                names = [name for module in modules for name in module.split(".")]
            else:
                continue
            if any(name.startswith("_") for name in names):
                private.append(f"{path.relative_to(REPO)}: {ast.unparse(node)}")
    assert not private


def test_no_module_path_edits_or_file_loading():
    offenders = []
    for path in [*TOOLS, *sorted((REPO / "tests").glob("*.py"))]:
        text = path.read_text()
        for needle in ("sys.path.insert", "sys.path.append", "spec_from_file_location"):
            if needle in text and path.name != Path(__file__).name:
                offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert not offenders
