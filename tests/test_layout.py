"""The module layout: the modules of dinotrack/ import each other without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import dinotrack

PACKAGE = Path(dinotrack.__file__).parent


def import_graph() -> dict[str, set[str]]:
    """Module name -> the dinotrack modules it imports (at any level, lazy imports included)."""
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "dinotrack":
                found |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dinotrack."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found |= {
                    a.name.split(".")[1] for a in node.names if a.name.startswith("dinotrack.")
                }
        graph[path.stem] = found - {path.stem, "__init__"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a path of module names, or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return None
        for target in sorted(graph.get(name, ())):
            if cycle := visit(target, path + [name]):
                return cycle
        done.add(name)
        return None

    for name in sorted(graph):
        if cycle := visit(name, []):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_inside_dinotrack():
    graph = import_graph()
    assert {"video_io", "decoders", "overlay", "autostart", "masks"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
